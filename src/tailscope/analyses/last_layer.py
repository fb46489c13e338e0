"""Which layers memorize? Memorization when only the last k layers are trained.

Feldman & Zhang (Sec. 4) trained a network on the full data, froze all but its last
layer and re-estimated memorization training only that layer: it memorized almost
nothing (38 examples with mem >= 0.25 vs 18,099 for the whole network on CIFAR-100).

How this analysis does it, without touching the population trainer:

1. Train one network of the study's architecture (built-in ``mlp`` or ``cnn`` of
   :class:`~tailscope.learners.torch_population.TorchLearner`) on the *full* training
   set with the study learner's hyperparameters (SGD, schedule, label smoothing; no
   augmentation) and a fixed seed.
2. For each k, freeze everything below the last k parametrised layers and record the
   activations at the input of those layers, for train and test examples: a feature
   :class:`~tailscope.data.dataset.Dataset` (no image shape).
3. Run an ordinary subsampled study (same ratio, design and number of trials as the
   study by default) on those features with a learner that has exactly the
   architecture of the last k layers: k=1 is ``TorchLearner("linear")``; k=2 is an
   ``mlp`` whose hidden width is that of the layer below, and so on. **The top layers
   are re-initialised and trained from scratch on the frozen features** (with the
   study's optimiser settings); TorchLearner standardises each feature first, an
   affine change the first retrained layer can absorb.
4. Report the number of examples with mem >= 0.25 and the mean mem for each k and for
   the full network (the study's own scores).

``cnn`` supports k <= 2 (its top is hidden Linear + output Linear; retraining conv
layers on frozen maps is not offered).
"""

from __future__ import annotations

import math

import numpy as np

from tailscope.analyses.base import (
    AnalysisResult,
    check_count,
    check_unit,
    open_study_scores,
    scores_of_first,
    settled_child_study,
)
from tailscope.data.dataset import Dataset
from tailscope.scores import at_least

NAME = "last_layer"
SUPPORTED = ("mlp", "cnn")
_HYPER = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "schedule", "warmup",
          "label_smoothing", "precision", "device", "num_threads")


def torch_learner_of(learner):
    """The study's learner as a TorchLearner with a built-in mlp/cnn, or a clear error."""
    from tailscope.learners.torch_population import TorchLearner

    if not isinstance(learner, TorchLearner):
        spec = learner.spec() if hasattr(learner, "spec") else {}
        if spec.get("learner") == "torch_population" and spec.get("model") in SUPPORTED:
            keys = ("widths", "epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "schedule",
                    "warmup", "label_smoothing", "precision")
            learner = TorchLearner(model=spec["model"], **{k: spec[k] for k in keys if k in spec})
        else:
            raise ValueError(f"last-layer memorization needs a study trained with the built-in torch 'mlp' or 'cnn' "
                             f"learner (TorchLearner), got {learner!r}; run the study with `-l mlp` or `-l cnn`.")
    if learner.model not in SUPPORTED:
        raise ValueError(f"last-layer memorization supports the built-in models {SUPPORTED}, got model="
                         f"{learner.model!r}; a linear model has only one layer, and resnet/custom modules are "
                         "not split here.")
    return learner


def _lr_at(step: int, total: int, learner) -> float:
    if learner.schedule == "constant":
        return learner.lr
    warm = max(1, int(round(learner.warmup * total))) if learner.warmup > 0 else 0
    if step < warm:
        return learner.lr * (step + 1) / warm
    span = max(total - warm, 1)
    r = step - warm
    if learner.schedule == "onecycle":
        return learner.lr * (span - r) / span
    return learner.lr * 0.5 * (1 + math.cos(math.pi * r / span))


def train_full_network(learner, data: Dataset, seed: int = 0):
    """Train one network of the learner's architecture on all of ``data``'s training set.

    Returns ``(module, x_train, x_test)`` with the standardised input tensors the
    network sees (the same preparation as TorchLearner).
    """
    import torch
    import torch.nn.functional as F

    from tailscope.learners.torch_models import build_model
    from tailscope.learners.torch_population import prepare_inputs

    learner = torch_learner_of(learner)
    images = learner.model == "cnn"
    xtr, xte = prepare_inputs(data, images=images)
    ytr = torch.as_tensor(np.asarray(data.y_train, dtype=np.int64))
    old = torch.get_num_threads()
    if learner.num_threads:
        torch.set_num_threads(learner.num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = build_model(learner.model, in_features=int(np.prod(xtr.shape[1:])),
                                image_shape=data.image_shape, n_classes=data.n_classes, widths=learner.widths)
        opt = torch.optim.SGD(model.parameters(), lr=learner.lr, momentum=learner.momentum,
                              weight_decay=learner.weight_decay, nesterov=learner.nesterov)
        n, b = len(ytr), learner.batch_size
        spe = -(-n // b)
        total = spe * learner.epochs
        gen = torch.Generator().manual_seed(int(seed) + 1)
        step = 0
        model.train()
        for _ in range(learner.epochs):
            order = torch.randperm(n, generator=gen)
            for s in range(spe):
                idx = order[s * b:(s + 1) * b]
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, total, learner)
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx], label_smoothing=learner.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
        model.eval()
    finally:
        torch.set_num_threads(old)
    return model, xtr, xte


