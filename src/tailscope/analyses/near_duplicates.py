"""Near-duplicates behind high influence: how close is a high-influence training example to its test example?

Feldman & Zhang found that many high-influence train/test pairs are near-duplicates:
the training example is (almost) the same picture as the test example. This
analysis measures that for a study.

Definitions
-----------
Inputs are compared as flat vectors after :func:`scaled_inputs`: integer pixels
divided by ``pixel_max`` (images stay on that common [0, 1] scale), non-image
feature vectors standardised per feature on the training set. Distance is L2.

For a pair (i, j) of training example i and test example j of the same class c:

- ``dist``: ||x_i - x_j||;
- ``rank``: 1 + the number of training examples of class c strictly closer to x_j
  than x_i (rank 1 = the nearest training example of the class; ties share the rank);
- ``near-duplicate``: rank 1 *and* ``dist <= tau``, where ``tau`` is the
  ``percentile``-th percentile (default 10) of the *reference* distances: for every
  test example, the distance to its nearest same-class training example. So a
  near-duplicate pair is closer than all but ``percentile`` % of typical
  test-to-nearest-training distances.

Baseline: for every high-influence pair, one random training example of the same
class as the test example (seeded) is measured the same way. The reading compares each
pair with its own random partner (the same test example): the share of pairs whose
training example is the closer of the two, against 50% if nearness did not matter
(two-sided binomial test; pairs sharing a test example are not independent, so read the
p-value as approximate). When the estimated noise share says the pairs are mostly noise
(``pairs_false_share_est`` >= 0.5) no conclusion is drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailscope.analyses.base import (
    NOISE_SHARE_LIMIT,
    AnalysisResult,
    check_count,
    check_unit,
    fmt_p,
    noise_sentence,
    open_study_scores,
    pairs_noise_share,
    scaled_inputs,
)
from tailscope.data.dataset import Dataset

NAME = "near_duplicates"


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances (len(a), len(b)), clipped at 0."""
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


# ----------------------------------------------------------------------------- the analysis

def pair_distances(data: Dataset, tr_idx, tt_idx, chunk: int = 512) -> dict:
    """Distances and same-class ranks of train/test pairs, and the reference distances.

    Parameters
    ----------
    data : Dataset
    tr_idx, tt_idx : int arrays of equal length
        Pairs (training index, test index); the two must have the same label.
    chunk : int
        Test examples per distance block (bounds memory at chunk x class size).

    Returns
    -------
    dict with ``dist`` and ``rank`` (per pair), ``nn_dist`` (per test example: distance
    to its nearest same-class training example) and ``nn_idx`` (that example's index).
    """
    tr_idx = np.asarray(tr_idx, dtype=np.int64)
    tt_idx = np.asarray(tt_idx, dtype=np.int64)
    if tr_idx.shape != tt_idx.shape:
        raise ValueError(f"tr_idx and tt_idx must have the same length, got {tr_idx.shape} and {tt_idx.shape}.")
    if len(tr_idx) and (data.y_train[tr_idx] != data.y_test[tt_idx]).any():
        raise ValueError("every pair must join a training and a test example of the same class.")
    xtr, xte = scaled_inputs(data)
    dist = np.full(len(tr_idx), np.nan)
    rank = np.zeros(len(tr_idx), dtype=np.int64)
    nn_dist = np.full(data.n_test, np.nan)
    nn_idx = np.full(data.n_test, -1, dtype=np.int64)
    for c in range(data.n_classes):
        tr_c = np.flatnonzero(data.y_train == c)
        te_c = np.flatnonzero(data.y_test == c)
        if not len(tr_c) or not len(te_c):
            continue
        pos = np.full(data.n_train, -1)
        pos[tr_c] = np.arange(len(tr_c))
        a = xtr[tr_c].astype(np.float64)
        for s in range(0, len(te_c), chunk):
            rows = te_c[s:s + chunk]
            d = np.sqrt(_sq_dists(xte[rows].astype(np.float64), a))
            arg = d.argmin(1)
            # exact distances for what is reported (the expansion above loses ~1e-8 relative)
            nn_dist[rows] = np.linalg.norm(xte[rows].astype(np.float64) - a[arg], axis=1)
            nn_idx[rows] = tr_c[arg]
            row_of = np.full(data.n_test, -1)
            row_of[rows] = np.arange(len(rows))
            sel = np.flatnonzero(row_of[tt_idx] >= 0)
            if not len(sel):
                continue
            r = row_of[tt_idx[sel]]
            dd = d[r, pos[tr_idx[sel]]]
            dist[sel] = np.linalg.norm(xte[tt_idx[sel]].astype(np.float64) - a[pos[tr_idx[sel]]], axis=1)
            tol = 1e-7 * (1.0 + np.abs(a).max())
            rank[sel] = 1 + (d[r] < dd[:, None] - tol).sum(1)
    return {"dist": dist, "rank": rank, "nn_dist": nn_dist, "nn_idx": nn_idx}


