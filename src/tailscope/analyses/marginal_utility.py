"""Marginal utility of memorized examples (the paper's Fig. 2) and of high-influence training examples.

Training examples with mem above a threshold are removed, R models are trained on
the whole remaining set, and their test accuracy is compared with R models trained
on everything; the same number of random training examples is removed as control.
The verdict (more / less than random removal) comes from a Welch t interval of the
difference between the two reduced sets' accuracies: the full-set models are shared by
both drops and cancel in their difference, so two overlapping drop intervals do not
mean the removals are alike.
The second experiment removes the training examples of the high-influence pairs and
measures the drop on their test examples and on the whole test set.
"""

from __future__ import annotations

import numpy as np

from tailscope.analyses.base import (
    AnalysisResult,
    accuracy,
    check_unit,
    fmt,
    fmt_p,
    identical_repeats,
    mean_ci,
    new_figure,
    open_study_scores,
    train_on_masks,
    welch_ci,
)

#: confidence level of every interval in this analysis
LEVEL = 0.95
#: streams of the seeds derived per experiment (see :func:`_seeds`)
_MEM_STREAM, _INFL_STREAM = 0x3A7, 0x1F1


def _seeds(seed: int, stream: int, key: float = 0.0) -> tuple[int, int, np.random.Generator]:
    """Model seeds for the chosen and the random removal, and the generator of the random sets, of
    the experiment ``key`` (a mem threshold, or 0 for the high-influence experiment).

    They come from ``seed`` and the key's own value (its float64 bits), not from its position
    among the other thresholds: an experiment gives the same numbers whatever else is run.
    """
    bits = int(np.float64(float(key) + 0.0).view(np.uint64))  # + 0.0: -0.0 and 0.0 are one key
    rng = np.random.default_rng([int(seed), stream, bits])
    mem_seed, rand_seed = (int(v) for v in rng.integers(0, 2**31 - 1, 2))
    return mem_seed, rand_seed, rng


def _random_removals(rng: np.random.Generator, n: int, k: int, repeats: int) -> np.ndarray:
    """(repeats, n) masks, each without k training examples drawn at random."""
    keep = np.ones((repeats, n), bool)
    for r in range(repeats):
        keep[r, rng.choice(n, k, replace=False)] = False
    return keep


def _drop(base: np.ndarray, acc: np.ndarray) -> tuple[float, float]:
    """Mean accuracy drop (base - reduced) and the half-width of its 95% CI (Welch t, independent models).

    The half-width is NaN when either side has a single model (no variance to estimate).
    """
    w = welch_ci(base, acc, LEVEL)
    return w["diff"], w["ci"]


def compare_removals(base: np.ndarray, acc_mem: np.ndarray, acc_rand: np.ndarray) -> dict:
    """Drops from removing the chosen examples and random ones, and the test of their difference.

    Parameters
    ----------
    base, acc_mem, acc_rand : arrays of per-model test accuracy
        Models on the full set, on the set without the chosen examples, and on sets
        without as many random ones (independent models).

    Returns
    -------
    dict
        ``mem_drop``/``mem_ci`` and ``rand_drop``/``rand_ci``: each drop (base - reduced)
        and the half-width of its 95% Welch t interval; ``excess_drop`` = mem_drop -
        rand_drop = mean(acc_rand) - mean(acc_mem) (the shared full-set models cancel),
        with ``excess_ci``, ``excess_df`` and the two-sided Welch ``excess_p``; ``verdict``:
        "more" or "less" when the interval of the excess excludes 0, "unresolved" when it
        does not, "untested" without an interval (a single model on a side, or no spread:
        every model of both reduced sets reached the same accuracy, ``no_spread`` True).
    """
    out = {}
    out["mem_drop"], out["mem_ci"] = _drop(base, acc_mem)
    out["rand_drop"], out["rand_ci"] = _drop(base, acc_rand)
    w = welch_ci(acc_rand, acc_mem, LEVEL)
    out.update(excess_drop=w["diff"], excess_ci=w["ci"], excess_df=w["df"], excess_p=w["p"],
               no_spread=w["no_spread"])
    if not np.isfinite(w["ci"]):
        out["verdict"] = "untested"
    else:
        out["verdict"] = ("more" if w["diff"] - w["ci"] > 0 else "less" if w["diff"] + w["ci"] < 0
                          else "unresolved")
    return out


