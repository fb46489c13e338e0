"""Subset-ratio sweep: studies at several subset fractions q, their precision per trial and agreement."""

from __future__ import annotations

import json

import numpy as np

from tailscope.analyses.base import (
    ANALYSES_DIR,
    AnalysisResult,
    as_study,
    fmt,
    new_figure,
    scores_of_first,
    settled_child_study,
    spearman,
    with_learner,
)
from tailscope.design import theoretical_se_bound
from tailscope.estimate import estimate
from tailscope.scores import at_least
from tailscope.store import child_location, read_bytes, stable_spec

# A measured SE from fewer trials without an example than this is called out in the reading.
FEW_OUT = 20


def _loo_result(study_dir) -> dict | None:
    raw = read_bytes(child_location(study_dir, ANALYSES_DIR, "loo", "result.json"))
    return None if raw is None else json.loads(raw)["data"]


def subset_ratio(study, ratios=(0.5, 0.7, 0.9), trials: int = 50, progress: bool = False,
                 learner=None) -> AnalysisResult:
    """Run a study per subset ratio q (under ``<study>/analyses/subset_ratio/studies/q<q>``) and compare.

    Parameters
    ----------
    study : Study or path
        Data, learner, design and seed are reused.
    ratios : sequence of float
    trials : int
        Trials per ratio (kept small: the point is the comparison at equal cost).
    progress : bool
    learner : Learner, optional
        Train the ratios' studies with this learner instead of the study's (needed for a
        study made in Python, whose learner cannot be rebuilt from its store). The study's
        own trials are reused at its ratio only when it is the study's learner.

    Returns
    -------
    AnalysisResult
        ``summary``: per ratio the mean mem, share with mem >= 0.25 (both over the
        examples with an estimate), the share of examples without an SE (fewer than two
        trials with or without them), median and mean SE and SE * sqrt(t) over the
        examples with an SE, the same mean over the examples with an SE at *every*
        ratio (the only fair comparison between ratios), and the paper's bound
        0.5 sqrt(1/q + 1/(1-q)); pairwise Spearman between ratios, and Spearman with
        the leave-one-out estimates when ``analyses/loo`` exists.

    Each ratio's study is kept and reused by later runs with the same study config
    (a run with more trials adds only the new ones; one with fewer scores the first
    ``trials`` trials); a study made with other settings is replaced, with a warning.
    """
    if isinstance(trials, bool) or int(trials) != trials or trials < 2:
        raise ValueError(f"trials must be an integer >= 2 (estimates need trials with and without each "
                         f"example), got {trials!r}.")
    trials = int(trials)
    # ratios as shown (6 significant digits) are what is trained, named and reported: 0.7999999999999999
    # from np.arange is 0.8, and two ratios that print alike are one
    ratios = sorted({float(f"{float(r):g}") for r in ratios})
    if not ratios:
        raise ValueError("give at least one subset ratio, e.g. ratios=(0.5, 0.7, 0.9).")
    bad = [r for r in ratios if not 0 < r < 1]
    if bad:
        raise ValueError(f"subset ratios must lie strictly between 0 and 1, got {bad}.")
    own_learner = learner is None or _same_learner(study, learner)
    study = with_learner(as_study(study, learner), learner)
    res, own = {}, None
    for q in ratios:
        if own_learner and _is_own_ratio(study, q, trials):  # the same trials as the study's first ones: reuse, not retrain
            own = q  # (estimated in memory: the study's own saved scores are left as they are)
            res[q] = estimate(study._existing_store(), first_trials=trials)
            continue
        child = settled_child_study(study, f"subset_ratio/studies/q{q:g}", what=f"subset-ratio study at q = {q:g}",
                                    ratio=q, trials=trials)
        res[q] = scores_of_first(child, trials, progress)
    loo = _loo_result(study.path)
    has_se = np.all([np.isfinite(res[q].mem_se) for q in ratios], axis=0)
    has_mem = np.all([np.isfinite(res[q].mem) for q in ratios], axis=0)
    n = len(has_se)
    rows = []
    summary = {"trials": trials, "seed": int(study.design.seed), "n_train": n, "own_ratio_reused": own,
               "n_with_se_at_every_ratio": int(has_se.sum()), "n_with_mem_at_every_ratio": int(has_mem.sum())}
    for q in ratios:
        s = res[q]
        ok_mem = np.isfinite(s.mem)
        ok_se = np.isfinite(s.mem_se)
        se = s.mem_se[ok_se]
        common = s.mem_se[has_se]
        rt = np.sqrt(s.trials)
        row = {"ratio": q, "trials": int(s.trials),
               "n_no_mem": int((~ok_mem).sum()),
               "mean_mem": float(np.mean(s.mem[ok_mem])) if ok_mem.any() else float("nan"),
               "mean_mem_common": float(np.mean(s.mem[has_mem])) if has_mem.any() else float("nan"),
               "frac_mem_ge_0.25": float(np.mean(at_least(s.mem[ok_mem], 0.25))) if ok_mem.any() else float("nan"),
               "n_no_se": int((~ok_se).sum()), "frac_no_se": float(np.mean(~ok_se)),
               "median_se": float(np.median(se)) if len(se) else float("nan"),
               "median_se_sqrt_t": float(np.median(se) * rt) if len(se) else float("nan"),
               "mean_se": float(np.mean(se)) if len(se) else float("nan"),
               "mean_se_sqrt_t": float(np.mean(se) * rt) if len(se) else float("nan"),
               "mean_se_common": float(np.mean(common)) if len(common) else float("nan"),
               "mean_se_sqrt_t_common": float(np.mean(common) * rt) if len(common) else float("nan"),
               "bound_se_sqrt_t": float(theoretical_se_bound(s.trials, q) * rt),
               "test_acc": float(np.mean(s.trial_test_acc)), "min_n_out": int(s.n_out.min())}
        if loo is not None:
            idx = np.asarray(loo["idx"], dtype=np.int64)
            lm = np.asarray(loo["loo_mem"], float)
            row["spearman_loo"] = spearman(s.mem[idx], lm)
            row["n_loo"] = int(np.sum(np.isfinite(s.mem[idx]) & np.isfinite(lm)))
        rows.append(row)
        for k, v in row.items():
            if k not in ("ratio", "trials"):
                summary[f"{k}@{q:g}"] = v
    pairwise = {}
    for i, qa in enumerate(ratios):
        for qb in ratios[i + 1:]:
            pairwise[f"{qa:g}-{qb:g}"] = spearman(res[qa].mem, res[qb].mem)
            summary[f"spearman_{qa:g}_vs_{qb:g}"] = pairwise[f"{qa:g}-{qb:g}"]
    best_bound = min(rows, key=lambda r: (r["bound_se_sqrt_t"], r["ratio"]))
    measured = [r for r in rows if np.isfinite(r["mean_se_sqrt_t_common"])]
    best_measured = min(measured, key=lambda r: (r["mean_se_sqrt_t_common"], r["ratio"])) if measured else None
    few = [r for r in rows if r["min_n_out"] < FEW_OUT]
    summary["lowest_bound_ratio"] = best_bound["ratio"]
    summary["lowest_common_mean_se_ratio"] = best_measured["ratio"] if best_measured else None
    summary["common_mean_se_ranking_reliable"] = bool(best_measured is not None and not few and len(rows) > 1)

    fig, (ax1, ax2, ax3) = new_figure(3, 4.4, 4.0)
    ax1.plot(ratios, [r["median_se_sqrt_t"] for r in rows], "o-", label="median SE x sqrt(t) (examples with an SE)")
    ax1.plot(ratios, [r["mean_se_sqrt_t_common"] for r in rows], "s-",
             label=f"mean SE x sqrt(t), {int(has_se.sum())} examples with an SE at every q")
    ax1.plot(ratios, [r["bound_se_sqrt_t"] for r in rows], "k--", label="bound 0.5 sqrt(1/q + 1/(1-q))")
    ax1.set_xlabel("subset ratio q")
    ax1.set_ylabel("SE x sqrt(trials)")
    ax1.set_title("Precision per trial spent")
    ax1.legend(fontsize=7)
    bins = np.linspace(-0.3, 1.0, 27)
    for q in ratios:
        ax2.hist(res[q].mem[np.isfinite(res[q].mem)], bins=bins, histtype="step", lw=1.5, label=f"q = {q:g}")
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
    finite_vals = [v for v in vals if np.isfinite(v)]
    ax3.set_ylim(min([0.0, *finite_vals]), 1)
    ax3.set_ylabel("Spearman correlation of mem")
    ax3.set_title("Agreement")
    ax3.legend(fontsize=8)

    return AnalysisResult("subset_ratio", "Subset-ratio sweep", summary,
                          _reading(rows, pairwise, trials, n, int(has_se.sum()), int(has_mem.sum()), few,
                                   best_bound, best_measured, loo is not None, own),
                          data={"rows": rows, "pairwise_spearman": pairwise,
                                "mem": {f"{q:g}": res[q].mem for q in ratios},
                                "settings": {"ratios": ratios, "trials": trials, "seed": int(study.design.seed),
                                             "design": study.design.kind, "learner": study.learner.spec()}},
                          figure=fig)


