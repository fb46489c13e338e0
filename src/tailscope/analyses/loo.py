"""Leave-one-out ground truth: mem(A, S, i) measured directly on a sample of training examples.

For each sampled i, R models are trained on all of S and R models on S \\ {i} (the R
models on S are shared by every i), and

    loo_mem(i) = mean_r [h_r(x_i) = y_i | h_r <- A(S)] - mean_r [h_r(x_i) = y_i | h_r <- A(S \\ i)].

This is compared with the subsampled estimate mem_m(i) of the study, also as a
function of how many of the study's trials are used (:func:`mem_from_trials`).
"""

from __future__ import annotations

import numpy as np

from tailscope.analyses.base import (
    AnalysisResult,
    fmt,
    new_figure,
    open_study_scores,
    pearson,
    spearman,
    train_on_masks,
)

#: memorization bins for stratified sampling (lower edges)
STRATA = (-np.inf, 0.05, 0.15, 0.3, 0.5)


def mem_from_trials(store, trial_counts) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Subsampled mem and its SE from the first t done trials of a store, for every t in ``trial_counts``.

    One streaming pass over ``store.iter_blocks()`` reading masks and train predictions
    only; stops after the largest t. Returns ``{t: (mem, se)}`` (t larger than the
    number of done trials is left out).
    """
    wanted = sorted({int(t) for t in trial_counts if int(t) >= 2})
    y = store.y_train
    n = len(y)
    s_in, s_all, n_in = np.zeros(n), np.zeros(n), np.zeros(n)
    seen = 0
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if not wanted:
        return out
    for blk in store.iter_blocks(("train_pred",)):
        c_blk = (blk.preds.train_pred == y).astype(np.float64)
        m_blk = blk.mask
        a = 0
        while a < len(m_blk) and wanted:
            take = min(len(m_blk) - a, wanted[0] - seen)
            c, m = c_blk[a:a + take], m_blk[a:a + take]
            s_in += (c * m).sum(0)
            s_all += c.sum(0)
            n_in += m.sum(0)
            seen += take
            a += take
            if seen == wanted[0]:
                out[seen] = _contrast(s_in, s_all, n_in, seen)
                wanted.pop(0)
        if not wanted:
            break
    return out


def _contrast(s_in, s_all, n_in, t):
    n_out = t - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        p_in, p_out = s_in / n_in, (s_all - s_in) / n_out
        # 0/1 outcomes: sample variance p(1-p) n/(n-1)
        v_in = p_in * (1 - p_in) / np.maximum(n_in - 1, 1)
        v_out = p_out * (1 - p_out) / np.maximum(n_out - 1, 1)
        return p_in - p_out, np.sqrt(v_in + v_out)


def stratified_sample(mem: np.ndarray, k: int, seed: int, edges=STRATA) -> np.ndarray:
    """k training indices, spread as evenly as possible over the mem bins ``edges`` (sorted)."""
    rng = np.random.default_rng([seed, 0x100])
    mem = np.nan_to_num(np.asarray(mem, float), nan=0.0)
    bins = np.digitize(mem, np.asarray(edges[1:]))
    members = [rng.permutation(np.flatnonzero(bins == b)) for b in range(len(edges))]
    k = min(int(k), len(mem))
    take = [0] * len(members)
    while sum(take) < k:  # round-robin over bins that still have members
        progressed = False
        for b, mem_b in enumerate(members):
            if sum(take) < k and take[b] < len(mem_b):
                take[b] += 1
                progressed = True
        if not progressed:
            break
    return np.sort(np.concatenate([m[:t] for m, t in zip(members, take, strict=True)]).astype(np.int64))


def loo(study, k: int = 20, repeats: int = 8, seed: int = 0, trial_grid=None, scores=None,
        learner=None) -> AnalysisResult:
    """Compare the study's subsampled mem with leave-one-out mem on k sampled training examples.

    Parameters
    ----------
    study : Study or path
    k : int
        Training examples to check, sampled at random within mem strata
        (:data:`STRATA`) so that high-mem examples are represented.
    repeats : int
        R: models trained on S (shared by all i) and on each S \\ {i}. Cost: (k + 1) R fits.
    seed : int
        Sampling and training seeds.
    trial_grid : sequence of int, optional
        Trial counts t at which to recompute the subsampled mem from the first t trials
        (default: a doubling grid up to all done trials).
    scores : Scores, optional
    learner : Learner, optional
        Train with this learner instead of the study's.

    Returns
    -------
    AnalysisResult
        ``summary``: Pearson/Spearman between LOO and subsampled mem, mean absolute
        difference; ``data``: the sample, both estimates with SEs, and the agreement curve.
    """
    study, scores = open_study_scores(study, scores)
    learner = learner or study.learner
    data = study.data
    n = data.n_train
    if repeats < 1 or k < 1:
        raise ValueError(f"k and repeats must be >= 1, got k={k}, repeats={repeats}.")
    idx = stratified_sample(scores.mem, k, seed)
    full = np.ones((repeats, n), bool)
    p_full = train_on_masks(learner, data, full, seed)
    c_full = p_full.train_pred[:, idx] == data.y_train[idx]
    loo_mem, loo_se = np.zeros(len(idx)), np.zeros(len(idx))
    for a, i in enumerate(idx):
        masks = np.ones((repeats, n), bool)
        masks[:, i] = False
        p = train_on_masks(learner, data, masks, seed * 1_000_003 + int(i) + 1)
        c_out = p.train_pred[:, i] == data.y_train[i]
        pi, po = c_full[:, a].mean(), c_out.mean()
        loo_mem[a] = pi - po
        loo_se[a] = np.sqrt(pi * (1 - pi) / max(repeats - 1, 1) + po * (1 - po) / max(repeats - 1, 1))
    sub_mem, sub_se = scores.mem[idx], scores.mem_se[idx]
    done = int(study.store.done().sum())
    if trial_grid is None:
        trial_grid = [t for t in (10, 20, 40, 80, 160, 320, 640, 1280, 2560) if t < done] + [done]
    curve = mem_from_trials(study.store, trial_grid)
    ts_ = sorted(curve)
    curve_sp = [spearman(curve[t][0][idx], loo_mem) for t in ts_]
    curve_pe = [pearson(curve[t][0][idx], loo_mem) for t in ts_]
    deterministic = (bool((p_full.train_pred == p_full.train_pred[0]).all()
                          and (p_full.test_pred == p_full.test_pred[0]).all()) if repeats > 1 else None)
    summary = {
        "k": int(len(idx)), "repeats": int(repeats), "trials": int(scores.trials), "ratio": float(scores.ratio),
        "pearson": pearson(sub_mem, loo_mem), "spearman": spearman(sub_mem, loo_mem),
        "mean_abs_diff": float(np.mean(np.abs(sub_mem - loo_mem))),
        "mean_loo_mem": float(loo_mem.mean()), "mean_subsampled_mem": float(np.nanmean(sub_mem)),
        "median_loo_se": float(np.median(loo_se)), "median_subsampled_se": float(np.nanmedian(sub_se)),
        "learner_deterministic_on_S": deterministic,
    }
    fig, (ax1, ax2) = new_figure(2, 5.0, 4.2)
    ax1.errorbar(loo_mem, sub_mem, xerr=loo_se, yerr=sub_se, fmt="o", ms=4, alpha=0.8, capsize=2,
                 label=f"sampled examples (k={len(idx)})")
    lo = float(min(loo_mem.min(), np.nanmin(sub_mem), 0)) - 0.05
    hi = float(max(loo_mem.max(), np.nanmax(sub_mem), 0.5)) + 0.05
    ax1.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    ax1.set_xlabel(f"leave-one-out mem (R = {repeats} models each side)")
    ax1.set_ylabel(f"subsampled mem (t = {scores.trials}, q = {scores.ratio})")
    ax1.set_title(f"Pearson {fmt(summary['pearson'], 2)}, Spearman {fmt(summary['spearman'], 2)}")
    ax1.legend(fontsize=8, loc="upper left")
    ax2.plot(ts_, curve_pe, "o-", label="Pearson")
    ax2.plot(ts_, curve_sp, "s-", label="Spearman")
    ax2.set_xscale("log")
    ax2.set_xlabel("subsampled trials used (first t of the store)")
    ax2.set_ylabel("correlation with leave-one-out mem")
    ax2.set_title("agreement vs trials")
    ax2.legend(fontsize=8)
    first, last = (curve_sp[0], curve_sp[-1]) if ts_ else (float("nan"), float("nan"))
    reading = (
        f"On {len(idx)} training examples sampled across memorization strata, the subsampled estimate from "
        f"{scores.trials} trials agrees with leave-one-out memorization measured from {repeats} models on S and "
        f"{repeats} on each S\\{{i}}: Pearson {fmt(summary['pearson'])}, Spearman {fmt(summary['spearman'])}, mean "
        f"absolute difference {fmt(summary['mean_abs_diff'])} (mean LOO mem {fmt(summary['mean_loo_mem'])}, "
        f"mean subsampled mem {fmt(summary['mean_subsampled_mem'])}). Using only the first "
        f"{ts_[0] if ts_ else 'n/a'} trials the Spearman agreement is {fmt(first)}; with {ts_[-1] if ts_ else 'n/a'} "
        f"it is {fmt(last)}. The two quantities differ by definition: the subsampled mem_m averages the "
        f"leave-one-out contrast over random subsets of size m = {scores.ratio} n, so it measures memorization "
        f"by a model trained on {scores.ratio:.0%} of the data, where more examples are atypical and "
        f"memorization values are larger than on the full set; and its \"out\" models saw m examples, not "
        f"m - 1 (negligible for large n). "
        + ("The learner gave identical predictions for every seed on S, so here leave-one-out mem is 0 or +-1 "
           "per example and the comparison is coarse. " if deterministic else "")
        + (f"Models trained on all of S classify {fmt(100 * float(c_full.mean()), 1)}% of the sampled examples "
           "correctly, so LOO mem is mostly 1 - (share of S\\{i} models that get i right). ")
        + f"The LOO estimates themselves carry noise (median SE {fmt(summary['median_loo_se'])} with R = {repeats})."
    )
    return AnalysisResult("loo", "Leave-one-out ground truth", summary, reading, data={
        "idx": idx, "loo_mem": loo_mem, "loo_se": loo_se, "subsampled_mem": sub_mem, "subsampled_se": sub_se,
        "curve_trials": ts_, "curve_pearson": curve_pe, "curve_spearman": curve_sp}, figure=fig)