def near_duplicates(study, scores=None, threshold: float = 0.15, percentile: float = 10.0,
                    n_gallery: int = 12, seed: int = 0) -> AnalysisResult:
    """Are high-influence pairs near-duplicates? Distances and ranks vs random same-class pairs.

    Parameters
    ----------
    study : Study or path
        A study with estimated scores (estimated now if ``scores/`` is missing).
    scores : Scores, optional
        Use these instead of the study's saved scores.
    threshold : float
        High-influence pairs: same class and ``infl >= threshold`` (paper: 0.15). Only
        pairs kept when the scores were estimated exist (``tailscope estimate --threshold``).
    percentile : float
        ``tau`` is this percentile of the test examples' nearest-same-class-neighbour
        distances; a near-duplicate pair has rank 1 and ``dist <= tau``.
    n_gallery : int
        Closest high-influence pairs shown in the figure.
    seed : int
        Seed of the random same-class baseline pairs.

    Returns
    -------
    AnalysisResult named ``near_duplicates``; ``data["pairs"]`` holds one record per pair.
    """
    threshold = check_unit(threshold, "threshold", "--threshold")
    if not 0 < percentile < 100:  # also refuses NaN
        raise ValueError(f"percentile (--percentile) must lie in (0, 100), got {percentile}.")
    n_gallery = check_count(n_gallery, "n_gallery", 0, "--gallery")
    study, scores = open_study_scores(study, scores, infl_threshold=threshold)
    data = study.data
    pairs = scores.influence_pairs(threshold=threshold, same_class=True)
    tr, tt = pairs["tr_idx"].to_numpy(np.int64), pairs["tt_idx"].to_numpy(np.int64)
    # baseline: a random training example of the test example's class, per pair
    rng = np.random.default_rng([seed, 0x6E64])
    by_class = [np.flatnonzero(data.y_train == c) for c in range(data.n_classes)]
    rand_tr = np.array([rng.choice(by_class[data.y_test[j]]) for j in tt], dtype=np.int64)
    both = pair_distances(data, np.concatenate([tr, rand_tr]), np.concatenate([tt, tt]))
    n = len(tr)
    dist, rank = both["dist"][:n], both["rank"][:n]
    rdist, rrank = both["dist"][n:], both["rank"][n:]
    ref = both["nn_dist"][np.isfinite(both["nn_dist"])]
    tau = float(np.percentile(ref, percentile)) if len(ref) else float("nan")
    near = (rank == 1) & (dist <= tau + 1e-12)
    rnear = (rrank == 1) & (rdist <= tau + 1e-12)
    class_size = np.array([len(by_class[data.y_test[j]]) for j in tt])

    def share(a):
        return float(np.mean(a)) if len(a) else float("nan")

    def med(a):
        return float(np.median(a)) if len(a) else float("nan")

    summary = {
        "threshold": threshold, "n_pairs": n, "n_test_examples": int(len(np.unique(tt))),
        "percentile": percentile, "tau": tau,
        "share_rank1": share(rank == 1), "share_near_duplicate": share(near),
        "n_near_duplicate": int(near.sum()),
        "median_rank": med(rank), "median_dist": med(dist),
        "random_share_rank1": share(rrank == 1), "random_share_near_duplicate": share(rnear),
        "random_median_rank": med(rrank), "random_median_dist": med(rdist),
        "median_nn_dist_all_test": med(ref),
        "median_nn_dist_pair_tests": med(both["nn_dist"][np.unique(tt)]),
        "median_class_size": med(class_size),
        **_closer_than_random(rank, rrank),
        "pairs_false_share_est": pairs_noise_share(scores, threshold, study) if n else None,
        "trials": int(scores.trials),
    }
    summary["verdict"] = _verdict(summary)
    # the same shares for other percentiles, to see how the definition matters
    for p in (5, 10, 25, 50):
        t = float(np.percentile(ref, p)) if len(ref) else float("nan")
        summary[f"share_near_duplicate_p{p}"] = share((rank == 1) & (dist <= t + 1e-12))
        summary[f"random_share_near_duplicate_p{p}"] = share((rrank == 1) & (rdist <= t + 1e-12))
    table = pd.DataFrame({"tr_idx": tr, "tt_idx": tt, "label": data.y_test[tt] if n else np.zeros(0, int),
                          "infl": pairs["infl"].to_numpy(), "dist": dist, "rank": rank,
                          "near_duplicate": near, "random_tr_idx": rand_tr, "random_dist": rdist,
                          "random_rank": rrank})
    result = AnalysisResult(
        name=NAME, title="Near-duplicates behind high-influence pairs", summary=summary,
        reading=_reading(summary),
        data={"pairs": table.to_dict(orient="list"), "reference_nn_dist": ref},
        figure=_figure(data, table.sort_values(["dist", "infl"], ascending=[True, False]).head(n_gallery),
                       rank, rrank, summary),
    )
    return result


