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
    check_count,
    fmt,
    new_figure,
    replaced_note,
    scores_of_first,
    set_aside,
    settled_child_study,
    study_scores,
    with_learner,
)
from tailscope.data.dataset import Dataset, carry_rows
from tailscope.scores import at_least


def relabel(data: Dataset, idx: np.ndarray, seed: int, tag: str) -> Dataset:
    """A copy of ``data`` where training examples ``idx`` get a different, uniformly random class."""
    rng = np.random.default_rng([seed, 0xF11])
    y = data.y_train.copy()
    c = data.n_classes
    y[idx] = (y[idx] + rng.integers(1, c, len(idx))) % c
    meta = {**data.meta, "spec": f"{data.meta.get('spec', data.name)}+{tag}", "relabeled_seed": seed}
    return carry_rows(data, Dataset(data.x_train, y, data.x_test, data.y_test, list(data.classes),
                                    name=f"{data.name}+{tag}", image_shape=data.image_shape, meta=meta))


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
            warnings.warn(f"the relabel study {name} was made for another set of top-mem examples (the original "
                          "study's scores have changed since, e.g. it grew); it is replaced by " + keep
                          + replaced_note(moved) + ".", stacklevel=3)


def _check_fraction(fraction: float) -> float:
    if not 0 < fraction < 1:  # NaN too
        raise ValueError(f"fraction (--fraction) must lie in (0, 1), got {fraction}.")
    return float(fraction)


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> tuple[float, float]:
    """95% interval of a ROC AUC from Hanley & McNeil's (1982) standard error, clipped to [0, 1]."""
    if not (n_pos and n_neg and np.isfinite(auc)):
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    se = float(np.sqrt(max(var, 0.0)))
    return max(0.0, auc - z * se), min(1.0, auc + z * se)


def flip_labels(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """Flip a seeded ``fraction`` of training labels; returns the noisy data and the flipped indices."""
    _check_fraction(fraction)
    rng = np.random.default_rng([seed, 0xF1A])
    k = max(1, int(round(fraction * data.n_train)))
    idx = np.sort(rng.choice(data.n_train, k, replace=False))
    return relabel(data, idx, seed, f"flip{fraction:g}s{seed}"), idx


def label_noise(study, fraction: float = 0.05, seed: int = 0, trials: int | None = None,
                relabel_top: bool = True, progress: bool = False, scores=None, learner=None) -> AnalysisResult:
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
    learner : Learner, optional
        Train the noisy studies with this learner instead of the study's (needed for a
        study made in Python, whose learner cannot be rebuilt from its store).

    Returns
    -------
    AnalysisResult
        ``summary``: ROC AUC of mem for the flipped examples with its 95% interval
        (Hanley-McNeil) and whether it excludes 0.5 (``detects``), average precision,
        precision at the number flipped, mean mem and in-sample accuracy (share of models
        trained on an example that predict its label) of flipped/clean examples, and (with
        ``relabel_top``) the mean mem of the top-mem examples before and after relabeling.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    _check_fraction(fraction)
    if trials is not None:
        check_count(trials, "trials", 2, "--trials")
    study = with_learner(as_study(study, learner), learner)
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
        "frac_flipped_mem_ge_0.25": float(np.mean(at_least(mem[is_flip], 0.25))),
        "frac_clean_mem_ge_0.25": float(np.mean(at_least(mem[~is_flip], 0.25))),
        "acc_in_flipped": _nanmean(ns.acc_in[is_flip]), "acc_in_clean": _nanmean(ns.acc_in[~is_flip]),
        "acc_out_flipped": _nanmean(ns.acc_out[is_flip]),
    }
    lo, hi = auc_interval(summary["roc_auc"], int(k), int((~is_flip).sum()))
    summary.update(roc_auc_ci_low=lo, roc_auc_ci_high=hi, detects=bool(lo > 0.5))
    # a weak learner does not fit a wrong label at all (mem stays low, accuracy with it low too): the report's
    # "not fitted" list finds those; suspicion = max(mem, 1 - accuracy when trained on) uses both signals
    suspicion = np.maximum(mem, 1 - np.nan_to_num(ns.acc_in, nan=1.0))
    both = float(roc_auc_score(is_flip, suspicion))
    lo2, hi2 = auc_interval(both, int(k), int((~is_flip).sum()))
    summary.update(roc_auc_mem_or_not_fitted=both, roc_auc_mem_or_not_fitted_ci_low=lo2,
                   roc_auc_mem_or_not_fitted_ci_high=hi2)
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
                        "top_acc_in_after_mean": _nanmean(rs.acc_in[top_clean]),
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

    reading = _detection_reading(summary, k, fraction, ns.trials) + _not_fitted_reading(summary)
    if before is not None:
        reading += " " + _relabel_reading(summary, k, study.data.n_classes)
    return AnalysisResult("label_noise", "Planted label noise", summary, reading, data=data, figure=fig)


