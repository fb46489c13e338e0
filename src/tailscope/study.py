"""Study: the facade that ties a dataset, a learner and a design to a trial store."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from tailscope.data.dataset import DataError, Dataset, recorded_rows
from tailscope.design import Design, theoretical_se_bound
from tailscope.estimate import EstimateOptions, estimate, trial_accuracies
from tailscope.learners.base import Learner, LearnerError
from tailscope.learners.registry import learner_from_source, learner_from_spec
from tailscope.runner import Job, check_backend, run_blocks, select_shard
from tailscope.scores import Scores, scores_location
from tailscope.store import StoreError, TrialStore, is_remote, learner_label, study_location


class Study:
    """A subsampled memorization/influence study (Feldman & Zhang's Algorithm 1).

    Parameters
    ----------
    data : Dataset
    learner : Learner
        The randomized training algorithm (e.g. ``TorchLearner("mlp")`` or
        ``SklearnLearner(LogisticRegression())``).
    trials : int
        Number of models t (>= 2). Raising it later and running again adds trials.
    ratio : float
        Subset fraction q in (0, 1); the paper uses 0.7.
    design : {"uniform", "balanced"}
    seed : int
        Everything random (subsets, learner seeds) derives from it.
    path : str, Path or None
        Study directory; the trial store lives in ``path/trials.zarr`` and scores in
        ``path/scores``. An fsspec URL (``s3://...``, ``memory://name``) works too; None makes a
        study in this process's memory (nothing written to disk, gone when the process ends).
    block_size : int or None
        Trials per unit of work and per store chunk (default: the block size of the study already
        stored at ``path``, else the learner's preference).
    design_block : int
        Trials per block of the balanced design.
    """

    def __init__(self, data: Dataset, learner: Learner, trials: int = 200, ratio: float = 0.7,
                 design: str = "uniform", seed: int = 0, path: str | Path = "runs/study",
                 block_size: int | None = None, design_block: int = 20):
        if not isinstance(data, Dataset):
            raise DataError(f"data must be a tailscope Dataset, got {type(data).__name__}; "
                            "build one with ts.load_dataset(...) or ts.from_arrays(...).")
        if isinstance(learner, type) and issubclass(learner, Learner):
            raise TypeError(f"learner must be a Learner instance, got the class {learner.__name__}; "
                            f"build one, e.g. ts.TorchLearner('mlp') or ts.SklearnLearner(est).")
        if not isinstance(learner, Learner):
            raise TypeError(f"learner must be a tailscope Learner, got {type(learner).__name__}; wrap a "
                            "scikit-learn estimator with ts.SklearnLearner(est).")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an integer, got {seed!r}.")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds numpy's generators), got {seed}.")
        for name, value in (("block_size", block_size), ("design_block", design_block)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
                raise TypeError(f"{name} must be an integer, got {value!r}.")
        if isinstance(trials, bool) or not isinstance(trials, int | np.integer) or trials < 2:
            raise ValueError(f"trials must be an integer >= 2 (estimates contrast trials with and "
                             f"without each example), got {trials!r}.")
        #: made with path=None: lives in this process's memory only (quick looks, notebooks)
        self.in_memory = path is None
        if path is None:
            path = f"memory://study-{uuid.uuid4().hex[:12]}"
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a folder path or URL (str or pathlib.Path), or None for a study in "
                            f"memory, got {type(path).__name__}.")
        if block_size is None:  # resuming: the store's own block size, so it need not be repeated
            block_size = _stored_block(path) or learner.preferred_block
        block_size = int(block_size)
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}.")
        self.data = data
        self.learner = learner
        self.design = Design(n=data.n_train, ratio=float(ratio), kind=design, seed=int(seed),
                             block=int(design_block))
        self.trials = int(trials)
        self.block_size = block_size
        # absolute (local) or a repaired URL: workers and Ray tasks may run in other directories
        loc = study_location(path)
        self.path = loc if is_remote(loc) else str(Path(loc).absolute())
        if not is_remote(loc) and Path(self.path).is_file():
            raise ValueError(f"path {path} is a file, not a folder; a study is a folder (new or existing): "
                             "give another path.")
        self._store: TrialStore | None = None

    # ------------------------------------------------------------- config
    @property
    def config(self) -> dict:
        """What the study is (dataset fingerprint and shape, learner spec, design, block size,
        trials): recorded in the store, which refuses another config."""
        d = self.data.describe()
        return {
            "dataset": {"fingerprint": d["fingerprint"], "n_train": d["n_train"], "n_test": d["n_test"],
                        "classes": self.data.classes, "x_shape": d["x_shape"], "x_dtype": d["x_dtype"],
                        "image_shape": d["image_shape"],
                        # a pixel_max the user set scales the inputs (built-in sets keep older hashes)
                        **({"pixel_max": self.data.meta["pixel_max"]} if self.data.meta.get("pixel_max_set") else {})},
            "source": {"dataset": self.data.meta.get("spec", self.data.name), "name": self.data.name,
                       "options": self.data.meta.get("spec_options", {}),
                       "learner": getattr(self.learner, "source", None)},
            "learner": self.learner.spec(),
            "design": self.design.spec(),
            "block_size": self.block_size,
            "trials": self.trials,
        }

    @property
    def store(self) -> TrialStore:
        """The trial store, created (or checked against this config and grown) on first use,
        and grown again when ``trials`` was raised since."""
        if self._store is None or self._store.trials < self.trials:
            self._store = TrialStore.create(self.path, json.loads(json.dumps(self.config, default=str)),
                                            self.data.y_train, self.data.y_test, rows=recorded_rows(self.data))
        return self._store

    # ------------------------------------------------------------- running
    def run(self, workers: int = 1, backend: str = "auto", progress: bool = True,
            shard: tuple[int, int] | str | None = None, **backend_options) -> dict:
        """Train every trial not yet done (of this shard); returns a summary dict.

        Parameters
        ----------
        workers : int
            Local worker processes (``backend="auto"``: more than 1 means processes).
        backend : {"auto", "local", "processes", "ray"}
        progress : bool
            Show a progress bar.
        shard : (i, N) or "i/N", optional
            Train only the blocks with index mod N == i (Slurm arrays; shards may run at once).
        **backend_options
            For ``backend="ray"``: ``address``, ``gpus_per_block``, ``cpus_per_block``,
            ``num_cpus``, ``max_retries``, ``retry_exceptions``, ``max_in_flight``,
            ``threads_per_task``, ``init_options`` (see ``tailscope.backends.ray.run_ray``).

        Returns
        -------
        dict
            ``trained`` (trials trained now), ``seconds``, ``done`` and ``trials`` of the store.
        """
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}.")
        workers = int(workers)
        if shard is not None:  # bad settings are refused before the store is created
            select_shard({}, shard)
        check_backend(backend)
        self.learner.check_data(self.data)
        if backend != "ray":  # (a Ray driver may lack the GPUs its tasks will get)
            self.learner.check_here()
        if self.path.startswith("memory://") and (workers > 1 or backend in ("processes", "ray")):
            raise ValueError("a memory:// study lives in this process only, so other processes cannot write it; "
                             "run it with workers=1 (local backend), or use a path or URL they share.")
        store = self.store
        store.add_digests()  # a store made before per-trial checksums gets them for the trials to come
        if store.trials > self.trials:
            warnings.warn(f"the study at {self.path} already holds {store.trials} trials, more than the "
                          f"{self.trials} asked for; all {store.trials} are kept and estimated from. Use "
                          "another directory for a smaller study.", stacklevel=2)
        blocks = select_shard(store.missing(), shard)
        job = Job(store_path=self.path, data=self.data, learner=self.learner, design=self.design,
                  config_hash=store.group.attrs.get("config_hash"))
        todo = int(sum(len(t) for t in blocks.values()))
        seconds = run_blocks(job, blocks, workers=workers, backend=backend, progress=progress,
                             **backend_options)
        return {"trained": todo, "seconds": seconds, "done": int(store.done().sum()),
                "trials": store.trials}

    # ------------------------------------------------------------- results
    @property
    def scores_dir(self) -> Path | str:
        """``<path>/scores``: a local Path, or a URL string for a study on an fsspec URL."""
        return scores_location(self.path)

    def estimate(self, options: EstimateOptions | None = None, save: bool = True, **kwargs) -> Scores:
        """Estimate from every done trial; writes ``scores/`` unless ``save=False``.

        Keyword arguments are fields of :class:`EstimateOptions` (``infl_threshold``,
        ``top_k``, ``full_matrix_path``, ...).
        """
        _check_option_names(kwargs)
        if options is not None and kwargs:  # both: the keywords change the given options
            options = dataclasses.replace(options, **kwargs)
        options = options or EstimateOptions(**kwargs)
        store = self._existing_store()
        scores = estimate(store, options)
        if scores.trials < store.trials:
            warnings.warn(f"estimated from {scores.trials} of the {store.trials} planned trials (the others are not "
                          "done: study.run() trains them); the standard errors are those of "
                          f"{scores.trials} trials.", stacklevel=2)
        if save:
            scores.save(self.scores_dir)
        return scores

    def info(self) -> dict:
        """Config, progress and mean accuracies of the stored trials (``tailscope info``)."""
        return study_info(self._existing_store())

    def _existing_store(self) -> TrialStore:
        """The store as it is, for reading: not created, grown or rewritten (unlike :attr:`store`)."""
        if self._store is not None:
            return self._store
        store = TrialStore.open(self.path)
        store.check_study(json.loads(json.dumps(self.config, default=str)))
        return store

    @classmethod
    def open(cls, path: str | Path, data: Dataset | None = None, learner: Learner | None = None) -> Study:
        """Reopen an existing study; the dataset is reloaded from its recorded source if not given."""
        from tailscope.data import load_dataset

        store = TrialStore.open(path)
        cfg = store.config
        spec, loaded = cfg["source"]["dataset"], data is None
        # the recorded loader options (split, pixel_max, ...) also apply to data given by spec
        options = dict(cfg["source"].get("options", {}))
        if loaded and _DATA_OVERRIDE is not None:
            same_loader = str(spec).split(":", 1)[0] == str(_DATA_OVERRIDE[0]).split(":", 1)[0]
            spec, options = _DATA_OVERRIDE[0], {**(options if same_loader else {}), **_DATA_OVERRIDE[1]}
        if loaded:
            try:
                data = load_dataset(spec, **options)
            except (DataError, OSError, TypeError) as e:
                raise StoreError(
                    f"cannot reload the dataset of the study at {path} (recorded as {spec!r}): {e} If it was "
                    "made from in-memory arrays (ts.from_arrays, from_torch, ...) or the file moved, pass the "
                    "data: Study.open(path, data=...) or write_report(path, data=...); on the command line, "
                    "`tailscope report DIR --dataset SPEC` or `tailscope analyze --dataset SPEC NAME DIR`.") from e
        if (loaded and data.fingerprint != cfg["dataset"]["fingerprint"] and str(spec).startswith("npz:")
                and "split_key" not in options):
            # made before npz files' own "split" key was honoured: reload as it was loaded then
            with warnings.catch_warnings():  # the split key is ignored on purpose here
                warnings.filterwarnings("ignore", message=".*npz keys .* were not used")
                legacy = load_dataset(spec, **options, split_key=None)
            data = legacy if legacy.fingerprint == cfg["dataset"]["fingerprint"] else data
        if data.fingerprint != cfg["dataset"]["fingerprint"]:
            recorded = cfg["source"].get("options") or {}
            raise StoreError(f"dataset {data.name!r} is not the one the study at {path} was made with "
                             "(fingerprints differ); pass the original data"
                             + (f" (loaded with the study's recorded options {recorded})" if recorded else "") + ".")
        if learner is None:
            try:  # rebuilt only to train more; estimates, reports and analyses do not need it
                learner = learner_from_source(cfg["source"].get("learner")) or learner_from_spec(cfg["learner"])
            except (ValueError, TypeError) as e:  # settings this version refuses (e.g. made by an older one)
                learner = _StoredLearner(cfg["learner"], reason=str(e))
            learner = learner or _StoredLearner(cfg["learner"])
        d = cfg["design"]
        study = cls(data, learner, trials=store.trials, ratio=d["ratio"], design=d["kind"], seed=d["seed"],
                    path=path, block_size=cfg["block_size"], design_block=d.get("block", 20))
        study._store = store
        return study


_DATA_OVERRIDE: tuple[str, dict] | None = None


def use_data(spec: str | None, options: dict | None = None) -> None:
    """Make :meth:`Study.open` load a study's data from ``spec`` instead of its recorded source
    (a moved file), with the study's recorded loader options updated by ``options``; None clears it.

    The fingerprint check still applies: only the study's own data is accepted.
    """
    global _DATA_OVERRIDE
    _DATA_OVERRIDE = None if spec is None else (spec, dict(options or {}))


def _stored_block(path) -> int | None:
    """The block size of the study stored at ``path``, or None when there is none (yet)."""
    try:
        return TrialStore.open(path).block
    except StoreError:
        return None


class _StoredLearner(Learner):
    """Stands in for the learner of a reopened study: enough to estimate, not to train."""

    def __init__(self, spec: dict, reason: str = ""):
        self._spec = spec
        self._reason = reason

    def spec(self) -> dict:
        return self._spec

    def fit_predict(self, data, masks, seeds):
        raise self.error()

    def error(self) -> LearnerError:
        """Why no trial can be trained with this stand-in, and how to pass the learner."""
        return LearnerError(
            f"the study's learner ({learner_label(self._spec, ': ')}) "
            f"cannot be rebuilt from the store ({self._reason or 'it was made in Python'}), so no trials can be "
            "trained for it: in "
            "Python pass it, Study.open(path, learner=...) or the analysis's learner= argument; on the command "
            "line, studies made by `tailscope run` rebuild their learner.")


def _check_option_names(kwargs: dict) -> None:
    """A TypeError naming the EstimateOptions field meant (``threshold`` is the CLI's name)."""
    import difflib

    names = [f.name for f in dataclasses.fields(EstimateOptions)]
    for key in kwargs:
        if key not in names:
            guess = ["infl_threshold"] if key == "threshold" else difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean {guess[0]}?" if guess else ""
            raise TypeError(f"estimate() got an unknown option {key!r}.{hint} Options: {', '.join(names)}.")


def study_info(store: TrialStore) -> dict:
    """Config, progress and in/out accuracy of a store (cheap: reads done flags and one pass of rows).

    A damaged store still shows its config and what could be read, with ``damaged`` saying
    what could not (``tailscope verify`` then finds the trials).
    """
    cfg = store.config
    source = cfg.get("source") or {}
    out = {"path": store.path, "dataset": source.get("name"),
           # where it came from and with which loader options (to reload it, or to see why a rerun differs)
           "dataset_source": {"spec": source.get("dataset"), "options": source.get("options") or {},
                              "n_train": cfg["dataset"].get("n_train"), "n_test": cfg["dataset"].get("n_test"),
                              "classes": len(cfg["dataset"].get("classes") or [])},
           "learner": cfg["learner"],
           "design": cfg["design"], "block_size": cfg["block_size"], "trials": store.trials,
           "done": None, "missing_blocks": None, "mean_acc_in": None, "mean_acc_out": None,
           "mean_test_acc": None, "se_bound": None}
    try:
        done = store.done()
        out.update(done=int(done.sum()), missing_blocks=sorted(store.missing()))
        if out["done"]:
            out["se_bound"] = theoretical_se_bound(out["done"], cfg["design"]["ratio"])
        out.update(_accuracies(store))
    except StoreError as e:
        out["damaged"] = str(e)
    return out


def _accuracies(store: TrialStore) -> dict:
    """Mean accuracy in, out and on the test set, over trials (as the scores' summary averages them)."""
    y_tr, y_te = store.y_train, store.y_test
    acc_in, acc_out, acc_test = [], [], []
    for blk in store.iter_blocks(fields=("train_pred", "test_pred")):  # probabilities not needed
        a_in, a_out, a_test = trial_accuracies(blk.preds.train_pred == y_tr, blk.mask, blk.preds.test_pred == y_te)
        acc_in += a_in.tolist()
        acc_out += a_out.tolist()
        acc_test += a_test.tolist()
    return {"mean_acc_in": float(np.nanmean(acc_in)) if acc_in else None,
            "mean_acc_out": float(np.nanmean(acc_out)) if acc_out else None,
            "mean_test_acc": float(np.mean(acc_test)) if acc_test else None}
