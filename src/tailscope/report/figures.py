"""The report's figures (matplotlib, Agg backend): every plotted number comes from a Scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tailscope.scores import Scores, at_least

MEM_THRESHOLD = 0.25  # the paper's "memorized" threshold


def _figure(width: float, height: float):
    """A figure drawn by the Agg renderer, without pyplot (no global backend switch, nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """(Pearson r, Spearman rho, number of pairs) over the entries where both are finite."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[ok], np.asarray(y, float)[ok]
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan"), float("nan"), int(len(x))
    import pandas as pd

    pearson = float(np.corrcoef(x, y)[0, 1])
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    spearman = float(np.corrcoef(rx, ry)[0, 1])
    return pearson, spearman, int(len(x))


def memorized_median_se(scores: Scores) -> float | None:
    """Median standard error over the examples with mem >= 0.25 (finite ones), None if there are none."""
    se = np.asarray(scores.mem_se, float)[at_least(np.asarray(scores.mem, float), MEM_THRESHOLD)]
    se = se[np.isfinite(se)]
    return float(np.median(se)) if len(se) else None


def _legend_below(ax, ncol: int = 1, markerscale: float = 1.0) -> None:
    """The legend under the axes, where it cannot cover data (tight_layout makes room for it)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=9, frameon=False,
              markerscale=markerscale)


def mem_histogram(scores: Scores, path: Path) -> Path:
    """Histogram of memorization estimates with the paper's 0.25 threshold marked."""
    mem = scores.mem[np.isfinite(scores.mem)]  # examples never held out (or always) have no estimate
    n_above = int(np.sum(at_least(mem, MEM_THRESHOLD)))
    frac = n_above / max(len(mem), 1)
    fig, ax = _figure(7.5, 4.0)
    lo = min(-0.1, float(mem.min())) if len(mem) else -0.1
    bins = np.linspace(lo, 1.0, 56)
    ax.hist(mem, bins=bins, color="#4c72b0", edgecolor="white", linewidth=0.4, label="training examples")
    ax.axvline(MEM_THRESHOLD, color="#c44e52", linestyle="--", linewidth=1.5,
               label=f"threshold {MEM_THRESHOLD} (paper)")
    ax.set_yscale("log")
    ax.set_xlabel("memorization estimate mem(i)")
    ax.set_ylabel("number of training examples (log scale)")
    missing = len(scores.mem) - len(mem)
    # counts as the title, not a box inside the axes: heavy memorization fills the right side
    ax.set_title(f"mem \u2265 {MEM_THRESHOLD}: {n_above} of {len(mem)} ({100 * frac:.1f}%)"
                 + (f"; {missing} without an estimate" if missing else ""), fontsize=10)
    _legend_below(ax, ncol=2)
    ax.grid(alpha=0.25)
    return _save(fig, path)


def mem_vs_influence(scores: Scores, path: Path) -> tuple[Path, tuple[float, float, int]]:
    """Scatter of mem against each training example's largest influence, with correlations."""
    x, y = np.asarray(scores.mem, float), np.asarray(scores.max_infl, float)
    ok = np.isfinite(x) & np.isfinite(y)
    corr = correlations(x, y)
    fig, ax = _figure(6.4, 5.0)
    alpha = 0.6 if ok.sum() < 3000 else 0.15
    ax.scatter(x[ok], y[ok], s=6, alpha=alpha, color="#4c72b0", edgecolors="none",
               label=f"training examples ({int(ok.sum())})", rasterized=True)
    ax.axvline(MEM_THRESHOLD, color="#c44e52", linestyle="--", linewidth=1, label=f"mem = {MEM_THRESHOLD}")
    ax.set_xlabel("memorization estimate mem(i)")
    ax.set_ylabel("largest influence on a test example, max_j infl(i, j)")
    pearson, spearman, _ = corr
    ax.set_title(f"Pearson r = {pearson:.3f}, Spearman \u03c1 = {spearman:.3f}", fontsize=10)
    _legend_below(ax, ncol=2, markerscale=3)  # the dots are too small to read at legend size
    ax.grid(alpha=0.25)
    return _save(fig, path), corr


def precision_curve(scores: Scores, path: Path) -> Path:
    """Median standard error of mem against trials, with the theoretical bound curve.

    Readable with one block of trials (a single point) and with a median SE of 0: the
    bound runs from t = 2, markers show every point, and y starts below 0.
    """
    from matplotlib.ticker import MaxNLocator

    t = np.asarray(scores.se_curve_trials, float)
    se = np.asarray(scores.se_curve_median, float)
    ok = np.isfinite(se) & (t > 0)
    q = float(scores.ratio)
    fig, ax = _figure(6.4, 4.6)
    t_max = max(float(scores.trials), float(t.max()) if len(t) else 2.0, 3.0)
    grid = np.linspace(2.0, t_max, 200)  # an SE needs an example in and out of 2 trials
    bound = 0.5 * np.sqrt(1 / (q * grid) + 1 / ((1 - q) * grid))
    ax.plot(grid, bound, color="#c44e52", linestyle="--", clip_on=False,
            label=f"bound 0.5\u221a(1/(qt) + 1/((1\u2212q)t)), q = {q:g}")
    mem_se = memorized_median_se(scores)
    if mem_se is not None:  # hollow and below the curve: a point at the same t stays visible
        ax.plot([scores.trials], [mem_se], marker="v", markersize=11, linestyle="none", color="#dd8452",
                markerfacecolor="none", markeredgewidth=2, clip_on=False, zorder=3,
                label=f"median SE of memorized examples (mem \u2265 {MEM_THRESHOLD}) at t = {scores.trials}")
    ax.plot(t[ok], se[ok], marker="o", markersize=5, linewidth=2, color="#4c72b0", clip_on=False, zorder=4,
            label="median SE of mem (this study)")
    ax.set_xlabel("number of trials t (trained models)")
    ax.set_ylabel("standard error of mem")
    ax.set_xlim(0, t_max * 1.04)
    top = max(float(bound.max()), float(np.max(se[ok], initial=0.0)), mem_se or 0.0)
    ax.set_ylim(-0.03 * top, top * 1.05)  # a median SE of 0 is drawn above the axis, not on it
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_below(ax)
    ax.grid(alpha=0.25)
    return _save(fig, path)
