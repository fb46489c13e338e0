"""How memorization and influence go together: mem vs each training example's largest influence."""

from __future__ import annotations

import numpy as np

from tailscope.analyses.base import (
    AnalysisResult,
    fmt,
    new_figure,
    open_study_scores,
    pearson,
    spearman,
)

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
        high-influence pairs whose training example has mem >= ``mem_threshold``, and
        the share expected if pairs picked training examples at random.
    """
    study, scores = open_study_scores(study, scores, infl_threshold=infl_threshold)
    mem, mx = scores.mem, scores.max_infl
    ok = np.isfinite(mem) & np.isfinite(mx)
    pairs = scores.influence_pairs(infl_threshold)
    tr = pairs["tr_idx"].to_numpy()
    share = float(np.mean(mem[tr] >= mem_threshold)) if len(tr) else float("nan")
    base_share = float(np.mean(mem >= mem_threshold))
    high_mem = mem >= mem_threshold
    summary = {
        "pearson_mem_maxinfl": pearson(mem, mx), "spearman_mem_maxinfl": spearman(mem, mx),
        "n_pairs": len(pairs), "n_pair_train_examples": int(len(np.unique(tr))),
        "share_pairs_mem_ge_threshold": share, "share_train_mem_ge_threshold": base_share,
        "mean_maxinfl_mem_ge_threshold": float(np.nanmean(mx[high_mem & ok])) if (high_mem & ok).any() else None,
        "mean_maxinfl_mem_lt_threshold": float(np.nanmean(mx[~high_mem & ok])) if (~high_mem & ok).any() else None,
        "mem_threshold": mem_threshold, "infl_threshold": infl_threshold, "trials": int(scores.trials),
    }
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
        f"Of the {len(pairs)} high-influence pairs (infl >= {infl_threshold}), "
        f"{fmt(100 * share if len(tr) else float('nan'), 1)}% have a training example with mem >= {mem_threshold}, "
        f"against {fmt(100 * base_share, 1)}% of all training examples: "
        + ("high influence concentrates on memorized examples, as in the paper, where a test example leans on "
           "a training example only when that example is atypical enough to need memorizing."
           if len(tr) and share > 2 * base_share else
           "here high influence is not much more common among memorized examples than among the rest"
           + (" (no pairs were found at this threshold)." if not len(tr) else "."))
    )
    return AnalysisResult("correlation", "Memorization vs influence", summary, reading,
                          data={"mem": mem, "max_infl": mx, "pair_tr_idx": tr}, figure=fig)
