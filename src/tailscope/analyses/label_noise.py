"""Planted label noise: does memorization find mislabeled training examples?

A seeded fraction of training labels is flipped to a different random class, a study
is run on the noisy data (under ``<study>/analyses/label_noise/studies/``), and mem is
scored as a detector of the flipped examples. The reviewers' variant: the top-mem
examples of the clean study are relabeled at random and a study is run again, to show
the memorization of noise directly next to the examples' original mem.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from tailscope.analyses.base import (
    ANALYSES_DIR,
    AnalysisResult,
    as_study,
    fmt,
    new_figure,
    replaced_note,
    scores_of_first,
    set_aside,
    settled_child_study,
    study_scores,
)
from tailscope.data.dataset import Dataset


def relabel(data: Dataset, idx: np.ndarray, seed: int, tag: str) -> Dataset:
    """A copy of ``data`` where training examples ``idx`` get a different, uniformly random class."""
    rng = np.random.default_rng([seed, 0xF11])
    y = data.y_train.copy()
    c = data.n_classes
    y[idx] = (y[idx] + rng.integers(1, c, len(idx))) % c
    meta = {**data.meta, "spec": f"{data.meta.get('spec', data.name)}+{tag}", "relabeled_seed": seed}
    return Dataset(data.x_train, y, data.x_test, data.y_test, list(data.classes), name=f"{data.name}+{tag}",
                   image_shape=data.image_shape, meta=meta)


def relabel_tag(data: Dataset, noisy: Dataset, idx: np.ndarray) -> str:
    """A short hash of which training examples were relabeled and to what (names the sub-study)."""
    h = hashlib.sha256()
    h.update(np.asarray(idx, dtype=np.int64).tobytes())
    h.update(np.asarray(noisy.y_train, dtype=np.int64)[idx].tobytes())
    h.update(str(data.fingerprint).encode())
    return h.hexdigest()[:10]


def _drop_stale_relabel_studies(study, keep: str, prefix: str) -> None:
    """Set aside the relabel sub-studies ``<prefix>*`` other than ``keep`` (an earlier top-mem set)."""
    from tailscope.store import child_location, local_path

    parent = child_location(study.path, ANALYSES_DIR, "label_noise", "studies")
    local = local_path(parent)
    if local is not None:
        names = [p.name for p in local.glob(prefix + "*") if p.is_dir()] if local.is_dir() else []
    else:
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(parent))
        names = [f.rstrip("/").rsplit("/", 1)[-1] for f in fs.glob(root.rstrip("/") + "/" + prefix + "*")]
    for name in sorted(names):
        if name != keep and (name == prefix or name.startswith(prefix + "_")):
            moved = set_aside(child_location(study.path, ANALYSES_DIR, "label_noise", "studies", name))
            warnings.warn(f"the relabel study {name} was made for another set of top-mem examples (the clean "
                          "study's scores have changed since, e.g. it grew); it is replaced by " + keep
                          + replaced_note(moved) + ".", stacklevel=3)


def flip_labels(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """Flip a seeded ``fraction`` of training labels; returns the noisy data and the flipped indices."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}.")
    rng = np.random.default_rng([seed, 0xF1A])
    k = max(1, int(round(fraction * data.n_train)))
    idx = np.sort(rng.choice(data.n_train, k, replace=False))
    return relabel(data, idx, seed, f"flip{fraction:g}s{seed}"), idx