def _signed(drop: float, ci: float, digits: int) -> str:
    """A drop of accuracy in points, a negative one said as a rise."""
    return f"a rise of {_pm(-drop, ci, digits)}" if drop < 0 else f"a drop of {_pm(drop, ci, digits)}"


def _versus(r: dict, what: str = "removing as many at random") -> str:
    """How the chosen removal compares with random removal, from the interval of their difference."""
    e, ci = r["excess_drop"], r["excess_ci"]
    if r["verdict"] == "more":
        return (f"more than {what} ({_signed(r['rand_drop'], r['rand_ci'], 2)}): {_pm(e, ci, 2)} points more "
                f"(Welch t, {fmt_p(r['excess_p'])})")
    if r["verdict"] == "less":
        return (f"less than {what} ({_signed(r['rand_drop'], r['rand_ci'], 2)}): {_pm(-e, ci, 2)} points less "
                f"(Welch t, {fmt_p(r['excess_p'])})")
    if r["verdict"] == "unresolved":
        return (f"against {_signed(r['rand_drop'], r['rand_ci'], 2)} for {what}; the difference, "
                f"{_pm(e, ci, 2)} points (Welch t, {fmt_p(r['excess_p'])}), is not resolved at 95%")
    return f"against {what} ({_signed(r['rand_drop'], r['rand_ci'], 2)})"


def _removal_sentence(r: dict) -> str:
    """One threshold's drop (a negative one said as a rise) and its comparison with random removal."""
    change = (f"raises accuracy by {_pm(-r['mem_drop'], r['mem_ci'], 2)} points" if r["mem_drop"] < 0
              else f"costs {_pm(r['mem_drop'], r['mem_ci'], 2)} points")
    return (f"Removing the {r['n_removed']} examples with mem > {r['threshold']:g} ({100 * r['frac_removed']:.1f}%) "
            f"{change}, {_versus(r)}.")


def _infl_sentence(infl: dict, n_tr: int, n_pairs: int, n_tt: int, repeats: int) -> str:
    """The high-influence removal on the pairs' test examples and on the whole test set, each with
    its random control (and interval) and a verdict against it."""
    sentence = (
        f"Removing the {n_tr} training examples of the {n_pairs} high-influence pairs "
        + _two_changes(infl, "hi", f"on their {n_tt} test examples", "on the whole test set")
        + "; removing as many random training examples "
        + _two_changes(infl, "rand", "on them", "on the whole test set") + ". Against random removal, "
        + _infl_verdict(infl, "on_pairs", "the difference on their test examples is", 1) + "; "
        + _infl_verdict(infl, "on_all", "on the whole test set it is", 2) + ".")
    if any(_clipped(infl[f"{k}_on_pairs_drop"], infl[f"{k}_on_pairs_ci"]) for k in ("hi", "rand", "excess")):
        sentence += (f" With only {n_tt} test examples (and R = {repeats} models) the intervals on them reach "
                     "past the possible range, so they are uninformative there.")
    return sentence


def _two_changes(infl: dict, who: str, on_pairs: str, on_all: str) -> str:
    """Both accuracy changes of one removal: 'lowers accuracy by X on A and by Y on B' when they go
    the same way, each in full otherwise."""
    (d1, c1), (d2, c2) = ((infl[f"{who}_on_{k}_drop"], infl[f"{who}_on_{k}_ci"]) for k in ("pairs", "all"))
    first, second = _change(d1, c1, 1, on_pairs), _change(d2, c2, 2, on_all)
    verb = first.split(" by ")[0].removesuffix(f" {on_pairs}")  # "lowers accuracy", "raises accuracy"
    if " by " in second and second.startswith(verb):
        return f"{verb} by {first.split(' by ', 1)[1]} {on_pairs} and by {second.split(' by ', 1)[1]} {on_all}"
    return f"{first} and {second}"