def _closer_than_random(rank: np.ndarray, rrank: np.ndarray, level: float = 0.05) -> dict:
    """How often a high-influence pair's training example is closer to its test example than the
    random partner drawn for the same test example (ties, e.g. the same example drawn, left out),
    and the two-sided binomial p-value of 50% (nearness does not matter)."""
    from scipy.stats import binomtest

    closer, farther = int(np.sum(rank < rrank)), int(np.sum(rank > rrank))
    m = closer + farther
    p = float(binomtest(closer, m, 0.5).pvalue) if m else float("nan")
    return {"n_closer_than_random": closer, "n_farther_than_random": farther,
            "share_closer_than_random": closer / m if m else float("nan"), "closer_than_random_p": p}


def _verdict(s: dict, level: float = 0.05) -> str:
    """``none`` (no pairs), ``noise`` (mostly noise), ``closer`` / ``farther`` (than random partners,
    p < ``level``) or ``alike`` (no difference resolved)."""
    if not s["n_pairs"]:
        return "none"
    noise = s["pairs_false_share_est"]
    if noise is not None and noise >= NOISE_SHARE_LIMIT:
        return "noise"
    if not s["closer_than_random_p"] < level:  # NaN too: every pair tied with its partner
        return "alike"
    return "closer" if s["share_closer_than_random"] > 0.5 else "farther"


def _reading(s: dict) -> str:
    if s["n_pairs"] == 0:
        return (f"No same-class pair reaches influence {s['threshold']}, so there is nothing to compare. "
                "Run more trials (the estimates' noise hides high influence) or lower the threshold "
                "(re-estimate with `tailscope estimate --threshold`).")
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    d = lambda v: _num(v)  # noqa: E731
    nd = s["n_near_duplicate"]
    return (
        f"Of the {s['n_pairs']} same-class train/test pairs with influence >= {s['threshold']} "
        f"({s['n_test_examples']} test examples), the training example is the test example's nearest "
        f"training example of its class in {pct(s['share_rank1'])} of pairs (median rank {_rank(s['median_rank'])} "
        f"of a class of about {s['median_class_size']:.0f}), against {pct(s['random_share_rank1'])} for random "
        f"same-class pairs (median rank {_rank(s['random_median_rank'])}). "
        f"{nd} {'pair' if nd == 1 else 'pairs'} ({pct(s['share_near_duplicate'])}) {'is a near-duplicate' if nd == 1 else 'are near-duplicates'}, i.e. rank 1 and "
        f"closer than {d(s['tau'])}, the {ordinal(s['percentile'])} percentile of all test examples' "
        f"nearest-neighbour distances (random pairs: {pct(s['random_share_near_duplicate'])}); with the 25th "
        f"or 50th percentile as the bound, {pct(s['share_near_duplicate_p25'])} or "
        f"{pct(s['share_near_duplicate_p50'])}. "
        f"The median distance of high-influence pairs is {d(s['median_dist'])} against "
        f"{d(s['random_median_dist'])} for random pairs and {d(s['median_nn_dist_all_test'])} from a "
        "typical test example to its nearest same-class training example (the test examples of these pairs: "
        f"{d(s['median_nn_dist_pair_tests'])}). "
        f"Against the random partner drawn for the same test example, the high-influence training example is "
        f"the closer one in {s['n_closer_than_random']} and the farther in {s['n_farther_than_random']} pairs "
        f"(50% each if nearness did not matter; binomial {fmt_p(s['closer_than_random_p'])}). "
        + noise_sentence(s["pairs_false_share_est"], s["trials"], s["n_pairs"]) + _conclusion(s)
    )


def ordinal(x) -> str:
    """1st, 2nd, 3rd, 4th, 11th-13th, 21st, ...; a non-integer as 12.5th."""
    x = float(x)
    if x != int(x):
        return f"{x:g}th"
    k = int(x)
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _rank(x: float) -> str:
    """A median rank: whole, or .5 when it falls between two ranks."""
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.0f}" if float(x) == int(x) else f"{x:.1f}"