def _param_layers(model) -> list[int]:
    from torch import nn

    return [i for i, m in enumerate(model) if isinstance(m, nn.Linear | nn.Conv2d)]


def max_k(model) -> int:
    """How many trailing parametrised layers form a Linear/ReLU stack (the k this analysis can retrain)."""
    from torch import nn

    layers = _param_layers(model)
    k = 0
    for i in reversed(layers):
        if not isinstance(model[i], nn.Linear):
            break
        k += 1
    return k


def top_architecture(model, k: int) -> tuple[str, tuple[int, ...]]:
    """``("linear", ())`` or ``("mlp", widths)``: the architecture of the model's last k layers."""
    mk = max_k(model)
    if not 1 <= k <= mk:
        raise ValueError(f"k must be between 1 and {mk} for this network (its last {mk} parametrised layers are a "
                         f"Linear/ReLU stack; convolutions are not retrained here), got k={k}.")
    lin = _param_layers(model)[-k:]
    widths = tuple(int(model[i].out_features) for i in lin[:-1])
    return ("linear", ()) if k == 1 else ("mlp", widths)


def layer_features(model, x, k: int, batch: int = 2048) -> np.ndarray:
    """Activations (N, D) at the input of the model's last k parametrised layers."""
    import torch

    split = _param_layers(model)[-k]
    body = model[:split]
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(body(x[s:s + batch]).reshape(min(batch, len(x) - s), -1))
    return torch.cat(out).numpy().astype(np.float32)


def feature_dataset(data: Dataset, model, xtr, xte, k: int) -> Dataset:
    """The frozen network's activations at the input of its last k layers, as a Dataset."""
    from tailscope.data import from_arrays

    ftr, fte = layer_features(model, xtr, k), layer_features(model, xte, k)
    return from_arrays(ftr, np.asarray(data.y_train), fte, np.asarray(data.y_test), classes=list(data.classes),
                       name=f"{data.name}:last{k}", image_shape=None,
                       meta={"last_layer_k": k, "parent": data.fingerprint})


