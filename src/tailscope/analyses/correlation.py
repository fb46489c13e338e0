"""How memorization and influence go together: mem vs each training example's largest influence."""

from __future__ import annotations

import numpy as np

from tailscope.analyses.base import (
    NOISE_SHARE_LIMIT,
    AnalysisResult,
    check_unit,
    fmt,
    new_figure,
    noise_sentence,
    open_scores_only,
    pairs_noise_share,
    pearson,
    spearman,
)
from tailscope.scores import at_least

MEM_THRESHOLD = 0.25
INFL_THRESHOLD = 0.15


def correlation(study, mem_threshold: float = MEM_THRESHOLD, infl_threshold: float = INFL_THRESHOLD,
                scores=None) -> AnalysisResult:
    """Correlation between mem(i) and max_j infl(i, j) over training examples.

    Parameters
    ----------
    study : Study or path
    mem_threshold : float
        "Memorized" cut (paper: 0.25).
    infl_threshold : float
        "High influence" cut for train/test pairs of the same class (paper: 0.15).
    scores : Scores, optional
        Use these instead of the study's saved scores.

    Returns
    -------
    AnalysisResult
        ``summary``: Pearson and Spearman between mem and max_infl, the share of
        high-influence pairs whose training example has mem >= ``mem_threshold``, the
        share expected if pairs picked training examples at random, the estimated
        share of those pairs that are noise (``pairs_false_share_est``) and the
        ``verdict`` the reading states.

    Only the study's trials and scores are read: a study whose dataset cannot be reloaded
    is analysed all the same.
    """
    mem_threshold = check_unit(mem_threshold, "mem_threshold", "--mem-threshold")
    infl_threshold = check_unit(infl_threshold, "infl_threshold", "--infl-threshold")
    study, scores = open_scores_only(study, scores, infl_threshold=infl_threshold)
    mem, mx = scores.mem, scores.max_infl
    ok = np.isfinite(mem) & np.isfinite(mx)
    pairs = scores.influence_pairs(infl_threshold)
    tr = pairs["tr_idx"].to_numpy()
    share = float(np.mean(at_least(mem[tr], mem_threshold))) if len(tr) else float("nan")
    base_share = float(np.mean(at_least(mem, mem_threshold)))
    high_mem = at_least(mem, mem_threshold)
    summary = {
        "pearson_mem_maxinfl": pearson(mem, mx), "spearman_mem_maxinfl": spearman(mem, mx),
        "n_pairs": len(pairs), "n_pair_train_examples": int(len(np.unique(tr))),
        "share_pairs_mem_ge_threshold": share, "share_train_mem_ge_threshold": base_share,
        "mean_maxinfl_mem_ge_threshold": float(np.nanmean(mx[high_mem & ok])) if (high_mem & ok).any() else None,
        "mean_maxinfl_mem_lt_threshold": float(np.nanmean(mx[~high_mem & ok])) if (~high_mem & ok).any() else None,
        "mem_threshold": mem_threshold, "infl_threshold": infl_threshold, "trials": int(scores.trials),
        "pairs_false_share_est": pairs_noise_share(scores, infl_threshold, study) if len(tr) else None,
    }
    summary["verdict"] = _verdict(summary)
    fig, ax = new_figure(1, 5.5, 4.2)
    in_pair = np.zeros(len(mem), bool)
    in_pair[tr] = True
    ax.scatter(mem[ok & ~in_pair], mx[ok & ~in_pair], s=6, alpha=0.4, color="tab:gray",
               label="other training examples")
    ax.scatter(mem[ok & in_pair], mx[ok & in_pair], s=10, alpha=0.8, color="tab:red",
               label=f"in a pair with infl >= {infl_threshold}")
    ax.axvline(mem_threshold, ls="--", color="k", lw=0.8, label=f"mem = {mem_threshold}")
    ax.axhline(infl_threshold, ls=":", color="k", lw=0.8, label=f"infl = {infl_threshold}")
    ax.set_xlabel("memorization estimate mem(i)")
    ax.set_ylabel("largest influence on a same-class test example")
    ax.set_title(f"mem vs max influence (Spearman {fmt(summary['spearman_mem_maxinfl'], 2)})")
    ax.legend(fontsize=8, loc="upper left")
    reading = (
        f"Over {int(ok.sum())} training examples ({scores.trials} trials), memorization and each example's "
        f"largest influence on a same-class test example correlate with Pearson "
        f"{fmt(summary['pearson_mem_maxinfl'])} and Spearman {fmt(summary['spearman_mem_maxinfl'])}. "
        + _reading(summary)
    )
    return AnalysisResult("correlation", "Memorization vs influence", summary, reading,
                          data={"mem": mem, "max_infl": mx, "pair_tr_idx": tr}, figure=fig)


def _verdict(s: dict) -> str:
    """``none`` (no pairs), ``noise`` (mostly noise), else how the pairs' share of memorized
    training examples compares with the base share: ``concentrated`` (more than twice it),
    ``higher``, ``same`` (within 10% of it) or ``lower``."""
    share, base, noise = s["share_pairs_mem_ge_threshold"], s["share_train_mem_ge_threshold"], s["pairs_false_share_est"]
    if not s["n_pairs"]:
        return "none"
    if noise is not None and noise >= NOISE_SHARE_LIMIT:
        return "noise"
    if share > 2 * base:
        return "concentrated"
    if abs(share - base) <= 0.1 * base:
        return "same"
    return "higher" if share > base else "lower"


def _reading(s: dict) -> str:
    """The pairs' part of the reading: their share of memorized examples against the base share,
    and a verdict only when the pairs are not mostly noise."""
    pct = lambda v: fmt(100 * v, 1)  # noqa: E731
    n, mt, it = s["n_pairs"], s["mem_threshold"], s["infl_threshold"]
    if not n:
        return (f"No same-class pair reaches influence {it}, so nothing is said about how high influence and "
                "memorization go together: run more trials or lower the threshold.")
    text = (f"Of the {n} high-influence pairs (infl >= {it}), {pct(s['share_pairs_mem_ge_threshold'])}% have a "
            f"training example with mem >= {mt}, against {pct(s['share_train_mem_ge_threshold'])}% of all "
            "training examples. " + noise_sentence(s["pairs_false_share_est"], s["trials"], n))
    return text + {
        "noise": "",
        "concentrated": "High influence concentrates on memorized examples, as in the paper, where a test example "
                        "leans on a training example only when that example is atypical enough to need memorizing.",
        "higher": "High influence is more common among memorized examples, but less than twice as common as among "
                  "all training examples: a weaker concentration than the paper's.",
        "same": "High influence is about as common among memorized examples as among the rest: no concentration "
                "on memorized examples shows here.",
        "lower": "High influence is less common among memorized examples than among all training examples, the "
                 "opposite of the paper's finding.",
    }[s["verdict"]]
