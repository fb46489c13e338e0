"""The population trainer: K torch models, each on its own subset and seed, trained together.

:class:`TorchLearner` trains a block of K trials as a *population*: the K models'
weights are stacked along a leading model axis and every step is one batched
computation (``torch.bmm`` for the built-in ``linear``/``mlp``, ``torch.func.vmap``
over ``functional_call`` for ``cnn``, ``resnet`` and user modules). Each model
gathers its *own* minibatch from its own subset in its own order (nothing is
masked out of a shared batch), so a model trained in a population is the same
model (up to float rounding) as the same seed trained alone.

What a model depends on
-----------------------
Model k depends only on its mask row, ``seeds[k]`` and the hyperparameters in
:meth:`TorchLearner.spec`. Its seed feeds three independent streams: weight
initialisation, minibatch order and augmentation. Models with larger subsets take
more steps per epoch (ceil(m_k / batch_size)); in a group, a model that has
finished its own schedule keeps learning rate 0, which leaves it unchanged.
Every epoch visits the model's subset in a fresh random order; the last batch of
an epoch is filled up by wrapping round to the start of that epoch's order.

Inputs
------
For ``linear``/``mlp`` on large sets (float32 copy over ``DENSE_INPUT_BYTES``,
128 MiB: e.g. Fashion-MNIST's 60,000 images) the rows stay in their stored dtype
(uint8 images stay uint8) and are scaled as each minibatch or evaluation batch is
gathered (:class:`ScaledRows`); smaller sets, and other models, get float tensors
converted once per call.
Integer (and bool) inputs are divided by
``data.meta.get("pixel_max", 255)`` to lie in [0, 1], then standardised with the
mean and standard deviation of the *full training set's inputs* (x_train of the
Dataset, all n examples, whatever the masks say; labels are never used). Images
get one mean/std per channel; non-image feature vectors one per feature (features
constant on the train set are only centred). The same statistics are applied to
the test set. ``linear``/``mlp`` see flattened rows; ``cnn``/``resnet`` see NCHW
images built from ``data.image_shape``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner, Predictions
from tailscope.learners.torch_models import MODELS, ModelError, build_model, check_no_running_stats
from tailscope.store import warn_once

__all__ = ["TorchLearner", "ModelError", "ScaledRows", "prepare_inputs", "prepare_rows"]

SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")

# Compiled step functions, shared by all learners in this process (never pickled).
# Values are callables, or None where compiling failed (then the eager step is used).
_COMPILED: dict[tuple, Callable | None] = {}

_MISSING = object()
# a step that runs out of memory is never taken for a compile failure (see _Population._get_step)
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# Parameters per group that fit the CPU well (measured: 16 models of 784-512-10).
_CPU_GROUP_PARAMS = 6_600_000
# linear/mlp inputs up to this size (as float32) are standardised once up front; larger
# sets stay in their stored dtype (uint8) and are scaled batch by batch (ScaledRows).
DENSE_INPUT_BYTES = 128 << 20
_CPU_MAX_GROUP = 64  # digits' 64-128-10, eager: 64 >= 100 > 32 > 16 models/s; compiled: up to 4x this
_GPU_GROUP_PARAMS = 400_000_000


class TorchLearner(Learner):
    """Train a population of K torch models, one per trial, in one vectorized pass.

    Parameters
    ----------
    model : {"linear", "mlp", "cnn", "resnet"} or callable
        A built-in architecture (see :mod:`tailscope.learners.torch_models`) or a
        picklable zero-argument callable returning an ``nn.Module`` (a module-level
        function or ``functools.partial``). A user module receives flattened rows
        ``(B, D)`` for non-image data and NCHW images for image data; it must not
        use BatchNorm (running statistics cannot be kept per model, and batch
        statistics make a prediction depend on its evaluation batch): use GroupNorm
        or LayerNorm.
    widths : sequence of int, optional
        Hidden widths (``mlp``: default (128,)), channel widths (``cnn``: (32, 64);
        ``resnet``: (32, 64, 128)). Ignored by ``linear`` and callables.
    epochs, batch_size : int
        Passes over each model's own subset, and examples per step.
    lr, momentum, weight_decay, nesterov :
        SGD with momentum (PyTorch's formulation; weight decay on all parameters).
        ``lr`` is the peak learning rate.
    schedule : {"onecycle", "cosine", "constant"}
        ``onecycle``: linear warmup over ``warmup`` of the steps, then linear decay
        towards 0; ``cosine``: the same warmup then cosine decay; ``constant``.
    warmup : float
        Fraction of each model's steps spent warming up.
    label_smoothing : float
        Cross-entropy label smoothing.
    augment : bool
        Images only: per-model, per-example random crop after zero padding by
        ``crop_pad`` pixels (in standardised units, i.e. mean colour), and a
        horizontal flip with probability 1/2 if ``hflip``.
    precision : {"fp32", "bf16"}
        ``bf16`` runs matmuls/convolutions with bf16 operands and keeps fp32 master
        weights and momentum (explicit casts for linear/mlp, autocast otherwise).
        ``fp32`` turns off TF32 convolutions on GPUs that have them. GPUs before
        compute capability 8.0 emulate bf16 (slower than fp32; a warning says so).
    device : {"auto", "cpu", "cuda", "cuda:N"} or str
        ``auto`` picks CUDA when available. Checked where training runs (a Ray
        driver without a GPU can send work to nodes with one). Worker processes
        (``workers > 1``) spread over a machine's GPUs; a Ray task given no GPU
        trains ``auto`` on CPUs.
    group_size : int, optional
        Models trained together in one batched computation; default sized from the
        parameter count on CPU (about 6.6M parameters per group: 16 models of
        784-512-10, at most 64 small models, 256 when compiled) and on a GPU from its
        free memory and a probe's activations (at most 1024). Running out of device
        memory halves the group, with a warning; the models are the same.
        With a compiled step the groups of a block are made equal in size.
    compile : bool or "auto"
        ``torch.compile`` the training step (cached across calls and blocks: per
        process for linear/mlp, per learner for modules). ``auto`` compiles on CUDA, and on CPU for linear/mlp with at least
        100k parameters per model, where the fused optimizer update pays for the
        compile time. Any compile failure falls back to the eager step with a warning.
    eval_batch_size : int
        Examples per evaluation batch (fewer on a GPU where a group's activations
        would not fit).
    vectorize : bool or "auto"
        For ``cnn``, ``resnet`` and user modules: train a group with ``torch.func.vmap``
        (True) or each model with plain autograd, one after another (False). ``auto``
        vectorizes on CUDA only: on CPU, vmapped convolutions measured 2.6x slower
        to train and 2x slower to evaluate than plain modules. Both give the same
        models (same initialisation, minibatch order, augmentation and update),
        except for random layers inside a user module (Dropout): vectorized, they
        draw from one stream per group, so a trial's dropout masks depend on the
        other trials of its group (plain modules draw from each trial's own seed);
        ``auto`` therefore trains modules with ``nn.Dropout`` layers one by one, and
        ``True`` warns. (Dropout called functionally in ``forward`` cannot be seen.)
        The hand-written ``linear``/``mlp`` are always vectorized.
    num_threads : int, optional
        CPU threads for this call (restored afterwards); default: torch's setting.
        On a CPU shared with other busy processes, 1 thread avoids OpenMP barriers
        waiting on a descheduled thread (seen here as 100x slower small steps).

    Notes
    -----
    ``device``, ``group_size``, ``compile``, ``eval_batch_size``, ``num_threads`` and ``vectorize`` are execution
    settings, not part of :meth:`spec`: they change results only by float rounding (and,
    with ``vectorize``, the dropout draws noted above). Rounding also depends on the
    number of CPU threads, so bit-identical rows need the same thread count.
    In fp32 on CPU, the same seeds give the same results run after run; on a GPU,
    cuDNN's convolution backward passes are not deterministic, so reruns agree only
    up to rounding.
    """

    preferred_block = 64

    def __init__(
        self,
        model: str | Callable[[], nn.Module] = "mlp",
        *,
        widths: Sequence[int] | None = None,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        schedule: str = "onecycle",
        warmup: float = 0.1,
        label_smoothing: float = 0.1,
        augment: bool = False,
        crop_pad: int = 2,
        hflip: bool = False,
        precision: str = "fp32",
        device: str = "auto",
        group_size: int | None = None,
        compile: bool | str = "auto",
        eval_batch_size: int = 2048,
        num_threads: int | None = None,
        vectorize: bool | str = "auto",
    ) -> None:
        if isinstance(model, str):
            if model not in MODELS:
                raise ModelError(f"unknown model {model!r}; use one of {MODELS} or a callable returning an nn.Module.")
        elif isinstance(model, nn.Module):
            raise ModelError(f"model must be a function that returns a new {type(model).__name__} (each trial "
                             "builds its own from its seed), not a module instance: pass e.g. "
                             "`lambda: nn.Sequential(...)` or a def that builds it.")
        elif not callable(model):
            raise ModelError(f"model must be a name in {MODELS} or a callable returning an nn.Module, got {model!r}.")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}.")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}.")
        for name, v in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                        ("num_threads", 1 if num_threads is None else num_threads)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        _check_recipe(lr, momentum, weight_decay, label_smoothing, crop_pad)
        widths = _check_widths(model, widths)
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int | np.integer)
                                       or group_size < 1):
            raise ValueError(f"group_size must be a positive integer or None (auto), got {group_size!r}.")
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup}.")
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}.")
        self.model = model
        self.widths = widths
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.schedule = schedule
        self.warmup = float(warmup)
        self.label_smoothing = float(label_smoothing)
        self.augment = bool(augment)
        self.crop_pad = int(crop_pad)
        self.hflip = bool(hflip)
        self.precision = precision
        self.device = device
        self.group_size = None if group_size is None else int(group_size)
        self.compile = compile
        self.eval_batch_size = int(eval_batch_size)
        self.num_threads = None if num_threads is None else int(num_threads)
        if vectorize not in (True, False, "auto"):
            raise ValueError(f"vectorize must be True, False or 'auto', got {vectorize!r}.")
        self.vectorize = vectorize
        # checked here, resolved where it trains: a Ray driver without a GPU may send work to nodes with one
        dev = _device_type(device)
        if dev == "cuda" or (dev == "auto" and torch.cuda.is_available()):
            self.preferred_block = 1024

    # ------------------------------------------------------------------ spec

    def spec(self) -> dict:
        model = self.model if isinstance(self.model, str) else _callable_name(self.model)
        digest = None if isinstance(self.model, str) else _source_digest(self.model)
        source = {} if digest is None else {"model_source": digest}
        if not isinstance(self.model, str):
            cached = self.__dict__.get("_structure")
            if cached is None or cached[0] is not self.model:  # (built once per factory: it may be slow)
                self._structure = cached = (self.model, _structure_digest(self.model))
            if cached[1] is not None:
                source["model_structure"] = cached[1]
        return {
            "learner": "torch_population",
            "version": 1,
            "model": model,
            **source,
            "widths": None if self.widths is None else list(self.widths),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "nesterov": self.nesterov,
            "schedule": self.schedule,
            "warmup": self.warmup,
            "label_smoothing": self.label_smoothing,
            "augment": self.augment,
            "crop_pad": self.crop_pad,
            "hflip": self.hflip,
            "precision": self.precision,
            "torch": torch.__version__.split("+")[0],
        }

    # ------------------------------------------------------------ training

    def fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        with contextlib.ExitStack() as stack:
            if self.num_threads is not None:
                old = torch.get_num_threads()
                torch.set_num_threads(self.num_threads)
                stack.callback(torch.set_num_threads, old)
            if self.precision == "fp32":  # fp32 means fp32: no TF32 convolutions on Ampere and later GPUs
                cudnn = torch.backends.cudnn  # (only this flag: cudnn.flags() would reset deterministic too)
                stack.callback(setattr, cudnn, "allow_tf32", cudnn.allow_tf32)
                cudnn.allow_tf32 = False
            return self._fit_predict(data, masks, seeds)

    def check_data(self, data: Dataset) -> None:
        super().check_data(data)  # no missing values
        hand = self.model in ("linear", "mlp")
        if isinstance(self.model, str) and not hand and not data.is_image:
            raise ModelError(
                f"model {self.model!r} needs images, but dataset {data.name!r} has image_shape=None; "
                "use model='mlp' or 'linear' for feature vectors."
            )
        if self.augment and (hand or not data.is_image):
            raise ModelError("augment=True needs image data and an image model (cnn, resnet or an image-input "
                             "module); set augment=False.")

    def _fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        masks = np.asarray(masks)
        seeds = np.asarray(seeds)
        if masks.ndim != 2 or masks.shape[1] != data.n_train:
            raise ValueError(f"masks must have shape (K, n_train={data.n_train}), got {masks.shape}.")
        if masks.dtype != bool:
            raise ValueError(f"masks must be boolean, got dtype {masks.dtype}.")
        if seeds.shape != (masks.shape[0],):
            raise ValueError(f"seeds must have shape (K,) = ({masks.shape[0]},), got {seeds.shape}.")
        if not len(masks):
            raise ValueError("masks has no rows: there is no trial to train (pass at least one mask and seed).")
        empty = np.flatnonzero(masks.sum(1) == 0)
        if len(empty):
            raise ValueError(f"mask rows {empty.tolist()[:5]} select no training examples; every trial needs some.")
        k_total = masks.shape[0]
        dev = _resolve_device(self.device)
        if dev.type == "cpu":
            _raise_malloc_threshold()
        elif dev.type == "cuda" and self.precision == "bf16" and torch.cuda.get_device_capability(dev) < (8, 0):
            warn_once("bf16-emulated", f"precision='bf16' on {torch.cuda.get_device_name(dev)}: "
                                   "GPUs before compute capability 8.0 (V100, T4) emulate bf16, which is slower "
                                   "than fp32 there; use precision='fp32'.")
        self.check_data(data)
        hand = self.model in ("linear", "mlp")
        image_layout = (not hand) and data.is_image
        if hand:
            xtr, xte = (rows.to(dev) for rows in prepare_rows(data))
            if 4 * data.x_train.size <= DENSE_INPUT_BYTES:
                # small enough: standardise once (gathering plain rows is the fastest step)
                xtr, xte = xtr[:], xte[:]
        else:
            xtr, xte = (x.to(dev) for x in prepare_inputs(data, images=image_layout))
        ytr = shared_tensor(data.y_train).to(dev)
        yte = shared_tensor(data.y_test).to(dev)
        n_classes = data.n_classes

        if hand:
            widths = () if self.model == "linear" else (self.widths if self.widths is not None else (128,))
            trainer: _Population = _HandMLP(self, xtr.shape[1], widths, n_classes, dev)
        else:
            trainer = self._func_trainer(data, xtr, n_classes, dev)
        g = self.group_size or trainer.auto_group_size()
        out = self._train_groups(trainer, (xtr, ytr, xte, yte), masks, seeds, max(1, min(g, k_total)))
        preds = Predictions(*(np.concatenate(out[k]) for k in ("train_pred", "train_prob", "test_pred", "test_prob")))
        self._check_diverged(preds, seeds)
        preds.check(k_total, data.n_train, data.n_test, n_classes)
        return preds

    def _train_groups(self, trainer: _Population, tensors: tuple, masks: np.ndarray, seeds: np.ndarray,
                      g: int) -> dict[str, list[np.ndarray]]:
        """Train and evaluate the trials in groups of ``g``, halving ``g`` when the device runs out
        of memory (a trial's model does not depend on its group, so the results are the same)."""
        xtr, ytr, xte, yte = tensors
        k_total = len(seeds)
        if trainer.compiled:  # one compiled shape: a short last group is padded with copies
            g = balanced_group_size(k_total, g)
        out = {k: [] for k in ("train_pred", "train_prob", "test_pred", "test_prob")}
        start = 0
        while start < k_total:
            stop = min(start + g, k_total)
            gm, gs = masks[start:stop], seeds[start:stop]
            pad = g - (stop - start) if trainer.compiled else 0
            if pad:
                gm = np.concatenate([gm, np.repeat(gm[-1:], pad, 0)])
                gs = np.concatenate([gs, np.repeat(gs[-1:], pad, 0)])
            done = None
            try:
                state = trainer.train(xtr, ytr, gm, gs)
                done = [(split, *trainer.evaluate(state, x, y)) for split, x, y in
                        (("train", xtr, ytr), ("test", xte, yte))]
            except _OUT_OF_MEMORY as e:
                g = self._smaller_group(g, k_total - start, trainer, e)
            state = None
            if done is None:  # out of memory; freed here, where no traceback holds the group's tensors
                if trainer.dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            for split, pred, prob in done:
                out[f"{split}_pred"].append(pred[:len(gm) - pad])
                out[f"{split}_prob"].append(prob[:len(gm) - pad])
            start = stop
        return out

    def _smaller_group(self, g: int, left: int, trainer: _Population, e: Exception) -> int:
        """Half the group after running out of memory, or a ModelError that says what to lower."""
        if g == 1:
            raise ModelError(
                f"out of memory on {trainer.dev} training one model at a time ({e}). Lower batch_size "
                f"(now {self.batch_size}) or eval_batch_size (now {self.eval_batch_size}), or use a smaller "
                "model (widths=...).") from e
        half = max(1, (g + 1) // 2)
        if trainer.compiled:
            half = balanced_group_size(left, half)
        warnings.warn(f"{trainer.dev} ran out of memory training {g} models at once; going on with groups of "
                      f"{half} (set group_size={half} to start there).", stacklevel=4)
        return half

    # ------------------------------------------------------------- helpers

    def _func_trainer(self, data: Dataset, xtr: torch.Tensor, n_classes: int, dev: torch.device) -> _FuncPopulation:
        """The module trainer for these inputs, kept across blocks so that its compiled step is
        reused (its checks and probe run once); the latest one only, and never pickled."""
        key = (tuple(xtr.shape[1:]), data.image_shape, n_classes, str(dev),  # and what it reads once:
               id(self.model), self.widths, self.precision, self.compile, self.vectorize)
        cache = self.__dict__.setdefault("_trainers", {})
        if key not in cache:
            cache.clear()
            cache[key] = _FuncPopulation(self, data, xtr, n_classes, dev)
        return cache[key]

    def check_here(self) -> None:
        _resolve_device(self.device)

    def use_cpu_only(self) -> None:
        if self.device == "auto":
            self.device = "cpu"

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_trainers", "_structure")}

    def _check_diverged(self, preds: Predictions, seeds: np.ndarray) -> None:
        """Name diverged training (NaN probabilities: NaN or infinite weights) instead of a bad-output error."""
        bad = ~(np.isfinite(preds.train_prob).all(1) & np.isfinite(preds.test_prob).all(1))
        if bad.any():
            raise ModelError(f"training diverged: {int(bad.sum())} of {len(bad)} models (seeds "
                             f"{[int(s) for s in seeds[bad][:5]]}) ended with NaN or infinite outputs. Lower "
                             f"the learning rate (lr={self.lr:g}) or add warmup; "
                             "inputs of very large magnitude do the same.")


class _Schedule:
    """Each model's minibatch indices and learning rates, step by step, drawn an epoch at a time.

    Model k shuffles its subset once per epoch from its own stream (``[seed, 1]``; the last
    batch wraps around to the start), so its batches do not depend on the other models of
    its group. A model with fewer steps (a smaller subset) repeats its first batch at
    learning rate 0 (a step that changes nothing) until the longest model ends. Indices
    are made one epoch ahead, not for the whole run: 1024 models of a 50,000-example set
    would take GiBs.
    """

    def __init__(self, cfg: TorchLearner, masks: np.ndarray, seeds: np.ndarray, dev: torch.device):
        self.b, self.epochs, self.dev = cfg.batch_size, cfg.epochs, dev
        self.subsets = [np.flatnonzero(m) for m in masks]
        self.spe = [-(-len(sub) // self.b) for sub in self.subsets]  # steps per epoch (ceil)
        self.steps = [n * self.epochs for n in self.spe]
        self.t_max = max(self.steps)
        self.rngs = [np.random.default_rng([_seed_int(s), 1]) for s in seeds]
        lrs = np.zeros((self.t_max, len(seeds)), dtype=np.float32)
        for k, tk in enumerate(self.steps):
            lrs[:tk, k] = _lr_curve(cfg.schedule, cfg.lr, cfg.warmup, tk)
        self.lrs = torch.as_tensor(lrs, device=dev)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.t_max, len(self.rngs), self.b

    @staticmethod
    def steps_of(cfg: TorchLearner, masks: np.ndarray) -> int:
        """The steps of the longest model of a group (the schedule's length), without drawing it."""
        return max(-(-int(m.sum()) // cfg.batch_size) for m in masks) * cfg.epochs

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(step, indices (G, B) on the device, learning rates (G,)) for every step."""
        g, chunk = len(self.rngs), max(self.spe)
        pending = [np.empty((0, self.b), dtype=np.int64)] * g
        drawn, first = [0] * g, [None] * g
        for t0 in range(0, self.t_max, chunk):
            n = min(chunk, self.t_max - t0)
            idx = np.empty((n, g, self.b), dtype=np.int64)
            for k in range(g):
                while len(pending[k]) < n and drawn[k] < self.epochs:
                    order = self._epoch(k)
                    first[k] = order[0] if first[k] is None else first[k]
                    pending[k] = np.concatenate([pending[k], order])
                    drawn[k] += 1
                take, pending[k] = pending[k][:n], pending[k][n:]
                idx[:len(take), k] = take
                idx[len(take):, k] = first[k]
            idx_t = torch.as_tensor(idx, device=self.dev)
            for i in range(n):
                yield t0 + i, idx_t[i], self.lrs[t0 + i]

    def _epoch(self, k: int) -> np.ndarray:
        sub = self.subsets[k]
        perm = self.rngs[k].permuted(sub)
        return perm[np.arange(self.spe[k] * self.b) % len(sub)].reshape(self.spe[k], self.b)


def _check_recipe(lr, momentum, weight_decay, label_smoothing, crop_pad) -> None:
    """Refuse training settings that train nothing or the wrong way (they would still give estimates)."""
    checks = [
        ("lr", lr, lambda v: v > 0, "> 0 (0 trains nothing, < 0 ascends the loss)"),
        ("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("weight_decay", weight_decay, lambda v: v >= 0, ">= 0"),
        ("label_smoothing", label_smoothing, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("crop_pad", crop_pad, lambda v: v >= 0 and float(v).is_integer(), "an integer >= 0"),
    ]
    for name, v, ok, want in checks:
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or not np.isfinite(v) \
                or not ok(v):
            raise ValueError(f"{name} must be {want}, got {v!r}.")


def _check_widths(model, widths) -> tuple[int, ...] | None:
    """Widths as a tuple of positive ints; ``widths=128`` means one hidden layer of 128."""
    if widths is None:
        return None
    if isinstance(widths, int | np.integer) and not isinstance(widths, bool):
        widths = (widths,)
    if isinstance(widths, str) or not all(isinstance(w, int | np.integer) and not isinstance(w, bool)
                                          for w in widths):
        raise ValueError(f"widths must be positive integers, e.g. (128,) or 128, got {widths!r}.")
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must be positive integers, got {widths}.")
    if not widths and model in ("mlp", "cnn", "resnet"):
        raise ValueError(f"widths=() leaves model {model!r} without layers; give widths, or use model='linear'.")
    if widths and model == "linear":
        warnings.warn("model 'linear' has no hidden layers: widths are ignored (use model='mlp' for hidden "
                      "layers).", stacklevel=3)
    return widths


def balanced_group_size(k_total: int, cap: int) -> int:
    """The size of equal groups (at most ``cap``) that cover ``k_total`` models.

    ``ceil(K / ceil(K / cap))``: the same number of groups as groups of ``cap``, but
    padding the last one needs fewer copies than there are groups (16 models with a
    cap of 15 train as 2 x 8, not 15 + 1 padded to 15).
    """
    n_groups = -(-k_total // cap)
    return -(-k_total // n_groups)


def _lr_curve(schedule: str, peak: float, warmup: float, t: int) -> np.ndarray:
    s = np.arange(t, dtype=np.float64)
    if schedule == "constant":
        return np.full(t, peak)
    warm = max(1, int(round(warmup * t))) if warmup > 0 else 0
    out = np.empty(t)
    if warm:
        out[:warm] = peak * (s[:warm] + 1) / warm
    rest = s[warm:] - warm
    span = max(t - warm, 1)
    if schedule == "onecycle":
        out[warm:] = peak * (span - rest) / span
    else:  # cosine
        out[warm:] = peak * 0.5 * (1 + np.cos(np.pi * rest / span))
    return out


def _seed_int(seed) -> int:
    return int(np.uint64(np.int64(seed)) if np.asarray(seed).dtype.kind == "i" else seed)


def _torch_seed(seed, stream: int) -> int:
    return int(np.random.default_rng([_seed_int(seed), stream]).integers(2**62))


def _raise_malloc_threshold() -> None:
    """Free one ~31 MiB block so glibc raises its mmap threshold (dynamic, up to 32 MiB).

    Without this, the step's temporaries (MiBs each) are mmapped and unmapped every
    step and the first call of a process runs several times slower on page faults.
    """
    block = torch.empty(31 * 2**20, dtype=torch.uint8)
    block[:: 4096] = 0
    del block


def _device_type(device: str | torch.device) -> str:
    """"auto", "cpu", "cuda", ...: a ValueError naming the choices for a device torch cannot parse."""
    if str(device) == "auto":
        return "auto"
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from e


def _resolve_device(device: str | torch.device) -> torch.device:
    if _device_type(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device={str(device)!r} was requested but CUDA is not available here; use "
                               "device='cpu' or 'auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device={str(device)!r} was requested but this machine has "
                               f"{torch.cuda.device_count()} GPU(s): use cuda:0..cuda:{torch.cuda.device_count() - 1}, "
                               "or 'cuda' for the current one.")
    return dev


def _source_digest(fn) -> str | None:
    """A short hash of the factory's source code (None where Python cannot show it).

    Two factories with one name (two lambdas, or a def edited between runs) build
    different networks; the digest keeps their trials from being mixed in one store.
    """
    import inspect

    inner = getattr(fn, "func", fn)
    try:
        code = inspect.getsource(inner)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(code.encode()).hexdigest()[:12]


def _structure_digest(factory) -> str | None:
    """A short hash of what the factory builds: its layers as printed and every parameter's and
    buffer's name, shape, dtype and trainability (not their values, which depend on the seed).

    The source digest misses what the factory reads from outside its own code (a global width,
    a class's default arguments); this catches those, so two architectures never share a store.
    None when the factory fails here (the trainer then reports why, with its context).
    """
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            module = _call_factory(factory)
    except Exception:
        return None
    if not isinstance(module, nn.Module):
        return None

    def shape(t) -> str:
        return "lazy" if isinstance(t, nn.parameter.UninitializedTensorMixin) else str(tuple(t.shape))

    parts = [re.sub(r" at 0x[0-9a-fA-F]+", "", repr(module))]  # (an address in a custom extra_repr varies)
    parts += [f"p {n} {shape(t)} {t.dtype} {t.requires_grad}" for n, t in module.named_parameters()]
    parts += [f"b {n} {shape(t)} {t.dtype}" for n, t in module.named_buffers()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _callable_name(fn) -> str:
    inner = getattr(fn, "func", fn)  # functools.partial
    name = f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', type(inner).__name__)}"
    if inner is not fn:
        args = ", ".join([repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())])
        name += f"({args})"
    return name


class ScaledRows:
    """Flattened input rows kept in their stored dtype, standardised when indexed.

    ``rows[idx]`` returns ``raw[idx] * mul + add`` computed in float32 (then cast to the
    dtype set with ``.to(dtype)``): exactly the rows of :func:`prepare_inputs`
    (``images=False``), but a uint8 dataset stays uint8 in memory until a batch is used
    (Fashion-MNIST: 47 MB instead of 188 MB). Standardising before the bf16 cast matters:
    raw values cast to bf16 first keep 8 bits, so a feature of mean 500 and spread 1 would
    take only a handful of values.
    """

    def __init__(self, raw: torch.Tensor, mul: torch.Tensor, add: torch.Tensor,
                 dtype: torch.dtype = torch.float32):
        self.raw, self.mul, self.add, self.dtype = raw, mul, add, dtype

    def __getitem__(self, idx) -> torch.Tensor:
        rows = torch.addcmul(self.add, gather_rows(self.raw, idx).to(self.mul.dtype), self.mul)
        return rows if self.dtype == rows.dtype else rows.to(self.dtype)

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape)

    def to(self, where) -> ScaledRows:
        """A device moves the rows; a dtype sets the dtype that indexing returns."""
        if isinstance(where, torch.dtype):
            return ScaledRows(self.raw, self.mul, self.add, where)
        return ScaledRows(self.raw.to(where), self.mul.to(where), self.add.to(where), self.dtype)


def shared_tensor(x: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` (no copy), also for the read-only arrays Ray's object store hands
    out, without torch's warning: these tensors are only ever read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(x))


def gather_rows(x: torch.Tensor | ScaledRows, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for an integer index tensor of any shape, via ``index_select``.

    Measured on CPU: gathering a (16, 128) index of 784-wide bf16 rows takes 12 us per
    model with ``index_select`` and 52 us with advanced indexing.
    """
    if isinstance(x, ScaledRows):
        return x[idx]
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64:
        return x[idx]
    return torch.index_select(x, 0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])


def prepare_rows(data: Dataset) -> tuple[ScaledRows, ScaledRows]:
    """Train/test :class:`ScaledRows` with the statistics of :func:`prepare_inputs`.

    Rows stay in their stored dtype (uint8 images: a quarter of float32's memory) unless a
    feature's mean dwarfs its spread (timestamps, large ids): float32 arithmetic would then
    cancel the spread away, so such data is centred in float64 once and kept as float32.
    """
    mean, std, pixel = _input_stats(data)
    d = int(np.prod(data.x_train.shape[1:]))
    # per-channel statistics of images repeat along the flattened (H, W, C) rows
    mean, std = np.resize(mean, d), np.resize(std, d)
    if _needs_centring(mean, std):
        mul = torch.as_tensor(1.0 / std, dtype=torch.float32)
        add = torch.zeros(d, dtype=torch.float32)
        return tuple(ScaledRows(torch.from_numpy(_centred(x.reshape(len(x), -1), mean, pixel)), mul, add)
                     for x in (data.x_train, data.x_test))
    mul = torch.as_tensor(1.0 / (pixel * std), dtype=torch.float32)
    add = torch.as_tensor(-mean / std, dtype=torch.float32)

    def raw(x: np.ndarray) -> torch.Tensor:
        x = x.reshape(len(x), -1)
        if x.dtype == bool:
            x = x.astype(np.uint8)
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            x = x.astype(np.float32)  # other integer types: torch gathers them, but keep it simple
        return shared_tensor(np.ascontiguousarray(x))

    return ScaledRows(raw(data.x_train), mul, add), ScaledRows(raw(data.x_test), mul, add)


def _needs_centring(mean: np.ndarray, std: np.ndarray) -> bool:
    """Whether float32 ``x * (1/std) - mean/std`` would lose the spread: a mean beyond 1000
    standard deviations leaves fewer than 14 of float32's 24 bits for it."""
    return bool(np.any(np.abs(mean) > 1e3 * std))


_CHUNK_ROWS = 1 << 14


def _centred(rows: np.ndarray, mean: np.ndarray, pixel: float) -> np.ndarray:
    """float32 ``rows / pixel - mean``, computed in float64 chunk by chunk (no float64 copy of the set)."""
    out = np.empty(rows.shape, dtype=np.float32)
    for a in range(0, len(rows), _CHUNK_ROWS):
        out[a:a + _CHUNK_ROWS] = rows[a:a + _CHUNK_ROWS].astype(np.float64) / pixel - mean
    return out


def _input_stats(data: Dataset) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, std, pixel divisor) of the scaled training inputs, per channel (images) or feature.

    Two float64 passes (mean, then squares about it): a one-pass ``E[x^2] - E[x]^2`` loses the
    spread of features with a large offset (timestamps) to cancellation.
    """
    x = data.x_train
    integer = x.dtype == bool or np.issubdtype(x.dtype, np.integer)
    pixel = float(data.meta.get("pixel_max", 255)) if integer else 1.0
    if data.is_image:
        c = data.image_shape[2] if len(data.image_shape) == 3 else 1
        flat = x.reshape(-1, c)
    else:
        flat = x.reshape(len(x), -1)
    # chunked float64 moments: never a float copy of the whole set
    step = 1 << 20
    s = np.zeros(flat.shape[1])
    for a in range(0, len(flat), step):
        s += (flat[a:a + step].astype(np.float64) / pixel).sum(0)
    mean = s / len(flat)
    q = np.zeros(flat.shape[1])
    for a in range(0, len(flat), step):
        q += np.square(flat[a:a + step].astype(np.float64) / pixel - mean).sum(0)
    std = np.sqrt(q / len(flat))
    # constant features (std at float64 rounding level of their mean) are only centred
    return mean, np.where(std > np.maximum(1e-8, 1e-12 * np.abs(mean)), std, 1.0), pixel


def prepare_inputs(data: Dataset, images: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 train/test tensors scaled to [0, 1] (integer inputs) and standardised.

    Integer and bool inputs are divided by ``data.meta.get("pixel_max", 255)``. The
    mean and standard deviation come from the full training set's inputs (all of
    ``x_train``, not the labels and not a trial's subset): per channel for images,
    per feature otherwise. ``images=True`` returns NCHW tensors built from
    ``data.image_shape``; otherwise rows are flattened to ``(N, D)``. The arithmetic is
    float64 (a feature with a large offset keeps its spread); only the result is float32.
    """
    if images and not data.is_image:
        raise ModelError("this model needs images, but the dataset has image_shape=None.")
    if data.is_image:
        hwc = data.image_shape if len(data.image_shape) == 3 else (*data.image_shape, 1)
        if int(np.prod(hwc)) != int(np.prod(data.x_train.shape[1:])):
            raise ModelError(f"rows of shape {data.x_train.shape[1:]} do not hold images of "
                             f"image_shape {data.image_shape}.")
    mean, std, pixel = _input_stats(data)

    def standardise(x: np.ndarray) -> torch.Tensor:
        rows = x.reshape(len(x), -1, len(mean)) if data.is_image else x.reshape(len(x), -1)
        z = _centred(rows, mean, pixel)
        z /= std.astype(np.float32)
        if images:
            z = np.ascontiguousarray(z.reshape(len(x), *hwc).transpose(0, 3, 1, 2))
        return torch.from_numpy(z.reshape(len(x), -1) if not images else z)

    return standardise(data.x_train), standardise(data.x_test)


# ====================================================================== populations


class _Population:
    compiled: bool = False

    # bytes of activations per example: all of one training forward (kept for the backward
    # pass), and the largest single layer output (what evaluation holds at once)
    act_bytes: int = 0
    peak_act_bytes: int = 0

    def auto_group_size(self) -> int:
        if self.dev.type == "cuda":
            return _gpu_group_size(self.dev, self.n_params, self.act_bytes, self.cfg.batch_size)
        # CPU: small groups keep activations in cache; per-op overheads set the floor
        # (a compiled step has fewer, fused operations, and tiny models gain up to ~200 a group).
        cap = _CPU_MAX_GROUP * (4 if self.compiled else 1)
        return int(max(1, min(cap, _CPU_GROUP_PARAMS // max(self.n_params, 1))))

    def _step_cache(self) -> dict:
        """Where compiled steps live: the process-wide cache, for steps that close over nothing."""
        return _COMPILED

    def _get_step(self, key: tuple, eager: Callable) -> Callable:
        if not self.compiled:
            return eager
        cache = self._step_cache()
        fn = cache.get(key, _MISSING)
        if fn is _MISSING:
            _allow_recompiles()
            try:
                fn = torch.compile(eager, dynamic=False)
            except Exception as e:  # pragma: no cover - depends on the platform
                warnings.warn(f"torch.compile failed ({e!r}); using the eager step.", stacklevel=3)
                fn = None
            cache[key] = fn
        if fn is None:
            return eager
        first = [True]

        def guarded(*args):
            if not first[0]:
                return fn(*args)
            # compile errors surface on the first call of a step (compiling runs before the step
            # changes any weight); errors after that, and running out of memory, are the step's own
            try:
                out = fn(*args)
            except _OUT_OF_MEMORY:
                raise
            except Exception as e:
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); using the eager step.", stacklevel=2)
                cache[key] = None
                first[0] = False
                return eager(*args)
            first[0] = False
            return out
        return guarded


def _gpu_group_size(dev: torch.device, n_params: int, act_bytes: int, batch_size: int) -> int:
    """Models per group on a GPU: as many as 60% of its free memory holds, at most 1024.

    A model costs its weights four times over (fp32 weights, momentum and gradient, a
    bf16 copy) and, per example of a batch, its activations about three times (kept for
    the backward pass, their gradients, workspace). Running out of memory anyway halves
    the group (see TorchLearner._train_groups).
    """
    free = _free_gpu_bytes(dev)
    per_model = 16 * n_params + 3 * batch_size * act_bytes
    fits = int(0.6 * free) // max(per_model, 1)
    return int(max(1, min(1024, _GPU_GROUP_PARAMS // max(n_params, 1), fits)))


def _free_gpu_bytes(dev: torch.device) -> int:
    """Free device memory, counting what PyTorch's allocator holds cached but unused (the last
    block's, or the training step's) as free: the driver reports it as used."""
    free, _ = torch.cuda.mem_get_info(dev)
    return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))


def _eval_rows(pop: _Population, g: int) -> int:
    """Rows per evaluation batch: ``eval_batch_size``, fewer on a GPU where g models' largest
    activations would not fit in half of its free memory."""
    rows = pop.cfg.eval_batch_size
    if pop.dev.type == "cuda" and pop.peak_act_bytes:
        free = _free_gpu_bytes(pop.dev)
        rows = min(rows, max(1, int(0.5 * free) // (3 * g * pop.peak_act_bytes)))
    return rows


def _activation_bytes(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(all, largest) bytes of the leaf modules' outputs per example of ``x``, in one forward pass."""
    sizes = []

    def hook(_m, _inp, out):
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * 4)  # as float32, the larger of the two precisions
    handles = [m.register_forward_hook(hook) for m in module.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    n = max(len(x), 1)
    return (sum(sizes) + n - 1) // n, (max(sizes, default=0) + n - 1) // n


def _allow_recompiles() -> None:
    """Raise dynamo's per-function recompile limit (8): every group shape, width and recipe is a
    compiled variant of the same step function, and past the limit dynamo silently runs it eagerly."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # (torch < 2.6)
    if getattr(config, name, 256) < 64:
        setattr(config, name, 64)


def _sgd_update(p: torch.Tensor, m: torch.Tensor, g: torch.Tensor, lr: torch.Tensor,
                mu: float, wd: float, nesterov: bool) -> None:
    """PyTorch SGD (momentum, weight decay, dampening 0) with a per-model learning rate.

    In place and allocation-free on the momentum path: m = mu m + g + wd p; p -= lr m.
    """
    lr = lr.view(-1, *([1] * (p.ndim - 1)))
    if nesterov:
        d = g.float() + wd * p if wd else g.float()
        m.mul_(mu).add_(d)
        p.addcmul_(lr, d + mu * m, value=-1)
        return
    m.mul_(mu).add_(g)
    if wd:
        m.add_(p, alpha=wd)
    p.addcmul_(lr, m, value=-1)


class _HandMLP(_Population):
    """Batched softmax regression / ReLU MLP with a hand-written backward pass."""

    def __init__(self, cfg: TorchLearner, d_in: int, widths: Sequence[int], n_classes: int,
                 dev: torch.device) -> None:
        self.cfg, self.dev = cfg, dev
        self.dims = [d_in, *[int(w) for w in widths], n_classes]
        self.n_params = sum(a * b + b for a, b in zip(self.dims[:-1], self.dims[1:], strict=True))
        self.act_bytes = 4 * sum(self.dims)
        self.peak_act_bytes = 4 * max(self.dims[1:])
        self.dt = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        compile_ = cfg.compile
        if compile_ == "auto":
            compile_ = dev.type == "cuda" or self.n_params >= 100_000
        self.compiled = bool(compile_)

    def _init(self, seeds: np.ndarray):
        ws, bs = [], []
        for a, b in zip(self.dims[:-1], self.dims[1:], strict=True):
            ws.append(torch.empty(len(seeds), a, b))
            bs.append(torch.empty(len(seeds), 1, b))
        for k, s in enumerate(seeds):
            gen = torch.Generator().manual_seed(_torch_seed(s, 0))
            for w, b in zip(ws, bs, strict=True):
                bound = 1.0 / math.sqrt(w.shape[1])  # nn.Linear's default (kaiming_uniform, a=sqrt(5))
                w[k] = torch.rand(w.shape[1:], generator=gen) * (2 * bound) - bound
                b[k] = torch.rand(b.shape[1:], generator=gen) * (2 * bound) - bound
        # kept as (G, out, in) and (G, out, 1), like nn.Linear (see _mlp_step)
        ws = [w.transpose(1, 2).contiguous() for w in ws]
        bs = [b.transpose(1, 2).contiguous() for b in bs]
        return [w.to(self.dev) for w in ws], [b.to(self.dev) for b in bs]

    def train(self, xtr, ytr, masks, seeds):
        cfg = self.cfg
        ws, bs = self._init(seeds)
        mws = [torch.zeros_like(w) for w in ws]
        mbs = [torch.zeros_like(b) for b in bs]
        x = xtr.to(self.dt)  # dense rows: cast once; ScaledRows: scaled as gathered
        key = ("mlp", tuple(self.dims), len(seeds), cfg.batch_size, str(self.dt), str(self.dev),
               cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.label_smoothing)
        step = self._get_step(key, _mlp_step)
        wc = [w.to(self.dt) for w in ws]
        args = (cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.label_smoothing)
        for _, it, lr in _Schedule(cfg, masks, seeds, self.dev):
            wc = step(ws, bs, mws, mbs, wc, gather_rows(x, it), gather_rows(ytr, it), lr, *args)
        return ws, bs

    @torch.no_grad()
    def evaluate(self, state, x, y):
        """Predictions of all G models, computed transposed: activations are (G, width, N).

        Every model sees the same rows here, so the first layer of all G models is one
        wide matrix product (G*width x d_in by d_in x N), far faster than G thin ones;
        the later layers are then contiguous (G, out, in) x (G, in, N) products, and the
        softmax runs over the middle axis (fast on CPU).
        """
        ws, bs = state  # (G, out, in) and (G, out, 1)
        g = len(ws[0])
        wt = [w.to(self.dt) for w in ws]
        bt = [b.to(self.dt) for b in bs]
        w_first = wt[0].reshape(-1, wt[0].shape[2])
        preds, probs = [], []
        rows = _eval_rows(self, g)
        for s in range(0, len(y), rows):
            xb = x[s:s + rows].to(self.dt)
            yb = y[s:s + rows]
            h = torch.mm(w_first, xb.t()).view(g, -1, len(xb)).add_(bt[0])  # (G, out, N)
            for w, b in zip(wt[1:], bt[1:], strict=True):
                h = torch.bmm(w, h.relu_()).add_(b)
            logp = torch.log_softmax(h.float(), 1)  # (G, C, N)
            preds.append(logp.max(1).indices)  # (max: 8x faster than argmax over a middle axis)
            probs.append(logp.gather(1, yb.expand(g, 1, -1)).squeeze(1).exp())
        return torch.cat(preds, 1).cpu().numpy(), torch.cat(probs, 1).cpu().numpy()


def _mlp_step(ws, bs, mws, mbs, wc, x, y, lr, mu: float, wd: float, nesterov: bool, ls: float):
    """One SGD step for G stacked MLPs. ``wc`` are the weights in compute dtype; returns the new ones.

    Computed transposed: weights are (G, out, in) and biases (G, out, 1), like
    nn.Linear, and activations and their gradients are (G, width, B). Then every
    product has contiguous operands or a transposed right-hand view, which bf16
    ``bmm`` on CPU handles at full speed (a transposed left-hand view runs at half
    speed), so no transposed copy of the batch is ever made: the forward is
    ``W x^T`` on a view of the gathered rows, the first layer's weight gradient
    ``d^T x`` on the rows themselves (measured per model-step, 784-512-10: 98 + 66 us
    against 112 + 81 us plus a 22-35 us transposed copy). The softmax runs over the
    class axis in the middle (fast on CPU), and every update runs along contiguous
    rows of the weights' own layout.

    Written for small models too, where elementwise work rivals the products:
    in-place bias adds, one fused ReLU backward (threshold_backward), the softmax
    gradient formed in place from the probabilities.
    """
    dt = x.dtype
    hs = [x.transpose(1, 2)]  # (G, in, B) views
    for i in range(len(ws) - 1):
        hs.append(torch.bmm(wc[i], hs[-1]).add_(bs[i].to(dt)).relu_())  # (baddbmm: slow path on CPU)
    d = torch.bmm(wc[-1], hs[-1]).float().add_(bs[-1])  # logits (G, C, B)
    # gradient of the label-smoothed cross-entropy: softmax - target, scaled by 1/B
    # (a one-hot comparison, not scatter_add_: it fuses into the softmax kernel when compiled)
    onehot = y.unsqueeze(1) == torch.arange(d.shape[1], device=d.device).view(1, -1, 1)
    d = torch.softmax(d, 1)
    if ls:
        d.sub_(ls / d.shape[1])
    d.sub_(onehot.to(d.dtype), alpha=1.0 - ls).mul_(1.0 / y.shape[1])
    for i in range(len(ws) - 1, -1, -1):
        dc = d.to(dt)
        gw = torch.bmm(dc, x if i == 0 else hs[i].transpose(1, 2))  # (G, out, in)
        gb = d.sum(2, keepdim=True)
        if i > 0:
            d = torch.ops.aten.threshold_backward(torch.bmm(wc[i].transpose(1, 2), dc), hs[i], 0).float()
        _sgd_update(ws[i], mws[i], gw, lr, mu, wd, nesterov)
        _sgd_update(bs[i], mbs[i], gb, lr, mu, wd, nesterov)
    return [w.to(dt) for w in ws]


def _call_factory(factory: Callable) -> nn.Module:
    """``factory()``, with a message when it wants arguments."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins, some C callables: just call it
        sig = None
    required = [] if sig is None else [
        n for n, p in sig.parameters.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise ModelError(f"the model factory {_callable_name(factory)} takes arguments {required}, but it is "
                         "called with none (once per model); bind them first: functools.partial(factory, ...) "
                         "or lambda: factory(...).")
    return factory()


def _check_no_embedding(module: nn.Module) -> None:
    for name, m in module.named_modules():
        if isinstance(m, nn.Embedding | nn.EmbeddingBag):
            raise ModelError(
                f"module {name or type(module).__name__!r} is {type(m).__name__}, which needs integer ids, but "
                "TorchLearner feeds every model standardised float inputs; give it float features (e.g. "
                "one-hot), or train such models with your own loop through ts.CallableLearner.")


def _has_lazy_layers(module: nn.Module) -> bool:
    from torch.nn.modules.lazy import LazyModuleMixin

    return any(isinstance(m, LazyModuleMixin) and m.has_uninitialized_params() for m in module.modules())


def _checked_output(probe: nn.Module, x: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The probe's logits for ``x`` (with their graph, for :func:`_trained_names`), checked."""
    try:
        out = probe(x)
    except Exception as e:
        dtypes = {p.dtype for p in probe.parameters()} - {x.dtype}
        hint = (f" Inputs arrive as {x.dtype}, but the model's parameters are {', '.join(map(str, dtypes))}: build "
                "it in float32 (no .double() or .half(); precision='bf16' casts where it pays)." if dtypes else "")
        raise ModelError(f"the model failed on inputs of shape {tuple(x.shape)}: {e}.{hint}") from e
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model returned a {type(out).__name__}, not a tensor of logits; make forward "
                         f"return the logits of shape (batch, {n_classes}) (wrap the model in a module that "
                         "picks them out of its outputs).")
    if out.shape != (2, n_classes):
        raise ModelError(f"the model returned outputs of shape {tuple(out.shape)} for 2 examples; "
                         f"it must return logits of shape (batch, {n_classes}).")
    return out


def _check_own_weights(a: nn.Module, b: nn.Module) -> None:
    """Two builds must not share parameters: every model of a study would then train one set
    (and the user's shared module would be overwritten). Identical starting weights only warn:
    a pretrained start is legitimate, but then the models differ only by their data order."""
    ids = {id(p): n for n, p in a.named_parameters()}
    # a shared frozen backbone is fine (each model's copy is stacked); shared trained weights are not
    shared = [ids[id(p)] for p in b.parameters() if id(p) in ids and p.requires_grad]
    if shared:
        raise ModelError(
            f"the model factory returns modules that share trained parameters ({shared[:3]}"
            f"{' ...' if len(shared) > 3 else ''}): every call must build new weights, or all models of a "
            "study would train one set. Build the layers inside the factory; to start from a pretrained "
            "module, copy it (copy.deepcopy(pretrained)) or freeze it (requires_grad_(False)).")
    pa, pb = list(a.parameters()), list(b.parameters())
    if pa and len(pa) == len(pb) and all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True)):
        warnings.warn("the model factory built identical weights for two different seeds (it ignores "
                      "torch's random state, e.g. a copy of one module): the models of a study will differ "
                      "only by their data and batch order.", stacklevel=4)


def _training_mode(module: nn.Module, keep_eval: frozenset[str]) -> None:
    """``module.train()``, except for the submodules the factory built in eval mode."""
    module.train()
    for name in keep_eval:
        module.get_submodule(name).eval()


_BATCHING_WARNING = "There is a performance drop because we have not yet implemented the batching rule"


@contextlib.contextmanager
def _quiet_batching():
    """Without vmap's "no batching rule" warning, which it repeats on every call (the probe step
    in :meth:`_FuncPopulation._vectorizable` says it once)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BATCHING_WARNING)
        yield


def _slow_ops(caught: list) -> list[str]:
    """The operations named in vmap's "no batching rule" warnings among ``caught``."""
    ops = {m.group(1).rstrip(".") for w in caught
           if (m := re.search(_BATCHING_WARNING + r" for (\S+)", str(w.message)))}
    return sorted(ops)


def _trained_names(probe: nn.Module, out: torch.Tensor) -> set[str]:
    """Parameters that SGD updates: requires_grad and reached from the probe's output ``out``
    (as torch.optim.SGD, which skips parameters without a gradient)."""
    named = [(n, p) for n, p in probe.named_parameters() if p.requires_grad]
    if named and out.requires_grad:
        grads = torch.autograd.grad(out.float().sum(), [p for _, p in named], allow_unused=True)
        named = [(n, p) for (n, p), g in zip(named, grads, strict=True) if g is not None]
    elif named:  # an output that no parameter reaches
        named = []
    if not named:
        raise ModelError("the model has no trainable parameters (requires_grad=True and used by forward): "
                         "there is nothing to train.")
    return {n for n, _ in named}


class _FuncPopulation(_Population):
    """Any nn.Module, stacked with torch.func.stack_module_state and run under vmap."""

    def __init__(self, cfg: TorchLearner, data: Dataset, xtr: torch.Tensor, n_classes: int,
                 dev: torch.device) -> None:
        self.cfg, self.dev = cfg, dev
        if isinstance(cfg.model, str):  # (the closure keeps sizes, not the dataset: trainers are cached)
            in_features, image_shape = int(np.prod(xtr.shape[1:])), data.image_shape
            self.factory = lambda: build_model(cfg.model, in_features=in_features, image_shape=image_shape,
                                               n_classes=n_classes, widths=cfg.widths)
        else:
            self.factory = cfg.model
        self.probe_x = xtr[:2].to(dev)  # also materialises lazy layers in _build
        probe = self._build(0)
        # modules the factory built in eval mode (a pretrained backbone) stay in eval mode while training
        self.eval_names = frozenset(n for n, m in probe.named_modules() if not m.training)
        out = _checked_output(probe, self.probe_x, n_classes)
        other = self._build(1)
        _check_own_weights(probe, other)
        self.trained = _trained_names(probe, out)  # requires_grad and used by forward
        self.act_bytes, self.peak_act_bytes = _activation_bytes(probe, self.probe_x)
        # group sizes follow what a group stacks: every parameter (frozen ones are copied per model too)
        self.n_params = sum(p.numel() for p in probe.parameters()) + sum(b.numel() for b in probe.buffers())
        # the module functional_call runs (on the real device: moving it to "meta" would untie tied
        # weights); a copy, so that nothing the factory shares with the user's objects is touched
        self.base = copy.deepcopy(probe)
        compile_ = cfg.compile
        if compile_ == "auto":
            compile_ = dev.type == "cuda"
        self.compiled = bool(compile_)
        self.autocast = cfg.precision == "bf16"
        # vmap draws a group's random layers from one stream, so a trial's dropout masks would
        # depend on its group: models with Dropout train one by one unless vectorize=True
        dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 and n not in self.eval_names
                      for n, m in probe.named_modules())
        self.vectorized = cfg.vectorize if cfg.vectorize != "auto" else dev.type == "cuda" and not dropout
        if self.vectorized and dropout:
            warnings.warn("vectorize=True with Dropout: a group draws its dropout masks from one stream, so a "
                          "trial's model depends on the other trials of its group (vectorize='auto' trains "
                          "such models one by one, each from its own seed).", stacklevel=3)
        if self.vectorized:
            self.vectorized = self._vectorizable(probe, other, n_classes)
        if not self.vectorized:
            self.compiled = False
        self._steps: dict[tuple, Callable | None] = {}

    def _vectorizable(self, a: nn.Module, b: nn.Module, n_classes: int) -> bool:
        """Try one vectorized gradient step on two models, before any trial trains.

        Some layers have no vmap rule (LSTM, GRU, spectral_norm, a forward that calls
        ``.item()``): under vectorize='auto' their models train one by one (with a warning);
        vectorize=True is refused with the reason.
        """
        from torch.func import stack_module_state

        stacked, buffers = stack_module_state([a, b])
        params = {k: v.detach() for k, v in stacked.items() if k in self.trained}
        fixed = {k: v.detach() for k, v in stacked.items() if k not in self.trained}
        x = self.probe_x.expand(2, *self.probe_x.shape)
        y = torch.zeros(2, len(self.probe_x), dtype=torch.long, device=self.dev)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._grad_fn()(params, fixed, buffers, x, y)
                with torch.no_grad():  # (evaluation takes other kernels: LSTM fails only there)
                    self._eval_fn()(params | fixed, buffers, x)
        except Exception as e:
            if self.cfg.vectorize is True:
                raise ModelError(f"this model cannot be trained vectorized (torch.func.vmap failed: "
                                 f"{str(e).splitlines()[0]}); pass vectorize=False to train its models one by "
                                 "one.") from e
            warnings.warn(f"this model cannot be trained vectorized (torch.func.vmap failed: "
                          f"{str(e).splitlines()[0]}); its models train one by one.", stacklevel=4)
            return False
        slow = _slow_ops(caught)
        if slow:
            warn_once(f"vmap-fallback-{_callable_name(self.factory)}",
                      f"some operations of this model have no vmap batching rule ({', '.join(slow[:3])}): "
                      "they run as a loop over the models of a group, which is slower.")
        return True

    def _eval_fn(self) -> Callable:
        """Every model's logits (float32) for its own batch, vectorized; the module in eval mode."""
        from torch.func import functional_call, vmap

        base, ac = self.base, self._ac
        base.eval()

        def fwd(p, b, xb):
            with ac():
                return functional_call(base, (p, b), (xb,)).float()

        return vmap(fwd, in_dims=(0, 0, 0), randomness="different")

    def _grad_fn(self) -> Callable:
        """Per-model gradients of the training loss, vectorized over the models of a group."""
        from torch.func import functional_call, grad, vmap

        base, ls, ac = self.base, self.cfg.label_smoothing, self._ac
        _training_mode(base, self.eval_names)

        def loss_fn(p, f, b, x, y):
            with ac():
                out = functional_call(base, (p, f, b), (x,))
            return F.cross_entropy(out.float(), y, label_smoothing=ls)

        return vmap(grad(loss_fn), in_dims=(0, 0, 0, 0, 0), randomness="different")

    def _step_cache(self) -> dict:
        # its steps close over this trainer's module, so they are kept with it, not process-wide
        return self._steps

    def auto_group_size(self) -> int:
        if self.dev.type == "cuda":
            return super().auto_group_size()
        if not self.vectorized:
            return 16  # models are trained one by one; the group only batches bookkeeping
        return int(max(1, min(16, 2_000_000 // max(self.n_params, 1))))

    def _build(self, seed) -> nn.Module:
        # (manual_seed also seeds the GPUs: fork_rng gives the caller's GPU streams back too)
        with torch.random.fork_rng(devices=[self.dev] if self.dev.type == "cuda" else []):
            torch.manual_seed(_torch_seed(seed, 0))
            module = _call_factory(self.factory)
            if not isinstance(module, nn.Module):
                raise ModelError(f"the model factory returned {type(module).__name__}, not an nn.Module.")
            check_no_running_stats(module)
            _check_no_embedding(module)
            if _has_lazy_layers(module):  # sized by a first forward pass, from this seed's CPU stream
                with torch.no_grad():   # (on the CPU: the same weights whatever the device)
                    module(self.probe_x.cpu())
            module = module.to(self.dev)
        return module

    def _ac(self):
        if self.autocast:
            return torch.autocast(self.dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self, xtr, ytr, masks, seeds):
        if not self.vectorized:
            return self._train_each(xtr, ytr, masks, seeds)
        from torch.func import stack_module_state

        cfg = self.cfg
        models = [self._build(s) for s in seeds]
        stacked, buffers = stack_module_state(models)
        # trained parameters get gradients and updates; frozen (requires_grad=False) and unused
        # ones ride along as constants, as torch.optim.SGD leaves parameters without a gradient
        params = {k: v.detach().clone() for k, v in stacked.items() if k in self.trained}
        fixed = {k: v.detach() for k, v in stacked.items() if k not in self.trained}
        moms = {k: torch.zeros_like(v) for k, v in params.items()}
        grad_fn = self._grad_fn()
        mu, wd, nest, ls = cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.label_smoothing

        def step(p, f, m, b, x, y, lr):
            grads = grad_fn(p, f, b, x, y)
            for k in p:
                _sgd_update(p[k], m[k], grads[k], lr, mu, wd, nest)

        key = ("func", _callable_name(self.factory) if not isinstance(cfg.model, str) else cfg.model,
               tuple(xtr.shape[1:]), len(seeds), cfg.batch_size, cfg.precision, str(self.dev), mu, wd, nest, ls,
               cfg.widths)
        step = self._get_step(key, step)
        schedule = _Schedule(cfg, masks, seeds, self.dev)
        aug = self._augmenter(xtr, seeds, schedule.shape) if cfg.augment else None
        seed_all = _torch_seed(int(np.bitwise_xor.reduce(np.asarray([_seed_int(s) for s in seeds], dtype=np.uint64))), 3)
        with torch.random.fork_rng(devices=[self.dev] if self.dev.type == "cuda" else []), _quiet_batching():
            torch.manual_seed(seed_all)  # for dropout-like randomness inside the model
            for t, it, lr in schedule:
                xb = aug(t, it) if aug is not None else gather_rows(xtr, it)
                step(params, fixed, moms, buffers, xb, gather_rows(ytr, it), lr)
        return params | fixed, buffers

    def _train_each(self, xtr, ytr, masks, seeds):
        """The same recipe, one plain module at a time (autograd; faster on CPU)."""
        cfg = self.cfg
        shape = (_Schedule.steps_of(cfg, masks), len(seeds), cfg.batch_size)  # (the augmentation streams' length)
        aug = self._augmenter(xtr, seeds, shape) if cfg.augment else None
        modules = []
        for k, seed in enumerate(seeds):
            module = self._build(seed)
            _training_mode(module, self.eval_names)
            params = [p for n, p in module.named_parameters() if n in self.trained]
            moms = [torch.zeros_like(p) for p in params]
            with torch.random.fork_rng(devices=[self.dev] if self.dev.type == "cuda" else []):
                torch.manual_seed(_torch_seed(seed, 3))  # dropout-like randomness inside the model
                # its own steps only: the steps of the group's longer models have learning rate 0
                for t, it, lr in _Schedule(cfg, masks[k:k + 1], seeds[k:k + 1], self.dev):
                    it = it[0]
                    xb = aug(t, it, k) if aug is not None else gather_rows(xtr, it)
                    with self._ac():
                        out = module(xb)
                    loss = F.cross_entropy(out.float(), gather_rows(ytr, it), label_smoothing=cfg.label_smoothing)
                    grads = torch.autograd.grad(loss, params)
                    with torch.no_grad():
                        for p, m, g in zip(params, moms, grads, strict=True):
                            _sgd_update(p, m, g, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
            modules.append(module)
        return modules

    @torch.no_grad()
    def _evaluate_each(self, modules, x, y):
        preds, probs = [], []
        for module in modules:
            module.eval()
            lp, pp = [], []
            for s in range(0, len(y), self.cfg.eval_batch_size):
                with self._ac():
                    out = module(x[s:s + self.cfg.eval_batch_size])
                logp = torch.log_softmax(out.float(), -1)
                yb = y[s:s + self.cfg.eval_batch_size]
                lp.append(logp.argmax(-1))
                pp.append(logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1).exp())
            preds.append(torch.cat(lp))
            probs.append(torch.cat(pp))
        return torch.stack(preds).cpu().numpy(), torch.stack(probs).cpu().numpy()

    def _augmenter(self, xtr, seeds, shape):
        """Per-model random crops (zero padding) and flips, drawn from each model's own stream."""
        t_max, g, b = shape
        pad = self.cfg.crop_pad
        _, c, h, w = xtr.shape
        xp = F.pad(xtr, (pad, pad, pad, pad)) if pad else xtr
        # kept on the host in int16 and moved a step at a time: for a whole run of a large group
        # they are GiBs (the draws are those of the int64 arrays earlier versions kept)
        offs = np.empty((t_max, g, b, 2), dtype=np.int16)
        flips = np.zeros((t_max, g, b), dtype=bool)
        for k, s in enumerate(seeds):
            rng = np.random.default_rng([_seed_int(s), 2])
            offs[:, k] = rng.integers(0, 2 * pad + 1, size=(t_max, b, 2))
            if self.cfg.hflip:
                flips[:, k] = rng.random((t_max, b)) < 0.5
        ar_h = torch.arange(h, device=self.dev)
        ar_w = torch.arange(w, device=self.dev)

        def aug(t, it, k=None):
            """Step t's augmented batch: (G, B, C, H, W), or model k's alone: (B, C, H, W)."""
            sel = slice(None) if k is None else k
            n = it.reshape(-1)
            o = torch.as_tensor(offs[t, sel].reshape(-1, 2), device=self.dev).long()
            flip = torch.as_tensor(flips[t, sel].reshape(-1, 1), device=self.dev)
            cols = torch.where(flip, w - 1 - ar_w, ar_w) + o[:, 1:2]
            rows = ar_h + o[:, 0:1]
            out = xp[n[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
            out = out.permute(0, 3, 1, 2)
            return out if k is not None else out.reshape(g, b, c, h, w)
        return aug

    @torch.no_grad()
    def evaluate(self, state, x, y):
        if not self.vectorized:
            return self._evaluate_each(state, x, y)

        params, buffers = state
        fn = self._eval_fn()
        preds, probs = [], []
        g = next(iter(params.values())).shape[0]  # (there is a trained parameter: _trained_names)
        rows = _eval_rows(self, g)
        with _quiet_batching():
            for s in range(0, len(y), rows):
                xb = x[s:s + rows]
                # a shared batch expanded (no copy) to every model; vmap of GroupNorm refuses in_dims=None
                logp = torch.log_softmax(fn(params, buffers, xb.expand(g, *xb.shape)), -1)
                yb = y[s:s + rows]
                preds.append(logp.argmax(-1))
                probs.append(logp.gather(-1, yb.expand(g, -1).unsqueeze(-1)).squeeze(-1).exp())
        return torch.cat(preds, 1).cpu().numpy(), torch.cat(probs, 1).cpu().numpy()