def _same_learner(study, learner) -> bool:
    """Whether ``learner`` is the one the study's trials were made with (same spec)."""
    from tailscope.store import StoreError, TrialStore

    try:
        made = TrialStore.open(study.path if hasattr(study, "path") else study).config["learner"]
    except (StoreError, KeyError):
        return False
    return stable_spec(made) == stable_spec(json.loads(json.dumps(learner.spec(), default=str)))


def _is_own_ratio(study, q: float, trials: int) -> bool:
    """Whether the sub-study at ratio ``q`` would be the study itself: its ratio (as shown) and at
    least ``trials`` trials done (trial k depends only on the config and k)."""
    if float(f"{study.design.ratio:g}") != q:
        return False
    try:
        done = study._existing_store().done()
    except Exception:  # no store to reuse: the analysis trains a sub-study as for any ratio
        return False
    return len(done) >= trials and bool(done[:trials].all())


def _reading(rows, pairwise, trials, n, n_se, n_mem, few, best_bound, best_measured, has_loo,
             own=None) -> str:
    parts = [f"With {trials} trials at each subset ratio"
             + (f" (q = {own:g} is the study's own ratio: its numbers are the study's first {trials} trials, "
                "not an independent run)" if own is not None else "") + ":"]
    for r in rows:
        k = r["n_no_mem"]
        no_mem = (f" ({k} example never left out has none)" if k == 1 else
                  f" ({k} examples never left out have none)" if k else "")
        parts.append(
            f"q = {r['ratio']:g} gives mean mem {fmt(r['mean_mem'])} over the examples with an estimate{no_mem}, "
            f"{fmt(100 * r['frac_mem_ge_0.25'], 1)}% of them at mem >= 0.25; {r['n_no_se']} of {n} examples "
            f"({100 * r['frac_no_se']:.1f}%) have no SE (fewer than two trials with or without them), and over "
            f"the others the median SE is {fmt(r['median_se'])} and the mean {fmt(r['mean_se'])} (x sqrt(t): "
            f"{fmt(r['median_se_sqrt_t'], 2)} and {fmt(r['mean_se_sqrt_t'], 2)}; bound {r['bound_se_sqrt_t']:.2f})"
            + (f", Spearman {fmt(r['spearman_loo'])} with leave-one-out mem"
               + (f" (on the {r['n_loo']} sampled examples with both)" if "n_loo" in r else "")
               if "spearman_loo" in r else "")
            + ";")
    parts.append("pairwise Spearman between ratios: "
                 + (", ".join(f"{k} {fmt(v)}" for k, v in pairwise.items()) or "none (one ratio)") + ".")
    bound_text = (f"The paper's bound 0.5 sqrt(1/q + 1/(1-q)) on SE x sqrt(t) (for an example in exactly q t "
                  "trials; with the uniform design the count varies, so a few SEs exceed it) is lowest at "
                  f"q = {best_bound['ratio']:g}.")
    if best_measured is None:
        parts.append("No example has an SE at every ratio, so the ratios are not ranked by measured SE. "
                     + bound_text)
    else:
        parts.append(f"Compared on the {n_se} of {n} examples with an SE at every ratio (means over different "
                     "examples would not be comparable), mean SE x sqrt(t) is "
                     + ", ".join(f"{fmt(r['mean_se_sqrt_t_common'], 2)} at q = {r['ratio']:g}" for r in rows)
                     + f": lowest at q = {best_measured['ratio']:g}.")
        if few:
            each = ", ".join(f"{r['min_n_out']} at q = {r['ratio']:g}" for r in few)
            parts.append(f"Some examples had few trials without them (as few as {each}): when all of those agree the plug-in SE is 0 (also "
                         "for the many examples every model gets right), so measured SEs understate the noise there "
                         "and this ranking is not reliable; the bound is the safe number. " + bound_text)
        elif len(rows) > 1:
            parts.append(f"Per trial spent, q = {best_measured['ratio']:g} estimates these examples most "
                         "precisely. " + bound_text)
    lo_q, hi_q = rows[0], rows[-1]
    if len(rows) > 1 and n_mem:
        parts.append(f"On the {n_mem} examples with a mem estimate at every ratio, mean mem goes from "
                     f"{fmt(lo_q['mean_mem_common'])} at q = {lo_q['ratio']:g} to {fmt(hi_q['mean_mem_common'])} at "
                     f"q = {hi_q['ratio']:g}: smaller q trains on less data, so models generalize worse and more "
                     "examples need memorizing (mem_m is expected to grow as m shrinks), while q near 1 leaves few "
                     "trials without each example and its estimate gets noisy; larger q measures something closer "
                     "to full-data memorization.")
    parts.append("Compare with the leave-one-out agreement per ratio above." if has_loo else
                 "Run `tailscope analyze loo` first to also compare each ratio with leave-one-out mem.")
    return " ".join(parts)
