"""Leave-one-out ground truth: mem(A, S, i) measured directly on a sample of training examples.

For each sampled i, R models are trained on all of S and R models on S \\ {i} (the R
models on S are shared by every i), and

    loo_mem(i) = mean_r [h_r(x_i) = y_i | h_r <- A(S)] - mean_r [h_r(x_i) = y_i | h_r <- A(S \\ i)].

This is compared with the subsampled estimate mem_m(i) of the study, also as a
function of how many of the study's trials are used (:func:`mem_from_trials`).

Cross-fitting. The sample is stratified on mem, and a sample chosen on a noisy
estimate is biased when compared with that same estimate: the top strata collect
examples whose noise pushed their estimate up, the bottom ones those pushed down
(winner's curse, regression to the mean). So the study's trials are split in two:
strata are chosen on the estimate from the first half (the *selection* half), and LOO
mem is compared with the estimate from the other half (the *held-out* half), whose
noise is independent of the choice. The comparison with the study's estimate from all
trials (which includes the selection half) is reported as well.
"""

from __future__ import annotations

import numpy as np

from tailscope.analyses.base import (
    AnalysisResult,
    check_count,
    fmt,
    fmt_p,
    mean_ci,
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
    return {t: _contrast(*sums, t) for t, sums in _sums_at(store, trial_counts).items()}


def _sums_at(store, trial_counts) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{t: (s_in, s_all, n_in)}``: per training example, the sums behind :func:`_contrast` over
    the first t done trials (right when included, right overall, times included), one pass."""
    wanted = sorted({int(t) for t in trial_counts if int(t) >= 2})
    y = store.y_train
    n = len(y)
    s_in, s_all, n_in = np.zeros(n), np.zeros(n), np.zeros(n)
    seen = 0
    out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
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
                out[seen] = (s_in.copy(), s_all.copy(), n_in.copy())
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


def split_estimates(store, trials: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """Subsampled mem and SE from the first ``trials // 2`` done trials and from the rest of the first ``trials``.

    Two estimates with independent noise (disjoint trials), for cross-fitting: choose
    examples on the first, compare on the second. None when a half would have fewer
    than 2 trials or the store has fewer than ``trials`` done trials.
    """
    trials = int(trials)
    half = trials // 2
    if half < 2 or trials - half < 2:
        return None
    sums = _sums_at(store, (half, trials))
    if half not in sums or trials not in sums:
        return None
    a, full = sums[half], sums[trials]
    b = tuple(f - x for f, x in zip(full, a, strict=True))
    return _contrast(*a, half), _contrast(*b, trials - half)


def _gap(est: np.ndarray, loo_mem: np.ndarray) -> tuple[float, float, float]:
    """Mean of est - loo over examples with an estimate, the half-width of its 95% t interval, and
    the two-sided p-value of a zero mean (one-sample t). Interval and p are NaN with fewer than 2
    examples, and when every difference is the same: no spread, so no noise can be estimated."""
    from scipy import stats

    d = np.asarray(est, float) - loo_mem
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    m, h = mean_ci(d)
    if len(d) < 2 or not np.ptp(d) > 0:
        return m, float("nan"), float("nan")
    return m, h, float(stats.ttest_1samp(d, 0.0).pvalue)


def _paired_means(est: np.ndarray, loo_mem: np.ndarray) -> tuple[float, float, int]:
    """Mean of ``est`` and of LOO mem over the same examples, those with an estimate, and how many:
    the two means whose difference is the gap :func:`_gap` reports."""
    ok = np.isfinite(np.asarray(est, float))
    if not ok.any():
        return float("nan"), float("nan"), 0
    return float(np.mean(est[ok])), float(np.mean(loo_mem[ok])), int(ok.sum())


def _no_spread_note(est: np.ndarray, loo_mem: np.ndarray, deterministic: bool | None) -> str:
    """Why a gap has no interval: fewer than 2 examples, or all differences alike (and why)."""
    d = np.asarray(est, float) - loo_mem
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return "No sampled example has this estimate, so there is no gap to test."
    if len(d) < 2:
        return (f"With {len(d)} example to compare there is no spread, so the gap has no interval and is not "
                "tested; sample more examples (--k).")
    why = ("the learner is deterministic (identical predictions for every seed on S), so LOO mem is 0 or +-1 "
           "and the repeats measure no noise" if deterministic else
           "too few examples or repeats to see any noise; raise --k or --repeats")
    return (f"All {len(d)} differences are the same ({fmt(float(d[0]))}), so their spread, and with it an "
            f"interval for the gap, cannot be estimated: {why}. The gap is not tested.")


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

    The examples are chosen on the estimate from the first half of the study's trials
    and compared with the estimate from the other half (cross-fitting; see the module
    docstring), so that the gap between the two quantities is not inflated by choosing
    examples on the noise of the estimate they are compared with.

    Parameters
    ----------
    study : Study or path
    k : int
        Training examples to check, sampled at random within mem strata
        (:data:`STRATA`) of the first half's estimate, so that high-mem examples are
        represented. With fewer than 4 trials there is no split: strata come from the
        estimate of all trials, and the reading says the gap is then inflated.
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
        ``summary``: ``heldout_*`` compare LOO with the held-out half's estimate (Pearson,
        Spearman, mean absolute difference, and ``heldout_mean_diff`` = mean(held-out -
        LOO) with its 95% t interval ``heldout_mean_diff_ci`` and p-value);
        ``selection_mean_diff`` is the same gap with the selection half's estimate (the
        difference between the two is the selection effect); ``pearson``, ``spearman``,
        ``mean_abs_diff``, ``mean_diff``, ``mean_subsampled_mem`` use the study's estimate
        from all trials, which includes the selection half. ``data``: the sample, the
        estimates with SEs, and the agreement curve.
    """
    k, repeats = check_count(k, "k", 1, "--k"), check_count(repeats, "repeats", 1, "--repeats")
    study, scores = open_study_scores(study, scores)
    learner = learner or study.learner
    data = study.data
    n = data.n_train
    total = int(scores.trials)
    split = split_estimates(study.store, total)
    if split is not None:
        (sel_all, sel_se_all), (held_all, held_se_all) = split
        idx = stratified_sample(sel_all, k, seed)
    else:
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
    nan_k = np.full(len(idx), np.nan)
    if split is not None:
        sel_mem, sel_se, held_mem, held_se = sel_all[idx], sel_se_all[idx], held_all[idx], held_se_all[idx]
    else:
        sel_mem, sel_se, held_mem, held_se = sub_mem, sub_se, nan_k, nan_k
    done = int(study.store.done().sum())
    if trial_grid is None:
        trial_grid = [t for t in (10, 20, 40, 80, 160, 320, 640, 1280, 2560) if t < done] + [done]
    curve = mem_from_trials(study.store, trial_grid)
    ts_ = sorted(curve)
    curve_sp = [spearman(curve[t][0][idx], loo_mem) for t in ts_]
    curve_pe = [pearson(curve[t][0][idx], loo_mem) for t in ts_]
    deterministic = (bool((p_full.train_pred == p_full.train_pred[0]).all()
                          and (p_full.test_pred == p_full.test_pred[0]).all()) if repeats > 1 else None)
    half = total // 2
    h_gap, h_ci, h_p = _gap(held_mem, loo_mem)
    s_gap, s_ci, _ = _gap(sel_mem, loo_mem)
    f_gap, _, _ = _gap(sub_mem, loo_mem)
    h_mean, h_loo, n_held = _paired_means(held_mem, loo_mem)
    s_mean, s_loo, n_sel = _paired_means(sel_mem, loo_mem)
    f_mean, f_loo, n_sub = _paired_means(sub_mem, loo_mem)
    summary = {
        "k": int(len(idx)), "repeats": int(repeats), "trials": int(scores.trials), "ratio": float(scores.ratio),
        "pearson": pearson(sub_mem, loo_mem), "spearman": spearman(sub_mem, loo_mem),
        "mean_abs_diff": float(np.nanmean(np.abs(sub_mem - loo_mem))),
        # each mean beside a gap is over the same examples as the gap (those with that estimate)
        "mean_loo_mem": float(loo_mem.mean()), "mean_subsampled_mem": f_mean,
        "mean_loo_mem_subsampled": f_loo, "n_subsampled": n_sub,
        "median_loo_se": float(np.median(loo_se)), "median_subsampled_se": _nanmedian(sub_se),
        "learner_deterministic_on_S": deterministic,
        "cross_fitted": split is not None,
        "selection_trials": half if split is not None else total,
        "heldout_trials": total - half if split is not None else 0,
        "n_heldout": n_held,
        "heldout_pearson": pearson(held_mem, loo_mem), "heldout_spearman": spearman(held_mem, loo_mem),
        "heldout_mean_abs_diff": float(np.nanmean(np.abs(held_mem - loo_mem))) if n_held else float("nan"),
        "mean_heldout_mem": h_mean, "mean_loo_mem_heldout": h_loo,
        "heldout_mean_diff": h_gap, "heldout_mean_diff_ci": h_ci, "heldout_mean_diff_p": h_p,
        "median_heldout_se": _nanmedian(held_se),
        "mean_selection_mem": s_mean, "mean_loo_mem_selection": s_loo, "n_selection": n_sel,
        "selection_mean_diff": s_gap, "selection_mean_diff_ci": s_ci,
        "selection_effect": s_gap - h_gap if split is not None else float("nan"),
        "mean_diff": f_gap,
    }
    fig, (ax1, ax2) = new_figure(2, 5.0, 4.2)
    shown, shown_se = (held_mem, held_se) if split is not None else (sub_mem, sub_se)
    if split is not None:
        ax1.plot(loo_mem, sel_mem, "x", color="0.6", ms=5,
                 label=f"selection half's estimate (first {half} trials)")
    ax1.errorbar(loo_mem, shown, xerr=loo_se, yerr=shown_se, fmt="o", ms=4, alpha=0.8, capsize=2,
                 label=(f"held-out half's estimate ({total - half} trials)" if split is not None else
                        f"sampled examples (k={len(idx)})"))
    lo = float(np.nanmin(np.r_[loo_mem, shown, sel_mem, 0])) - 0.05
    hi = float(np.nanmax(np.r_[loo_mem, shown, sel_mem, 0.5])) + 0.05
    ax1.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    ax1.set_xlabel(f"leave-one-out mem (R = {repeats} models each side)")
    ax1.set_ylabel(f"subsampled mem (q = {scores.ratio})")
    if split is not None:
        ax1.set_title(f"held out: Pearson {fmt(summary['heldout_pearson'], 2)}, "
                      f"Spearman {fmt(summary['heldout_spearman'], 2)}")
    else:
        ax1.set_title(f"Pearson {fmt(summary['pearson'], 2)}, Spearman {fmt(summary['spearman'], 2)}")
    ax1.legend(fontsize=7, loc="upper left")
    ax2.plot(ts_, curve_pe, "o-", label="Pearson")
    ax2.plot(ts_, curve_sp, "s-", label="Spearman")
    ax2.set_xscale("log")
    ax2.set_xlabel("subsampled trials used (first t of the store)")
    ax2.set_ylabel("correlation with leave-one-out mem")
    ax2.set_title("agreement vs trials")
    ax2.legend(fontsize=8)
    first, last = (curve_sp[0], curve_sp[-1]) if ts_ else (float("nan"), float("nan"))
    definition = (f"mem_m averages the leave-one-out contrast over random subsets of size m = {scores.ratio} n, "
                  f"so it measures memorization by a model trained on {scores.ratio:.0%} of the data (where more "
                  "examples are atypical, and memorization is typically larger than on the full set), and its "
                  "\"out\" models saw m examples, not m - 1 (negligible for large n)")
    parts = []
    if split is not None:
        on = f"{n_held} of them (the others have no held-out estimate)" if n_held < len(idx) else "them"
        over = f"over the {n_held} examples with a held-out estimate"
        parts.append(
            f"{len(idx)} training examples were sampled across memorization strata of the estimate from the first "
            f"{half} of the study's {total} trials (the selection half). Leave-one-out memorization, measured "
            f"from {repeats} models on S and {repeats} on each S\\{{i}}, is compared on {on} with the subsampled "
            f"estimate from the other {total - half} trials, which played no part in choosing them: Pearson "
            f"{fmt(summary['heldout_pearson'])}, Spearman {fmt(summary['heldout_spearman'])}, mean absolute "
            f"difference {fmt(summary['heldout_mean_abs_diff'])} (both estimates' noise included: median SE "
            f"{fmt(summary['median_heldout_se'])} held out, {fmt(summary['median_loo_se'])} LOO); {over}, mean "
            f"subsampled mem {fmt(h_mean)} against mean LOO mem {fmt(h_loo)}, a gap of {_pm3(h_gap, h_ci)} "
            f"(95% t interval over the examples, {_pv(h_p)}).")
        if np.isfinite(h_ci) and abs(h_gap) > h_ci:
            parts.append(f"That gap excludes 0, so on these examples the subsampled mem_m is "
                         f"{'higher' if h_gap > 0 else 'lower'} than leave-one-out mem beyond noise: the two "
                         f"quantities differ here. The definitions allow it: {definition}.")
        elif np.isfinite(h_ci):
            parts.append("That gap is not resolved from 0: on these examples the subsampled estimate matches "
                         "leave-one-out mem within noise, though by definition the two can differ: "
                         f"{definition}.")
        else:
            parts.append(_no_spread_note(held_mem, loo_mem, deterministic))
        parts.append(_selection_note(n_sel, s_mean, s_loo, s_gap, s_ci, h_gap, _mad(sel_mem, loo_mem),
                                     _mad(held_mem, loo_mem)))
        parts.append(
            f"With all {total} trials (the study's scores, which include the selection half, so part of that "
            f"effect remains): Pearson {fmt(summary['pearson'])}, Spearman {fmt(summary['spearman'])}, mean "
            f"absolute difference {fmt(summary['mean_abs_diff'])}; over the {n_sub} examples with an estimate, "
            f"mean subsampled mem {fmt(f_mean)} against mean LOO mem {fmt(f_loo)}, a gap of {fmt(f_gap)}.")
    else:
        parts.append(
            f"On {len(idx)} training examples sampled across memorization strata, the subsampled estimate from "
            f"{total} trials is compared with leave-one-out memorization measured from {repeats} models on S and "
            f"{repeats} on each S\\{{i}}: Pearson {fmt(summary['pearson'])}, Spearman {fmt(summary['spearman'])}, "
            f"mean absolute difference {fmt(summary['mean_abs_diff'])} (over the {n_sub} examples with an "
            f"estimate, mean LOO mem {fmt(f_loo)}, mean subsampled mem {fmt(f_mean)}, a gap of {_pm3(s_gap, s_ci)}). "
            f"{total} trials are too few to split into two halves of at least 2, so the examples were chosen on "
            "the same estimate they are compared with: examples put in high strata by a noisy estimate tend to be "
            "those whose noise pushed it up (regression to the mean), so this gap and the absolute differences "
            "are inflated by that selection and do not measure how the quantities differ. By definition "
            f"they can differ too: {definition}.")
        if not np.isfinite(s_ci):
            parts.append(_no_spread_note(sel_mem, loo_mem, deterministic))
    parts.append(
        f"Using only the first {ts_[0] if ts_ else 'n/a'} trials the Spearman agreement is {fmt(first)}; with "
        f"{ts_[-1] if ts_ else 'n/a'} it is {fmt(last)}"
        + (" (these estimates share trials with the selection half)." if split is not None else "."))
    if deterministic:
        parts.append("The learner gave identical predictions for every seed on S, so here leave-one-out mem is 0 "
                     "or +-1 per example and the comparison is coarse.")
    acc_s = float(c_full.mean())
    parts.append(f"Models trained on all of S classify {fmt(100 * acc_s, 1)}% of the sampled examples correctly"
                 + (", so LOO mem is mostly 1 - (share of S\\{i} models that get i right)." if acc_s >= 0.95
                    else "."))
    parts.append(_loo_noise_note(summary["median_loo_se"], repeats, deterministic))
    return AnalysisResult("loo", "Leave-one-out ground truth", summary, " ".join(parts), data={
        "idx": idx, "loo_mem": loo_mem, "loo_se": loo_se, "subsampled_mem": sub_mem, "subsampled_se": sub_se,
        "selection_mem": sel_mem, "selection_se": sel_se, "heldout_mem": held_mem, "heldout_se": held_se,
        "curve_trials": ts_, "curve_pearson": curve_pe, "curve_spearman": curve_sp}, figure=fig)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference over the examples where both are finite."""
    d = np.abs(np.asarray(a, float) - np.asarray(b, float))
    return float(np.mean(d[np.isfinite(d)])) if np.isfinite(d).any() else float("nan")


def _selection_note(n_sel: int, s_mean: float, s_loo: float, s_gap: float, s_ci: float, h_gap: float,
                    sel_mad: float, held_mad: float) -> str:
    """The selection half against the held-out half: regression to the mean is offered as the
    explanation only when the selection half is the more extreme one (further from LOO mem)."""
    head = (f"Compared instead with the selection half's own estimate ({n_sel} examples with one: mean "
            f"{fmt(s_mean)} against mean LOO mem {fmt(s_loo)}), the examples show a gap of {_pm3(s_gap, s_ci)}; ")
    if np.isfinite(sel_mad) and np.isfinite(held_mad) and sel_mad > held_mad:
        return head + (
            f"its mean absolute difference from LOO mem, {fmt(sel_mad)}, exceeds the held-out half's "
            f"{fmt(held_mad)}, and the difference of the gaps, {fmt(s_gap - h_gap)}, is a selection effect plus "
            "noise (both halves estimate the same quantity, only one chose the examples): examples put in high "
            "strata by a noisy estimate tend to be those whose noise pushed it up, and those in low strata the "
            "reverse, so compared on the examples chosen with it an estimate looks more extreme than on fresh "
            "trials (regression to the mean).")
    return head + (
        f"here the selection half is not the more extreme one (mean absolute difference from LOO mem "
        f"{fmt(sel_mad)}, against {fmt(held_mad)} held out), so no selection effect shows and the difference of "
        f"the gaps, {fmt(s_gap - h_gap)}, is put down to noise.")


def _loo_noise_note(median_se: float, repeats: int, deterministic: bool) -> str:
    """How noisy the LOO values are; none when the learner is deterministic (they are exact for it)."""
    if deterministic:
        return ("The LOO values carry no estimation noise: the learner is deterministic, so each is exact for "
                "this learner on this S (a single leave-one-out result, not an average over training randomness).")
    if np.isfinite(median_se) and median_se == 0:
        return (f"On most examples the {repeats} models of each side agreed (median SE 0), so the LOO estimates' "
                f"noise cannot be estimated there, not that it is absent; more models per side (R > {repeats}) "
                "would show it.")
    return f"The LOO estimates themselves carry noise (median SE {fmt(median_se)} with R = {repeats})."


def _nanmedian(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    return float(np.median(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def _pv(p: float) -> str:
    return fmt_p(p)


def _pm3(x: float, ci: float) -> str:
    return f"{fmt(x)} +- {fmt(ci)}" if np.isfinite(ci) else fmt(x)