def label_noise(study, fraction: float = 0.05, seed: int = 0, trials: int | None = None,
                relabel_top: bool = True, progress: bool = False, scores=None) -> AnalysisResult:
    """Score mem as a detector of planted label noise, and show the mem of relabeled top-mem examples.

    Parameters
    ----------
    study : Study or path
        The clean study; its data, learner, ratio and design are reused.
    fraction : float
        Share of training labels flipped (to a different random class).
    seed : int
        Which examples are flipped, and to what.
    trials : int, optional
        Trials of the noisy studies (default: the clean study's).
    relabel_top : bool
        Also relabel the clean study's top-mem examples (as many as flipped) and rerun.
    progress : bool
    scores : Scores, optional
        The clean study's scores.

    Returns
    -------
    AnalysisResult
        ``summary``: ROC AUC and average precision of mem for the flipped examples,
        precision at the number flipped, mean mem of flipped/clean examples, and (with
        ``relabel_top``) the mean mem of the top-mem examples before and after relabeling.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    study = as_study(study)
    noisy_data, flipped = flip_labels(study.data, fraction, seed)
    noisy = settled_child_study(study, f"label_noise/studies/flip{fraction:g}_seed{seed}", data=noisy_data,
                                trials=trials, what="planted-noise study")
    ns = scores_of_first(noisy, noisy.trials, progress)
    is_flip = np.zeros(study.data.n_train, bool)
    is_flip[flipped] = True
    mem = np.nan_to_num(ns.mem, nan=0.0)
    k = len(flipped)
    top = np.argsort(-mem, kind="stable")[:k]
    summary = {
        "fraction": fraction, "n_flipped": int(k), "trials": int(ns.trials),
        "roc_auc": float(roc_auc_score(is_flip, mem)), "average_precision": float(average_precision_score(is_flip, mem)),
        "precision_at_n_flipped": float(is_flip[top].mean()), "base_rate": float(is_flip.mean()),
        "mean_mem_flipped": float(mem[is_flip].mean()), "mean_mem_clean": float(mem[~is_flip].mean()),
        "frac_flipped_mem_ge_0.25": float(np.mean(mem[is_flip] >= 0.25)),
        "frac_clean_mem_ge_0.25": float(np.mean(mem[~is_flip] >= 0.25)),
    }
    data = {"flipped": flipped, "mem_noisy": ns.mem}
    before = after = None
    if relabel_top:
        clean = scores if scores is not None else study_scores(study)
        cm = np.nan_to_num(clean.mem, nan=0.0)
        top_clean = np.sort(np.argsort(-cm, kind="stable")[:k])
        rl_data = relabel(study.data, top_clean, seed, f"reltop{k}s{seed}")
        # the folder names the relabeled set: the top-mem examples change when the clean study grows
        prefix = f"relabel_top{k}_seed{seed}"
        name = f"{prefix}_{relabel_tag(study.data, rl_data, top_clean)}"
        _drop_stale_relabel_studies(study, name, prefix)
        rl = settled_child_study(study, f"label_noise/studies/{name}", data=rl_data, trials=trials,
                                 what="relabel study")
        rs = scores_of_first(rl, rl.trials, progress)
        before, after = cm[top_clean], np.nan_to_num(rs.mem[top_clean], nan=0.0)
        summary.update({"n_relabeled_top": int(k), "top_mem_before_mean": float(before.mean()),
                        "top_mem_after_mean": float(after.mean()),
                        "top_acc_out_after_mean": float(np.nanmean(rs.acc_out[top_clean])),
                        "top_acc_out_before_mean": float(np.nanmean(clean.acc_out[top_clean]))})
        data.update({"relabeled_top": top_clean, "top_mem_before": before, "top_mem_after": after,
                     "relabel_study": name, "clean_trials": int(clean.trials)})

    fig, (ax1, ax2) = new_figure(2, 5.0, 4.0)
    bins = np.linspace(-0.2, 1.0, 25)
    ax1.hist(mem[~is_flip], bins=bins, density=True, alpha=0.6, label=f"clean ({(~is_flip).sum()})")
    ax1.hist(mem[is_flip], bins=bins, density=True, alpha=0.6, label=f"flipped ({k})")
    ax1.set_xlabel("memorization estimate on the noisy data")
    ax1.set_ylabel("density")
    ax1.set_title(f"Planted noise: AUC {summary['roc_auc']:.3f}, AP {summary['average_precision']:.3f}")
    ax1.legend(fontsize=8)
    if before is not None:
        ax2.hist(before, bins=bins, alpha=0.6, label="top-mem examples, original labels")
        ax2.hist(after, bins=bins, alpha=0.6, label="same examples, random labels")
        ax2.hist(mem[is_flip], bins=bins, histtype="step", lw=1.5, color="k",
                 label="random examples, flipped labels")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("memorization estimate")
    ax2.set_ylabel("training examples")
    ax2.set_title("Memorization of noise, directly")

    reading = (
        f"Flipping {k} training labels ({fraction:.0%}) to another class and rerunning the study with "
        f"{ns.trials} trials, memorization ranks the flipped examples first with ROC AUC {summary['roc_auc']:.3f} "
        f"and average precision {summary['average_precision']:.3f} (base rate {summary['base_rate']:.3f}); "
        f"{summary['precision_at_n_flipped']:.0%} of the {k} highest-mem examples are flipped ones. Flipped "
        f"examples have mean mem {summary['mean_mem_flipped']:.3f} ({summary['frac_flipped_mem_ge_0.25']:.0%} at "
        f">= 0.25) against {summary['mean_mem_clean']:.3f} for clean ones"
        + (": a model fits a wrong label only by memorizing it, since models that did not see it predict the "
           "original class." if summary["roc_auc"] >= 0.6 and summary["mean_mem_flipped"] > summary["mean_mem_clean"]
           else "; memorization does not single out the flipped labels here (the models may not fit them at "
                "all: more epochs or a larger model, and more trials, would tell).")
    )
    if before is not None:
        reading += (
            f" Relabeling the clean study's {k} highest-mem examples at random moves their mean mem from "
            f"{summary['top_mem_before_mean']:.3f} (original labels) to {summary['top_mem_after_mean']:.3f} "
            f"(random labels), which is what memorizing pure noise looks like on these inputs; models that "
            f"did not train on them predict the new label {fmt(summary['top_acc_out_after_mean'])} of the time. "
            + _noise_comparison(summary["top_mem_before_mean"], summary["top_mem_after_mean"])
        )
    return AnalysisResult("label_noise", "Planted label noise", summary, reading, data=data, figure=fig)


def _noise_comparison(before: float, after: float) -> str:
    """How the top-mem examples' memorization compares with that of the same examples relabeled at random."""
    if after < 0.1:
        return ("The models barely fit the random labels (mem of noise near 0), so noise gives no yardstick "
                "here: train longer or a larger model.")
    if abs(before - after) <= 0.2 * after:
        return ("Their original memorization is close to that of noise: the model treats these examples much "
                "like mislabeled ones.")
    if before < after:
        return ("Their original memorization is well below that of noise: these examples are atypical but not "
                "simply mislabeled.")
    return ("Their original memorization is above that of the same examples with random labels, so noise does "
            "not explain it.")
