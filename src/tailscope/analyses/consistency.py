"""Consistency of the estimates between two independent studies or two architectures.

As in the paper's appendix: Spearman correlation of mem, and Jaccard similarity of the
sets of memorized examples (mem >= 0.25) and of the high-influence pairs (infl >= 0.15).
"""

from __future__ import annotations

import numpy as np

from tailscope.analyses.base import (
    AnalysisResult,
    as_study,
    check_count,
    check_unit,
    fmt,
    jaccard,
    new_figure,
    open_study_scores,
    pearson,
    scores_of_first,
    settled_child_study,
    spearman,
    study_scores,
)
from tailscope.scores import at_least
from tailscope.store import config_hash, stable_spec


def compare_scores(a, b, mem_threshold: float = 0.25, infl_threshold: float = 0.15) -> dict:
    """Agreement numbers between two Scores of the same training set."""
    if len(a.mem) != len(b.mem) or not np.array_equal(a.y_train, b.y_train):
        raise ValueError("the two studies have different training sets; consistency compares studies of the "
                         "same data.")
    pa, pb = a.influence_pairs(infl_threshold), b.influence_pairs(infl_threshold)
    sa = set(zip(pa["tr_idx"].tolist(), pa["tt_idx"].tolist(), strict=True))
    sb = set(zip(pb["tr_idx"].tolist(), pb["tt_idx"].tolist(), strict=True))
    ma = set(np.flatnonzero(at_least(a.mem, mem_threshold)).tolist())
    mb = set(np.flatnonzero(at_least(b.mem, mem_threshold)).tolist())
    return {
        "spearman_mem": spearman(a.mem, b.mem), "pearson_mem": pearson(a.mem, b.mem),
        "jaccard_mem": jaccard(ma, mb), "n_mem_a": len(ma), "n_mem_b": len(mb),
        "jaccard_pairs": jaccard(sa, sb), "n_pairs_a": len(sa), "n_pairs_b": len(sb),
        "spearman_max_infl": spearman(a.max_infl, b.max_infl),
        "mem_threshold": mem_threshold, "infl_threshold": infl_threshold,
        "trials_a": int(a.trials), "trials_b": int(b.trials),
    }


def _check_settings(study, other, seed, learner, trials) -> None:
    """Refuse settings that would be ignored or compare a study with itself, before any work."""
    if trials is not None:
        check_count(trials, "trials", 2, "--trials")
    if seed is not None:
        check_count(seed, "seed", 0, "--seed")
    if other is None:
        return
    given = [f"--{k}" for k, v in (("seed", seed), ("learner", learner), ("trials", trials)) if v is not None]
    if given:
        opts = " and ".join(given)
        raise ValueError(f"--other compares with an existing study, so {opts} (settings of a sibling study to run) "
                         f"would be ignored; give either --other or {opts}.")
    if _location(other) == _location(study):
        raise ValueError(f"--other is the study itself ({_location(study)}); a study is trivially consistent with "
                         "itself. Give another study of the same data, or --seed/--learner to run one.")


def _location(study) -> str:
    """Where a Study or a study directory lives, comparable between the two (resolved local path or URL)."""
    from pathlib import Path

    from tailscope.store import is_remote, study_location

    loc = study_location(getattr(study, "path", study))
    return str(loc) if is_remote(loc) else str(Path(loc).resolve())