def _num(x: float) -> str:
    """A distance with 3 significant digits, trailing zeros kept (2.70 against 2.82)."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    digits = max(0, 2 - int(np.floor(np.log10(abs(x)))))
    return f"{x:.{digits}f}"


def _conclusion(s: dict) -> str:
    """The last sentence, from the verdict: what the distances say about influence and nearness."""
    if s["verdict"] == "closer":
        if s["share_near_duplicate"] >= 0.5:
            return "High influence here comes mostly from near-copies of the test example in the training set."
        return ("High-influence training examples are closer to their test examples than random ones of the "
                "class, but mostly not copies of them: influence also reaches beyond near-duplicates.")
    if s["verdict"] == "farther":
        return ("High-influence training examples are farther from their test examples than random ones of the "
                "class: influence here does not come from near-duplicates.")
    if s["verdict"] == "alike":
        return ("High-influence training examples are no closer to their test examples than random ones of the "
                "class (the difference is not resolved): the distances give no sign that influence here comes "
                "from near-duplicates.")
    return ""


def _rank_bins(max_rank: int) -> np.ndarray:
    edges = [1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 513, 1025, 2049, 4097, 8193]
    edges = [e for e in edges if e <= max_rank] + [max_rank + 1]
    return np.unique(np.array(edges))


def _figure(data: Dataset, gallery: pd.DataFrame, rank, rrank, s: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_gal = len(gallery)
    per_row = 6
    gal_rows = -(-n_gal // per_row) if n_gal else 0
    image = data.is_image and n_gal > 0
    height = (1.45 * gal_rows if image else 0.32 * (n_gal + 2)) + 3.2
    fig = plt.figure(figsize=(12, height))
    outer = fig.add_gridspec(2, 1, height_ratios=[max(height - 3.2, 0.1), 3.0], hspace=0.35)
    if n_gal and image:
        g = outer[0].subgridspec(gal_rows, per_row * 2, wspace=0.05, hspace=0.45)
        hw = data.image_shape
        cmap = "gray_r" if (len(hw) == 2 or hw[-1] == 1) else None
        for k, row in enumerate(gallery.itertuples()):
            r, c = divmod(k, per_row)
            for side, (arr, idx, tag) in enumerate(((data.x_train, row.tr_idx, "train"),
                                                    (data.x_test, row.tt_idx, "test"))):
                ax = fig.add_subplot(g[r, 2 * c + side])
                img = np.asarray(arr[idx]).reshape(hw)
                if img.ndim == 3 and img.shape[-1] == 1:
                    img = img[..., 0]
                ax.imshow(img, cmap=cmap)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(f"{tag} {idx}", fontsize=6, labelpad=1)
                if side == 0:
                    ax.set_title(f"infl {row.infl:.2f} rank {row.rank} d {row.dist:.2g}",
                                 fontsize=6.5, loc="left")
        fig.text(0.5, 1.0 - 0.1 / height, "closest high-influence pairs (left: training example, right: test "
                 "example)", ha="center", va="top", fontsize=9)
    elif n_gal:
        ax = fig.add_subplot(outer[0])
        ax.axis("off")
        cols = ["tr_idx", "tt_idx", "label", "infl", "dist", "rank", "near_duplicate"]
        cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in gallery[cols].itertuples(index=False)]
        tab = ax.table(cellText=cells, colLabels=cols, loc="center")
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        ax.set_title("closest high-influence pairs (features have no image shape)", fontsize=9)
    ax = fig.add_subplot(outer[1])
    if len(rank):
        edges = _rank_bins(int(max(rank.max(), rrank.max())))
        h1 = np.histogram(rank, edges)[0] / len(rank)
        h2 = np.histogram(rrank, edges)[0] / len(rrank)
        xs = np.arange(len(edges) - 1)
        ax.bar(xs - 0.2, h1, 0.4, label=f"high-influence pairs (infl >= {s['threshold']}, n={s['n_pairs']})")
        ax.bar(xs + 0.2, h2, 0.4, label="random same-class pairs", color="tab:gray")
        labels = [str(a) if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no high-influence pairs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("rank of the training example among its class by distance to the test example (1 = nearest)")
    ax.set_ylabel("share of pairs")
    ax.set_title(f"near-duplicates: {100 * s['share_near_duplicate']:.1f}% of high-influence pairs vs "
                 f"{100 * s['random_share_near_duplicate']:.1f}% of random pairs", fontsize=9)
    return fig