def _relabel_reading(s: dict, k: int, n_classes: int) -> str:
    """What relabeling the top-mem examples shows. The new labels are noise for these examples only
    when models that did not train on them do not predict them; when they do (with 2 classes the new
    label is the other class, which held-out models may already predict), the new labels agree with
    the rest of the data and give no noise yardstick; nor do labels the models barely fit."""
    before, after = s["top_mem_before_mean"], s["top_mem_after_mean"]
    out = s.get("top_acc_out_after_mean", float("nan"))
    fit = s.get("top_acc_in_after_mean", float("nan"))
    own = bool(np.isfinite(fit))  # else how well the planted-noise study fit its flipped labels stands in
    if not own:
        fit = s.get("acc_in_flipped", float("nan"))
    how = "to the other class" if n_classes == 2 else "to a random other class"
    head = (f"Relabeling the original study's {k} highest-mem examples {how} moves their mean mem from {before:.3f} "
            f"(original labels) to {after:.3f} (new labels); models that did not train on them predict the new "
            f"label {_pct(out)} of the time")
    fit_note = f" and models trained on them predict it {_pct(fit)} of the time" if own else ""
    head += fit_note + ". "
    if np.isfinite(out) and out >= 0.5:
        return head + ("The new labels agree with what the other examples suggest, so they are not noise for these "
                       "examples: a sign that their original labels may be wrong. Noise gives no yardstick here, "
                       "and no conclusion about their original memorization is drawn from it.")
    if after < 0.1 or (np.isfinite(fit) and fit < 0.5):
        return head + _noise_comparison(before, after, fit, own)
    if not np.isfinite(out) or out > 1 / 3:
        return head + (f"Held-out models predict the new labels {_pct(out)} of the time, so the new labels are only "
                       "partly noise for these examples and give no clear yardstick; no conclusion is drawn.")
    return head + (f"The new labels are noise for these examples, so {after:.3f} is what memorizing pure noise "
                   "looks like on these inputs. " + _noise_comparison(before, after, fit, own))