def last_layer_memorization(study, ks=None, trials: int | None = None, seed: int = 0, scores=None,
                            threshold: float = 0.25, progress: bool = False, learner=None) -> AnalysisResult:
    """Memorization when only the last k layers are (re)trained on frozen features, vs the full network.

    Parameters
    ----------
    study : Study or path
        A study trained with ``TorchLearner`` ``mlp`` or ``cnn``.
    ks : sequence of int, optional
        Numbers of top layers to retrain (default: every k below the full depth that
        is a Linear/ReLU stack, e.g. (1,) for a one-hidden-layer mlp, (1, 2) for cnn).
    trials : int, optional
        Trials of each k's study (default: the study's own, so the noise is comparable).
    seed : int
        Seed of the full-data network and of the k studies' subsets.
    threshold : float
        "Memorized" means mem >= threshold (paper: 0.25).
    learner : TorchLearner, optional
        The study's learner, when it cannot be rebuilt from the store (a study made in
        Python); its architecture and hyperparameters are the ones split and retrained.

    Returns
    -------
    AnalysisResult named ``last_layer``; each k's trials and scores live in
    ``analyses/last_layer/k<k>/``.
    """
    threshold = check_unit(threshold, "threshold", "--threshold")
    if trials is not None:
        check_count(trials, "trials", 2, "--trials")
    study, scores = open_study_scores(study, scores, learner=learner)
    learner = torch_learner_of(learner or study.learner)
    data = study.data
    ks = _checked_ks(learner, data, ks)  # on the untrained architecture: before the full network is trained
    model, xtr, xte = train_full_network(learner, data, seed=seed)
    n_layers = len(_param_layers(model))
    import torch

    with torch.no_grad():
        frozen_train_acc = float((model(xtr).argmax(1).numpy() == data.y_train).mean())
        frozen_test_acc = float((model(xte).argmax(1).numpy() == data.y_test).mean())
    trials = int(trials or study.trials)
    from tailscope.learners.torch_population import TorchLearner

    rows = []
    for k in ks:
        arch, widths = top_architecture(model, k)
        feats = feature_dataset(data, model, xtr, xte, k)
        top = TorchLearner(arch, widths=widths or None, **{h: getattr(learner, h) for h in _HYPER})
        # an earlier run with other options (features, top model, seed) is replaced, with a warning
        sk = settled_child_study(study, f"{NAME}/k{k}", what="last-layer study", data=feats, learner=top,
                                 trials=trials, seed=seed)
        sc = scores_of_first(sk, trials, progress)
        rows.append({"k": k, "layers": arch if k == 1 else f"mlp{list(widths)}", "feature_dim": feats.x_train.shape[1],
                     "n_mem": int(np.sum(at_least(sc.mem, threshold))), "mean_mem": float(np.nanmean(sc.mem)),
                     "n_mem_sd": count_sd(sc.mem, sc.mem_se, threshold), "test_acc": float(np.mean(sc.trial_test_acc)), "trials": int(sc.trials)})
    full = {"k": n_layers, "layers": "full network (study)", "feature_dim": int(np.prod(data.x_train.shape[1:])),
            "n_mem": int(np.sum(at_least(scores.mem, threshold))), "mean_mem": float(np.nanmean(scores.mem)),
            "n_mem_sd": count_sd(scores.mem, scores.mem_se, threshold), "test_acc": float(np.mean(scores.trial_test_acc)), "trials": int(scores.trials)}
    summary = {"model": learner.model, "widths": list(learner.widths) if learner.widths else None,
               "threshold": threshold, "n_train": data.n_train, "frozen_train_acc": frozen_train_acc,
               "frozen_test_acc": frozen_test_acc, "full_n_mem": full["n_mem"], "full_mean_mem": full["mean_mem"],
               "full_trials": full["trials"]}
    for r in rows:
        summary[f"k{r['k']}_n_mem"] = r["n_mem"]
        summary[f"k{r['k']}_mean_mem"] = r["mean_mem"]
        summary[f"k{r['k']}_test_acc"] = r["test_acc"]
    return AnalysisResult(name=NAME, title="Which layers memorize: retraining only the last k layers",
                          summary=summary, reading=_reading(rows, full, summary),
                          data={"rows": rows + [full]}, figure=_figure(rows, full, threshold, learner.model))


def _checked_ks(learner, data: Dataset, ks) -> list[int]:
    """The k to retrain (default: every k below the full depth that is a Linear/ReLU stack), each
    checked on the learner's architecture, which does not depend on the trained weights."""
    from tailscope.learners.torch_models import build_model

    model = build_model(learner.model, in_features=int(np.prod(data.x_train.shape[1:])),
                        image_shape=data.image_shape, n_classes=data.n_classes, widths=learner.widths)
    n_layers, mk = len(_param_layers(model)), max_k(model)
    if ks is None:
        return [k for k in range(1, mk + 1) if k < n_layers] or [1]
    ks = sorted({check_count(k, "k", 1, "--k") for k in ks})
    top = min(mk, n_layers - 1)  # k = every layer would freeze nothing: the study itself again
    for k in ks:
        if not 1 <= k <= top:
            raise ValueError(f"k must be between 1 and {top} for this network, got k={k} (k counts its last "
                             f"parametrised layers: a Linear/ReLU stack of {mk} at the top, of {n_layers} in all, "
                             "and retraining every layer would freeze nothing).")
    return ks


def count_sd(mem, se, threshold: float) -> float:
    """Standard deviation of the count of examples with mem >= ``threshold`` from the estimates'
    noise: each example crosses with probability Phi((mem - threshold) / se), independently."""
    from math import erf, sqrt

    mem, se = np.asarray(mem, float), np.asarray(se, float)
    ok = np.isfinite(mem) & np.isfinite(se)
    if not ok.any():
        return float("nan")
    m, e = mem[ok], se[ok]
    z = np.where(e > 0, (m - threshold) / np.where(e > 0, e, 1.0), np.where(m >= threshold, np.inf, -np.inf))
    p = np.array([0.5 * (1 + erf(v / sqrt(2))) if np.isfinite(v) else float(v > 0) for v in z])
    return float(np.sqrt(np.sum(p * (1 - p))))