def consistency(study, other=None, seed: int | None = None, learner=None, trials: int | None = None,
                mem_threshold: float = 0.25, infl_threshold: float = 0.15, progress: bool = False,
                scores=None) -> AnalysisResult:
    """Compare the study with another: a given study, a sibling with another seed, or another learner.

    Parameters
    ----------
    study : Study or path
    other : Study or path, optional
        An existing study of the same data to compare with.
    seed : int, optional
        Without ``other``: run a sibling study with this seed (same learner), under
        ``<study>/analyses/consistency/studies/seed<seed>``.
    learner : str or Learner, optional
        Without ``other``: run a sibling study with this learner (a registry name such
        as ``"mlp"`` or a Learner), same seed; combined with ``seed`` if both are given.
    trials : int, optional
        Trials of the sibling study (default: the study's).

    ``seed``, ``learner`` and ``trials`` describe a sibling study to run, so they are refused
    with ``other``, as is ``other`` naming the study itself (trivially consistent).
    """
    _check_settings(study, other, seed, learner, trials)
    mem_threshold = check_unit(mem_threshold, "mem_threshold")
    infl_threshold = check_unit(infl_threshold, "infl_threshold")
    study, a = open_study_scores(study, scores, infl_threshold=infl_threshold)
    if other is not None:
        other_study = as_study(other)
        label = str(other_study.path)
    else:
        if seed is None and learner is None:
            seed = study.design.seed + 1
        lrn, tag = None, []
        if learner is not None:
            if isinstance(learner, str):
                from tailscope.learners.registry import make_learner

                lrn, name = make_learner(learner), learner
            else:
                lrn, name = learner, type(learner).__name__
            # the spec's digest: two learners of one class (other settings) are two sibling studies
            digest = config_hash({"learner": stable_spec(lrn.spec())})[:8]
            tag.append(f"learner-{name}-{digest}")
        if seed is not None:
            tag.append(f"seed{seed}")
        label = "_".join(tag)
        other_study = settled_child_study(study, f"consistency/studies/{label}", what="consistency study",
                                          learner=lrn, seed=seed, trials=trials)
    if other_study.data.fingerprint != study.data.fingerprint:
        raise ValueError(f"{label} was made with other data than {study.path}; compare studies of the same dataset.")
    b = (scores_of_first(other_study, other_study.trials, progress, infl_threshold) if other is None
         else study_scores(other_study, infl_threshold))
    summary = compare_scores(a, b, mem_threshold, infl_threshold)
    summary["other"] = label

    fig, (ax1, ax2) = new_figure(2, 4.8, 4.2)
    ax1.scatter(a.mem, b.mem, s=6, alpha=0.4, label="training examples")
    ax1.plot([-0.3, 1], [-0.3, 1], "k--", lw=0.8, label="y = x")
    ax1.axvline(mem_threshold, color="tab:red", lw=0.7, ls=":", label=f"mem = {mem_threshold}")
    ax1.axhline(mem_threshold, color="tab:red", lw=0.7, ls=":")
    ax1.set_xlabel(f"mem, this study (t = {a.trials})")
    ax1.set_ylabel(f"mem, {label} (t = {b.trials})")
    ax1.set_title(f"Spearman {fmt(summary['spearman_mem'], 2)}")
    ax1.legend(fontsize=8, loc="upper left")
    names = ["Spearman\nmem", f"Jaccard\nmem >= {mem_threshold}", f"Jaccard pairs\ninfl >= {infl_threshold}"]
    vals = [summary["spearman_mem"], summary["jaccard_mem"], summary["jaccard_pairs"]]
    ax2.bar(range(3), np.nan_to_num(vals), color=["tab:blue", "tab:orange", "tab:green"],
            label=f"this study vs {label}")
    ax2.set_xticks(range(3), names, fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("agreement")
    ax2.set_title("Agreement between the two studies")
    ax2.legend(fontsize=8)
    reading = (
        f"Comparing this study (t = {a.trials}) with {label} (t = {b.trials}): memorization estimates correlate "
        f"with Spearman {fmt(summary['spearman_mem'])} (Pearson {fmt(summary['pearson_mem'])}). The sets of "
        f"memorized examples (mem >= {mem_threshold}; {summary['n_mem_a']} and {summary['n_mem_b']} examples) "
        f"have Jaccard similarity {fmt(summary['jaccard_mem'])}, and the high-influence pairs (infl >= "
        f"{infl_threshold}; {summary['n_pairs_a']} and {summary['n_pairs_b']}) {fmt(summary['jaccard_pairs'])}. "
        "Part of any disagreement is estimation noise (" + _noise_of_both(a, b, label) + "), "
        "which thresholded sets amplify for values near the threshold, most of all for influence pairs, whose "
        "threshold is only a few standard errors above zero; Jaccard similarities rise with the number of trials."
    )
    return AnalysisResult("consistency", "Consistency between studies", summary, reading,
                          data={"mem_a": a.mem, "mem_b": b.mem}, figure=fig)


def _noise_of_both(a, b, label: str) -> str:
    """The SD bound and mean estimated SE of mem of both studies (the noisier one limits agreement)."""
    def mean_se(sc) -> str:
        se = np.asarray(sc.mem_se, float)
        return fmt(float(np.nanmean(se)), 3) if np.isfinite(se).any() else "n/a"

    return (f"the bound on each estimate's standard deviation is {fmt(float(a.se_bound), 3)} at t = {a.trials} in "
            f"this study and {fmt(float(b.se_bound), 3)} at t = {b.trials} in {label}; mean estimated SE of mem "
            f"{mean_se(a)} and {mean_se(b)}")