def _pm(drop: float, ci: float, digits: int) -> str:
    """``drop +- ci`` in percentage points, or the bare drop without an interval (one model, or no spread).
    An interval reaching past the possible range of an accuracy difference (-100 to 100 points) is
    shown clipped to it, and said to be."""
    d = f"{100 * drop:.{digits}f}"
    if not np.isfinite(ci):
        return d
    if _clipped(drop, ci):
        lo, hi = max(-1.0, drop - ci), min(1.0, drop + ci)
        return f"{d} (95% interval clipped to the possible range: {100 * lo:.{digits}f} to {100 * hi:.{digits}f})"
    return f"{d} +- {100 * ci:.{digits}f}"


def _clipped(drop: float, ci: float) -> bool:
    return bool(np.isfinite(ci) and (drop - ci < -1 or drop + ci > 1))


def _change(drop: float, ci: float, digits: int, on: str = "") -> str:
    """An accuracy drop as words: 'lowers accuracy ... by X', 'raises ...' for a negative drop."""
    where = f" {on}" if on else ""
    if drop < 0:
        return f"raises accuracy{where} by {_pm(-drop, ci, digits)} points"
    if drop == 0 and not np.isfinite(ci):
        return f"leaves accuracy{where} unchanged"
    return f"lowers accuracy{where} by {_pm(drop, ci, digits)} points"


def _infl_verdict(infl: dict, on: str, what: str, digits: int) -> str:
    """The high-influence removal against random removal on one measure, from the interval of the difference."""
    e, ci, p = infl[f"excess_{on}_drop"], infl[f"excess_{on}_ci"], infl[f"excess_{on}_p"]
    if not np.isfinite(ci):
        return f"{what} {_pm(e, ci, digits)} points, untested (no interval)"
    diff = f"{what} {_pm(e, ci, digits)} points (Welch t, {fmt_p(p)})"
    if e - ci > 0:
        return diff + ": the high-influence examples cost more than random ones"
    if e + ci < 0:
        return diff + ": the high-influence examples cost less than random ones"
    return diff + ", not resolved at 95%"


def _check(thresholds, repeats, infl_threshold) -> list[float]:
    if isinstance(repeats, bool) or not isinstance(repeats, int | np.integer) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1 (models per training set; >= 2 for confidence "
                         f"intervals), got {repeats!r}.")
    check_unit(infl_threshold, "infl_threshold", "--infl-threshold")
    thr = [float(t) for t in thresholds]
    if not thr:
        raise ValueError("give at least one mem threshold, e.g. thresholds=(0.1, 0.2, 0.3, 0.4).")
    bad = [t for t in thr if not -1 <= t <= 1]  # NaN too
    if bad:
        raise ValueError(f"mem thresholds must lie in [-1, 1] (mem is a difference of two accuracies), got "
                         f"{bad}; examples with mem > threshold are removed.")
    return sorted(set(thr))