def _article(word: str) -> str:
    """'An' before a vowel sound (an mlp, an rnn), else 'A'."""
    w = str(word).lower()
    return "An" if w[:1] in "aeiou" or (w[:1] in "fhlmnrsx" and w in {"mlp", "rnn", "lstm", "mlp-mixer"}) else "A"


def _reading(rows: list[dict], full: dict, s: dict) -> str:
    parts = [f"k={r['k']} ({r['layers']} on {r['feature_dim']} frozen features): {r['n_mem']} examples with "
             f"mem >= {s['threshold']}, mean mem {r['mean_mem']:.4f}, test accuracy {r['test_acc']:.3f}"
             for r in rows]
    verdict = _verdict(rows[0], full)
    return (f"{_article(s['model'])} {s['model']} trained on all {s['n_train']} training examples (train accuracy "
            f"{s['frozen_train_acc']:.3f}, test {s['frozen_test_acc']:.3f}) was frozen, and memorization was "
            f"re-estimated training only its last k layers from scratch on its activations. "
            + "; ".join(parts) + f". The full network (the study, {full['trials']} trials): {full['n_mem']} "
            f"examples, mean mem {full['mean_mem']:.4f}. " + verdict)


def _verdict(k1: dict, full: dict) -> str:
    """How the top-k count compares with the full network's, said only when the counts compare:
    'mostly below the last layers' only when the top-k count is under a third of the full one."""
    if k1["trials"] != full["trials"]:
        return (f"The counts do not compare: the k studies have {k1['trials']} trials and the full network "
                f"{full['trials']}, and with fewer trials more examples are never held out (no estimate); rerun "
                f"with --trials {full['trials']} (trials={full['trials']} in Python).")
    n1, nf = k1["n_mem"], full["n_mem"]
    top = f"Retraining only the top {k1['k']} layer" + ("" if k1["k"] == 1 else "s")
    sd = float(np.hypot(k1.get("n_mem_sd", np.nan), full.get("n_mem_sd", np.nan)))
    noise = ""
    if np.isfinite(sd):
        diff = nf - n1
        within = abs(diff) <= 2 * sd
        noise = (f" From the estimates' noise the difference of the counts is {diff} +- {2 * sd:.1f} (2 SD)"
                 + ("; it is within that noise, so the counts are not resolved apart." if within else "."))
    if n1 >= nf:
        return (f"{top} memorizes as many examples as the full network ({n1} vs {nf}), unlike the paper's "
                "CIFAR-100 finding; with few trials the count can be dominated by estimation noise." + noise)
    if n1 and n1 >= nf / 3:
        return (f"{top} still memorizes {n1 / nf:.0%} as many examples as the full network ({n1} vs {nf}), far from "
                "the paper's 38 vs 18,099 on CIFAR-100: here much of what is memorized is reachable from the frozen "
                "features, and the rest needs the lower layers." + noise)
    fewer = f"{nf / n1:.1f} times fewer examples" if n1 else "no examples"
    return (f"{top} memorizes {fewer} than the full network ({n1} vs {nf}): as in the paper (38 vs 18,099 on "
            "CIFAR-100), what a network memorizes lives mostly below its last layers, in the learned "
            "representation." + noise)


def _figure(rows: list[dict], full: dict, threshold: float, model: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allr = rows + [full]
    xs = [r["k"] for r in allr]
    labels = [f"k={r['k']}\n{r['layers']}" for r in rows] + [f"all {full['k']}\nfull network"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(xs, [r["n_mem"] for r in allr], "o-", label=f"examples with mem >= {threshold}")
    for x, r in zip(xs, allr, strict=True):
        a1.annotate(str(r["n_mem"]), (x, r["n_mem"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    a1.set_ylabel(f"examples with mem >= {threshold}")
    a1.set_ylim(bottom=0)
    a2.plot(xs, [r["mean_mem"] for r in allr], "s-", color="tab:red", label="mean mem")
    a2b = a2.twinx()
    a2b.plot(xs, [r["test_acc"] for r in allr], "^--", color="tab:green", label="mean test accuracy")
    a2.set_ylabel("mean memorization")
    a2.set_ylim(bottom=0)
    a2b.set_ylabel("mean test accuracy of the trials")
    h1, l1 = a2.get_legend_handles_labels()
    h2, l2 = a2b.get_legend_handles_labels()
    a2.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
    a1.legend(fontsize=8)
    for ax in (a1, a2):
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlabel("layers trained (k = last k layers on frozen features)")
    fig.suptitle(f"{model}: memorization when only the last k layers are trained", fontsize=10)
    fig.tight_layout()
    return fig