def _noise_comparison(before: float, after: float, fit: float = float("nan"), own: bool = True) -> str:
    """How the top-mem examples' memorization compares with that of the same examples relabeled at random
    (``fit``: how often models trained on the relabeled examples predict the new labels, or with
    ``own`` False on the planted-noise study's flipped examples)."""
    if after < 0.1 or (np.isfinite(fit) and fit < 0.5):
        whom = "them" if own else "flipped labels in the planted-noise study"
        seen = (f" (trained on {whom}, they predict the new labels only {fit:.0%} of the time)"
                if np.isfinite(fit) else "")
        return (f"The models barely fit the random labels{seen}, so noise gives no yardstick here and no "
                "conclusion is drawn: train longer or a larger model.")
    if abs(before - after) <= 0.2 * after:
        return ("Their original memorization is close to that of noise: the model treats these examples much "
                "like mislabeled ones.")
    if before < after:
        return ("Their original memorization is well below that of noise: these examples are atypical but not "
                "simply mislabeled.")
    return ("Their original memorization is above that of the same examples with random labels, so noise does "
            "not explain it.")


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def _detection_reading(s: dict, k: int, fraction: float, trials: int) -> str:
    """How well mem finds the flipped labels: a detection claimed only when the AUC's interval
    lies above 0.5, else said not to happen, with the likely reason."""
    auc = (f"ROC AUC {s['roc_auc']:.3f} (95% interval {fmt(s['roc_auc_ci_low'])} to {fmt(s['roc_auc_ci_high'])}) "
           f"and average precision {s['average_precision']:.3f} (base rate {s['base_rate']:.3f})")
    head = f"Flipping {k} training labels ({fraction:.0%}) to another class and rerunning the study with {trials} trials, "
    rest = (f"{s['precision_at_n_flipped']:.0%} of the {k} highest-mem examples are flipped ones. Flipped "
            f"examples have mean mem {s['mean_mem_flipped']:.3f} ({s['frac_flipped_mem_ge_0.25']:.0%} at >= 0.25) "
            f"against {s['mean_mem_clean']:.3f} for clean ones")
    if s["detects"]:
        if s["roc_auc"] < 0.6:
            tail = "; the separation is weak (AUC below 0.6)."
        elif s["mean_mem_flipped"] <= s["mean_mem_clean"]:
            tail = ("; but their mean mem is not higher than the clean examples': a few flipped examples rank "
                    "high while most are not memorized.")
        else:
            tail = (": a model fits a wrong label only by memorizing it, since models that did not see it predict "
                    "the original class.")
        return head + f"memorization ranks the flipped examples above the clean ones: {auc}; " + rest + tail
    where = ("below 0.5 beyond noise: flipped examples get lower mem than clean ones"
             if s["roc_auc_ci_high"] < 0.5 else "at or below 0.5, no better than chance" if s["roc_auc"] <= 0.5
             else "an interval that includes 0.5")
    return (head + f"memorization does not single out the flipped examples: {auc}, {where}. " + rest + ". "
            + _why_not(s))


def _not_fitted_reading(s: dict) -> str:
    """What adding the examples the models do not fit to the memorized ones changes (said when it helps)."""
    both, mem = s["roc_auc_mem_or_not_fitted"], s["roc_auc"]
    if not (np.isfinite(both) and both > mem + 0.02):
        return ""
    return (f" Flipped labels the models do not fit have low mem and low accuracy when trained on (the report's "
            f"\"not fitted\" list): ranking by the larger of mem and 1 - that accuracy finds them with ROC AUC "
            f"{both:.3f} (95% interval {fmt(s['roc_auc_mem_or_not_fitted_ci_low'])} to "
            f"{fmt(s['roc_auc_mem_or_not_fitted_ci_high'])}), against {mem:.3f} for mem alone.")


def _why_not(s: dict) -> str:
    """The likely reason mem misses the flipped labels, from how well the models fit them."""
    fit, clean = s["acc_in_flipped"], s["acc_in_clean"]
    if not np.isfinite(fit):
        return "Whether the models fit the flipped labels is unknown (no trial trained on them)."
    if fit < 0.5:
        return (f"The likely reason: the models do not fit the flipped labels. Trained on a flipped example, they "
                f"predict its new label only {fit:.0%} of the time (clean examples: {_pct(clean)}), so there is "
                "little memorization to find; more epochs, a larger model or less regularisation would fit them.")
    return (f"The models do fit the flipped labels ({fit:.0%} of the time when trained on them), so the likely "
            "reason is noise: clean examples are memorized about as much at these settings, and more trials "
            "would narrow the interval.")


def _pct(x: float) -> str:
    return f"{x:.0%}" if np.isfinite(x) else "n/a"
