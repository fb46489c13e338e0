"""Subset-ratio sweep: studies at several subset fractions q, their precision per trial and agreement."""

from __future__ import annotations

import json

import numpy as np

from tailscope.analyses.base import (
    ANALYSES_DIR,
    AnalysisResult,
    as_study,
    child_study,
    fmt,
    new_figure,
    run_and_score,
    spearman,
)
from tailscope.design import theoretical_se_bound
from tailscope.store import child_location, read_bytes


def _loo_result(study_dir) -> dict | None:
    raw = read_bytes(child_location(study_dir, ANALYSES_DIR, "loo", "result.json"))
    return None if raw is None else json.loads(raw)["data"]


def subset_ratio(study, ratios=(0.5, 0.7, 0.9), trials: int = 50, progress: bool = False) -> AnalysisResult:
    """Run a study per subset ratio q (under ``<study>/analyses/subset_ratio/studies/q<q>``) and compare.

    Parameters
    ----------
    study : Study or path
        Data, learner, design and seed are reused.
    ratios : sequence of float
    trials : int
        Trials per ratio (kept small: the point is the comparison at equal cost).
    progress : bool

    Returns
    -------
    AnalysisResult
        ``summary``: per ratio the mean mem, share with mem >= 0.25, median SE and
        median SE * sqrt(t) (precision per trial spent; compare the bound
        0.5 sqrt(1/q + 1/(1-q))), pairwise Spearman between ratios, and Spearman with
        the leave-one-out estimates when ``analyses/loo`` exists.
    """
    study = as_study(study)
    ratios = sorted(float(r) for r in ratios)
    res = {}
    for q in ratios:
        child = child_study(study, f"subset_ratio/studies/q{q:g}", ratio=q, trials=trials)
        res[q] = run_and_score(child, progress)
    loo = _loo_result(study.path)
    rows, summary = [], {"trials": int(trials)}
    for q in ratios:
        s = res[q]
        se = s.mem_se[np.isfinite(s.mem_se)]
        row = {"ratio": q, "mean_mem": float(np.nanmean(s.mem)), "frac_mem_ge_0.25": float(np.mean(s.mem >= 0.25)),
               "median_se": float(np.median(se)) if len(se) else float("nan"),
               "median_se_sqrt_t": float(np.median(se) * np.sqrt(s.trials)) if len(se) else float("nan"),
               "mean_se": float(np.mean(se)) if len(se) else float("nan"),
               "mean_se_sqrt_t": float(np.mean(se) * np.sqrt(s.trials)) if len(se) else float("nan"),
               "bound_se_sqrt_t": float(theoretical_se_bound(s.trials, q) * np.sqrt(s.trials)),
               "test_acc": float(np.mean(s.trial_test_acc)), "min_n_out": int(s.n_out.min())}
        if loo is not None:
            idx = np.asarray(loo["idx"], dtype=np.int64)
            row["spearman_loo"] = spearman(s.mem[idx], np.asarray(loo["loo_mem"], float))
        rows.append(row)
        for k, v in row.items():
            if k != "ratio":
                summary[f"{k}@{q:g}"] = v
    pairwise = {}
    for i, qa in enumerate(ratios):
        for qb in ratios[i + 1:]:
            pairwise[f"{qa:g}-{qb:g}"] = spearman(res[qa].mem, res[qb].mem)
            summary[f"spearman_{qa:g}_vs_{qb:g}"] = pairwise[f"{qa:g}-{qb:g}"]

    fig, (ax1, ax2, ax3) = new_figure(3, 4.4, 4.0)
    ax1.plot(ratios, [r["median_se_sqrt_t"] for r in rows], "o-", label="median SE x sqrt(t)")
    ax1.plot(ratios, [r["mean_se_sqrt_t"] for r in rows], "s-", label="mean SE x sqrt(t)")
    ax1.plot(ratios, [r["bound_se_sqrt_t"] for r in rows], "k--", label="bound 0.5 sqrt(1/q + 1/(1-q))")
    ax1.set_xlabel("subset ratio q")
    ax1.set_ylabel("SE x sqrt(trials)")
    ax1.set_title("Precision per trial spent")
    ax1.legend(fontsize=8)
    bins = np.linspace(-0.3, 1.0, 27)
    for q in ratios:
        ax2.hist(res[q].mem, bins=bins, histtype="step", lw=1.5, label=f"q = {q:g}")
    ax2.set_yscale("log")
    ax2.set_xlabel("memorization estimate")
    ax2.set_ylabel("training examples")
    ax2.set_title(f"mem by subset ratio (t = {trials} each)")
    ax2.legend(fontsize=8)
    names = list(pairwise)
    vals = [pairwise[k] for k in names]
    colors = ["tab:blue"] * len(names)
    if loo is not None:
        names += [f"{r['ratio']:g}-LOO" for r in rows]
        vals += [r["spearman_loo"] for r in rows]
        colors += ["tab:orange"] * len(rows)
    ax3.bar(range(len(names)), np.nan_to_num(vals), color=colors)
    ax3.bar([], [], color="tab:blue", label="between ratios")
    if loo is not None:
        ax3.bar([], [], color="tab:orange", label="with leave-one-out sample")
    ax3.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
    ax3.set_ylim(min(0.0, float(np.nanmin(vals)) if vals else 0.0), 1)
    ax3.set_ylabel("Spearman correlation of mem")
    ax3.set_title("Agreement")
    ax3.legend(fontsize=8)

    parts = [f"With {trials} trials at each subset ratio:"]
    for r in rows:
        parts.append(f"q = {r['ratio']:g} gives mean mem {r['mean_mem']:.3f}, {r['frac_mem_ge_0.25']:.1%} of examples "
                     f"at mem >= 0.25, median SE {r['median_se']:.3f} and mean SE {r['mean_se']:.3f} (x sqrt(t): "
                     f"{r['median_se_sqrt_t']:.2f} and {r['mean_se_sqrt_t']:.2f}; bound {r['bound_se_sqrt_t']:.2f})"
                     + (f", Spearman {fmt(r['spearman_loo'])} with leave-one-out mem" if "spearman_loo" in r else "")
                     + ";")
    best = min(rows, key=lambda r: (np.nan_to_num(r["mean_se_sqrt_t"], nan=np.inf), r["ratio"]))
    parts.append("pairwise Spearman between ratios: "
                 + ", ".join(f"{k} {fmt(v)}" for k, v in pairwise.items()) + ".")
    few = [r for r in rows if r["min_n_out"] < 20]
    if few:
        qs = ", ".join(f"{r['ratio']:g}" for r in few)
        parts.append(f"At q = {qs} some examples had few trials "
                     f"without them (as few as {min(r['min_n_out'] for r in few)}): when all of those agree the "
                     "plug-in SE is 0 (also for the many examples every model gets right), so measured SEs understate the noise "
                     "there; the bound is the safe number.")
    lo_q, hi_q = rows[0], rows[-1]
    parts.append(f"Per trial spent (mean SE), q = {best['ratio']:g} estimates most precisely. Mean mem goes from "
                 f"{lo_q['mean_mem']:.3f} at q = {lo_q['ratio']:g} to {hi_q['mean_mem']:.3f} at q = {hi_q['ratio']:g}: "
                 "smaller q trains on less data, so models generalize worse and more examples need memorizing "
                 "(mem_m is expected to grow as m shrinks), "
                 "while q near 1 leaves few trials without each example and its estimate gets noisy; "
                 "larger q measures something closer to full-data memorization. "
                 + ("Compare with the leave-one-out agreement per ratio above." if loo is not None else
                    "Run `tailscope analyze loo` first to also compare each ratio with leave-one-out mem."))
    return AnalysisResult("subset_ratio", "Subset-ratio sweep", summary, " ".join(parts),
                          data={"rows": rows, "pairwise_spearman": pairwise,
                                "mem": {f"{q:g}": res[q].mem for q in ratios}}, figure=fig)