def marginal_utility(study, thresholds=(0.1, 0.2, 0.3, 0.4), repeats: int = 8, seed: int = 0,
                     infl_threshold: float = 0.15, scores=None, learner=None) -> AnalysisResult:
    """Accuracy drop from removing high-mem training examples vs as many random ones.

    Parameters
    ----------
    study : Study or path
    thresholds : sequence of float
        Remove training examples with mem > threshold (one experiment each).
    repeats : int
        R models per reduced training set (trained on the full remaining set). With
        R = 1 there is no confidence interval and no verdict against random removal.
    seed : int
    infl_threshold : float
        Pairs with influence >= this (same class) are "high influence" (paper: 0.15).
    scores : Scores, optional
    learner : Learner, optional

    Returns
    -------
    AnalysisResult
        ``data["curve"]``: per threshold, the fraction removed, the drop (with 95% Welch t
        CI) for high-mem and random removal, and their difference (``excess_drop``,
        ``excess_ci``, ``excess_p``, ``verdict``; see :func:`compare_removals`) with the
        per-model accuracies; ``summary`` has the same per threshold and adds the
        high-influence experiment.
    """
    thresholds = _check(thresholds, repeats, infl_threshold)
    repeats = int(repeats)
    study, scores = open_study_scores(study, scores, infl_threshold=infl_threshold)
    learner = learner or study.learner
    data = study.data
    n, y_te = data.n_train, data.y_test
    full = train_on_masks(learner, data, np.ones((repeats, n), bool), seed)
    deterministic = identical_repeats(full)
    base_acc = accuracy(full.test_pred, y_te)
    curve = []
    for thr in thresholds:
        removed = np.flatnonzero(scores.mem > thr)
        row = {"threshold": float(thr), "n_removed": int(len(removed)), "frac_removed": len(removed) / n}
        if len(removed) == 0 or len(removed) >= n:
            row.update({k: float("nan") for k in ("mem_drop", "mem_ci", "rand_drop", "rand_ci", "excess_drop",
                                                   "excess_ci", "excess_df", "excess_p")}, verdict="skipped")
            curve.append(row)
            continue
        mem_seed, rand_seed, rng = _seeds(seed, _MEM_STREAM, thr)
        keep = np.ones((repeats, n), bool)
        keep[:, removed] = False
        acc_mem = accuracy(train_on_masks(learner, data, keep, mem_seed).test_pred, y_te)
        rand = _random_removals(rng, n, len(removed), repeats)
        acc_rand = accuracy(train_on_masks(learner, data, rand, rand_seed).test_pred, y_te)
        row.update(compare_removals(base_acc, acc_mem, acc_rand), acc_mem=acc_mem, acc_rand=acc_rand)
        curve.append(row)

    # high-influence pairs: remove their training examples
    pairs = scores.influence_pairs(infl_threshold)
    tr = np.unique(pairs["tr_idx"].to_numpy())
    tt = np.unique(pairs["tt_idx"].to_numpy())
    infl = {"n_pairs": len(pairs), "n_train_removed": int(len(tr)), "n_test_affected": int(len(tt)),
            "n_train": int(n)}
    if len(tr) and len(tr) < n:
        hi_seed, rand_seed, rng = _seeds(seed, _INFL_STREAM)
        keep = np.ones((repeats, n), bool)
        keep[:, tr] = False
        p_hi = train_on_masks(learner, data, keep, hi_seed)
        p_rand = train_on_masks(learner, data, _random_removals(rng, n, len(tr), repeats), rand_seed)
        base_tt = accuracy(full.test_pred[:, tt], y_te[tt])
        for on, base_on, cols in (("on_pairs", base_tt, tt), ("on_all", base_acc, slice(None))):
            c = compare_removals(base_on, accuracy(p_hi.test_pred[:, cols], y_te[cols]),
                                 accuracy(p_rand.test_pred[:, cols], y_te[cols]))
            infl[f"hi_{on}_drop"], infl[f"hi_{on}_ci"] = c["mem_drop"], c["mem_ci"]
            infl[f"rand_{on}_drop"], infl[f"rand_{on}_ci"] = c["rand_drop"], c["rand_ci"]
            infl[f"excess_{on}_drop"], infl[f"excess_{on}_ci"] = c["excess_drop"], c["excess_ci"]
            infl[f"excess_{on}_p"] = c["excess_p"]
            infl[f"no_spread_{on}"] = c["no_spread"]
    ok = [r for r in curve if np.isfinite(r["mem_drop"])]
    summary = {
        "base_test_acc": mean_ci(base_acc)[0], "repeats": int(repeats), "trials": int(scores.trials),
        "has_intervals": repeats >= 2, "ci_level": LEVEL, "learner_deterministic": deterministic if repeats > 1 else None,
        **{f"drop_mem_gt_{r['threshold']}": r["mem_drop"] for r in curve},
        **{f"drop_rand_gt_{r['threshold']}": r["rand_drop"] for r in curve},
        **{f"ci_mem_gt_{r['threshold']}": r["mem_ci"] for r in curve},
        **{f"ci_rand_gt_{r['threshold']}": r["rand_ci"] for r in curve},
        **{f"excess_drop_gt_{r['threshold']}": r["excess_drop"] for r in curve},
        **{f"excess_ci_gt_{r['threshold']}": r["excess_ci"] for r in curve},
        **{f"excess_p_gt_{r['threshold']}": r["excess_p"] for r in curve},
        **{f"verdict_gt_{r['threshold']}": r["verdict"] for r in curve},
        **{f"frac_removed_{r['threshold']}": r["frac_removed"] for r in curve},
        **{f"infl_{k}": v for k, v in infl.items()},
    }

    fig, (ax1, ax2) = new_figure(2, 5.2, 4.2)
    if ok:
        fr = [100 * r["frac_removed"] for r in ok]
        ax1.errorbar(fr, [100 * r["mem_drop"] for r in ok], yerr=[100 * np.nan_to_num(r["mem_ci"]) for r in ok],
                     fmt="o-", capsize=3, label="remove mem > threshold")
        ax1.errorbar(fr, [100 * r["rand_drop"] for r in ok], yerr=[100 * np.nan_to_num(r["rand_ci"]) for r in ok],
                     fmt="s--", capsize=3, label="remove as many at random")
        for r in ok:
            ax1.annotate(f"{r['threshold']:g}", (100 * r["frac_removed"], 100 * r["mem_drop"]),
                         textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set_xlabel("training examples removed (%)")
    ax1.set_ylabel("test accuracy drop (percentage points, 95% CI)")
    ax1.set_title("Marginal utility of memorized examples")
    if ok:
        ax1.legend(fontsize=8, loc="upper left")
    else:
        ax1.text(0.5, 0.5, "no threshold left a set to train on\n(nothing or everything removed)", ha="center",
                 va="center", transform=ax1.transAxes)
    if "hi_on_pairs_drop" in infl:
        labels = ["their test\nexamples", "whole\ntest set"]
        xs = np.arange(2)
        ax2.bar(xs - 0.2, [100 * infl["hi_on_pairs_drop"], 100 * infl["hi_on_all_drop"]], 0.4,
                yerr=[100 * np.nan_to_num(infl["hi_on_pairs_ci"]), 100 * np.nan_to_num(infl["hi_on_all_ci"])],
                capsize=3,
                label=f"remove {len(tr)} high-influence train examples")
        ax2.bar(xs + 0.2, [100 * infl["rand_on_pairs_drop"], 100 * infl["rand_on_all_drop"]], 0.4,
                yerr=[100 * np.nan_to_num(infl["rand_on_pairs_ci"]), 100 * np.nan_to_num(infl["rand_on_all_ci"])],
                capsize=3,
                label=f"remove {len(tr)} random train examples")
        ax2.set_xticks(xs, labels)
        ax2.legend(fontsize=8, loc="upper right")
    else:
        ax2.text(0.5, 0.5, f"no pairs with infl >= {infl_threshold}" if not len(tr) else
                 f"the pairs' training examples are all {n}", ha="center", va="center", transform=ax2.transAxes)
    ax2.axhline(0, color="k", lw=0.6)
    ax2.set_xlabel("accuracy measured on")
    ax2.set_ylabel("test accuracy drop (percentage points, 95% CI)")
    ax2.set_title(f"High-influence pairs (infl >= {infl_threshold})")

    parts = [f"Models trained on all {n} training examples reach {fmt(100 * summary['base_test_acc'], 2)}% test "
             f"accuracy (mean of {repeats})."]
    if repeats < 2:
        parts.append("With one model per training set there is no confidence interval, so the differences below "
                     "are single draws and are not tested; rerun with --repeats 2 or more (8 or more to resolve "
                     "small differences).")
    for r in curve:
        if r["n_removed"] == 0:
            parts.append(f"No training example has mem > {r['threshold']:g}, so nothing was removed there.")
            continue
        if r["n_removed"] >= n:
            parts.append(f"mem > {r['threshold']:g} removes all {n} training examples, leaving nothing to train "
                         "on, so that threshold was skipped.")
            continue
        parts.append(_removal_sentence(r))
    if "hi_on_pairs_drop" in infl:
        parts.append(_infl_sentence(infl, len(tr), len(pairs), len(tt), repeats))
    elif len(tr) >= n:
        parts.append(f"The high-influence pairs (infl >= {infl_threshold:g}) involve all {n} training examples, "
                     "so removing them leaves nothing to train on; that experiment was skipped.")
    else:
        parts.append(f"No pair has infl >= {infl_threshold:g}, so the high-influence experiment was skipped.")
    parts += _spread_note(curve, infl, repeats, deterministic)
    tested = [r for r in curve if r["verdict"] in ("more", "less", "unresolved")]
    if tested:
        parts.append(f"Intervals are 95% Welch t intervals over R = {repeats} models per set. Each verdict against "
                     "random removal comes from the interval of the difference between the two reduced sets "
                     "(the full-set models are shared by both drops and cancel), not from whether the two drops' "
                     "intervals overlap"
                     + (f"; the {len(tested)} thresholds are tested one by one, without a correction for "
                        "testing several (their removed sets are nested, so the tests are not independent)."
                        if len(tested) > 1 else "."))
    parts.append("In the paper, memorized examples carry more of the test accuracy than random ones, and "
                 "the test examples of high-influence pairs lose far more accuracy than the test set as a whole.")
    return AnalysisResult("marginal_utility", "Marginal utility of memorized examples", summary, " ".join(parts),
                          data={"curve": curve, "base_acc": base_acc, "influence": infl,
                                "removed_train": tr, "affected_test": tt}, figure=fig)


def _spread_note(curve: list[dict], infl: dict, repeats: int, deterministic: bool) -> list[str]:
    """Why some numbers above have no interval although R >= 2 models were trained per set: the
    models of a set (or of both sets compared) all reached the same accuracy. Only comparisons that
    are in fact untested are listed as such."""
    if repeats < 2:
        return []
    done = [r for r in curve if r["verdict"] != "skipped"]
    untested = [f"{r['threshold']:g}" for r in done if r["verdict"] == "untested"]
    untested_infl = "hi_on_pairs_ci" in infl and not all(np.isfinite(infl.get(f"excess_{on}_ci", np.nan))
                                                         for on in ("on_pairs", "on_all"))
    where = ", ".join(([f"mem > {', '.join(untested)}"] if untested else [])
                      + (["the high-influence pairs"] if untested_infl else []))
    if deterministic:
        bare = [f"{r['threshold']:g}" for r in done if not np.isfinite(r["mem_ci"])]
        bare_infl = "hi_on_pairs_ci" in infl and not all(np.isfinite(infl[f"hi_{on}_ci"])
                                                         for on in ("on_pairs", "on_all"))
        if not (bare or bare_infl or where):
            return []
        what = ", ".join(([f"mem > {', '.join(bare)}"] if bare else []) + (["the high-influence pairs"]
                                                                            if bare_infl else []))
        text = (f"The learner is deterministic: its {repeats} models on the full set, trained with different "
                "seeds, made identical predictions, so the models of one training set are copies. A drop between "
                "fixed training sets is therefore a single exact result for this learner, shown without an "
                "interval" + (f" ({what})" if what else "") + ": there is no spread to estimate one from. Random "
                "removal varies only by the examples it removes, so the comparison with it is tested from that "
                "spread")
        text += (f"; where those all reached the same accuracy ({where}) it is not tested." if where
                 else ", and every comparison above has it.")
        return [text]
    if not where:
        return []
    return [f"Where a comparison has no interval ({where}), the {repeats} models of the sets compared all reached "
            "the same test accuracy, so their spread, and with it an interval, cannot be estimated: too few "
            "repeats to see the noise, so it is not tested; rerun with more --repeats."]
