"""Streaming estimators of memorization and influence over the trial store.

All sums are accumulated block by block: memory is one block of trials plus the
accumulators of one tile of training examples, never all trials at once.

For training example i, with t_in trials that trained on it and t_out that did not,

    mem(i)     = mean_in [correct_k(i)] - mean_out [correct_k(i)]
    infl(i, j) = mean_in [correct_k(j)] - mean_out [correct_k(j)]    (test example j)
    se         = sqrt(s_in^2 / t_in + s_out^2 / t_out)               (sample variances, ddof=1)

The "soft" versions use the probability of the true label instead of 0/1 correctness.

Beside the plug-in SE (0 when all of an example's outcomes agree), mem gets a 95%
Agresti-Caffo interval (:func:`tailscope.scores.mem_interval`). The kept influence pairs
get an estimate of their noise share: the number of eligible pairs expected at or above
the threshold if no training example influenced any test example (an exact hypergeometric
null, :func:`null_expected_pairs`), over the number found. The mirror count (pairs at or
below -threshold) is kept beside it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailscope.design import theoretical_se_bound
from tailscope.learners.base import Predictions
from tailscope.scores import TIE_TOL, Scores, at_least, mem_interval
from tailscope.store import Block, TrialStore

PAPER_MEM_THRESHOLD = 0.25
PAPER_INFL_THRESHOLD = 0.15


@dataclass
class EstimateOptions:
    """Knobs of :func:`estimate`.

    infl_threshold : pairs with influence at or above it are kept (paper: 0.15). Pairs at
        or below minus it are counted (``n_pairs_negative``, the mirror count), and the
        number expected by chance with no influence at all (``n_pairs_null``) estimates the
        kept pairs' noise share (``Scores.pairs_false_share_est``, also in its summary).
    same_class : keep only pairs whose train and test labels agree (paper: yes).
    top_k : the k most influential training examples per test example (0: none; at
        most n are kept). Ties go to the lower training index, whatever the tiling.
        Slots with no eligible training example (a class with fewer than k training
        examples under ``same_class``, or examples without an estimate) hold index -1
        and value/SE NaN.
    max_pairs : cap on kept pairs (the largest are kept), guarding against noisy studies.
    memory_budget : bytes for influence accumulators; decides the tile size.
    full_matrix_path : if set, write the full (n, n_test) influence matrix and its SE
        to this Zarr path, tile by tile; its group attribute
        ``tailscope_influence_matrix["complete"]`` turns True once every tile is written
        (an estimate stopped midway leaves False, and rows not yet written read as 0).
    """

    infl_threshold: float = PAPER_INFL_THRESHOLD
    same_class: bool = True
    top_k: int = 10
    max_pairs: int = 1_000_000
    memory_budget: int = 1 << 30
    full_matrix_path: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first option out of range."""
        for name, low in (("top_k", 0), ("max_pairs", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {v!r}.")
            if v < low:
                raise ValueError(f"{name} must be >= {low}, got {v}"
                                 + (" (0 keeps no top-k list)." if name == "top_k" else "."))
        if (isinstance(self.memory_budget, bool) or not isinstance(self.memory_budget, int | np.integer)
                or self.memory_budget <= 0):
            raise ValueError(f"memory_budget must be a positive number of bytes, got {self.memory_budget!r}.")
        t = self.infl_threshold
        if isinstance(t, bool) or not isinstance(t, int | float | np.integer | np.floating) or not np.isfinite(t):
            raise ValueError(f"infl_threshold must be a finite number, got {t!r}.")
        if not isinstance(self.same_class, bool | np.bool_):
            raise ValueError(f"same_class must be True or False, got {self.same_class!r}.")
        if self.full_matrix_path is not None and not isinstance(self.full_matrix_path, str | os.PathLike):
            raise ValueError(f"full_matrix_path must be a folder path or URL, got {self.full_matrix_path!r}.")


def _as_store(store) -> TrialStore:
    """A TrialStore from a store, a Study, or a study path/URL; a TypeError naming the fix otherwise."""
    if isinstance(store, TrialStore):
        return store
    if isinstance(store, str | os.PathLike):
        return TrialStore.open(store)
    from tailscope.study import Study

    if isinstance(store, Study):
        return store.store
    raise TypeError(f"estimate() needs a TrialStore, a Study or a study path, got {type(store).__name__}; "
                    "pass ts.TrialStore.open(path) or the study directory.")


class _Moments:
    """Sums for the in/out contrast of one score: count, sum and sum of squares."""

    def __init__(self, shape):
        self.s_in = np.zeros(shape)
        self.q_in = np.zeros(shape)
        self.s_all = np.zeros(shape[-1:]) if len(shape) > 1 else np.zeros(shape)
        self.q_all = np.zeros_like(self.s_all)

    def rows(self, sl: slice) -> _Moments:
        """The same sums restricted to a slice of rows (views, no copies)."""
        out = _Moments.__new__(_Moments)
        out.s_in, out.q_in, out.s_all, out.q_all = self.s_in[sl], self.q_in[sl], self.s_all, self.q_all
        return out

    def contrast(self, n_in, n_out):
        """(estimate, standard error) from the sums; n_in/n_out broadcast against the sums."""
        s_out, q_out = self.s_all - self.s_in, self.q_all - self.q_in
        with np.errstate(invalid="ignore", divide="ignore"):
            m_in, m_out = self.s_in / n_in, s_out / n_out
            v_in = _variance(self.q_in, m_in, n_in)
            v_out = _variance(q_out, m_out, n_out)
            return m_in - m_out, np.sqrt(v_in / n_in + v_out / n_out), m_in, m_out


def trial_accuracies(correct_train: np.ndarray, mask: np.ndarray, correct_test: np.ndarray):
    """Per trial: accuracy on the training examples it trained on, on those it did not (NaN
    where there are none), and on the test set. Arguments are (K, n) correctness and masks."""
    n_in, n_out = mask.sum(1), (~mask).sum(1)
    right = np.asarray(correct_train, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_in = np.where(n_in > 0, (right * mask).sum(1) / n_in, np.nan)
        acc_out = np.where(n_out > 0, (right * ~mask).sum(1) / n_out, np.nan)
    return acc_in, acc_out, np.asarray(correct_test, dtype=np.float64).mean(1)


def _variance(q, m, n):
    """Sample variance from sums of squares; NaN with fewer than two trials (not a rounding residue / 0 = inf).

    ``n`` is per row or per column: the NaN fix-up runs only where such counts exist.
    """
    v = np.clip(q - n * m**2, 0, None)
    v /= n - 1
    few = np.asarray(n) <= 1
    if few.any():
        v = np.where(few, np.nan, v)
    return v


def estimate(store: TrialStore | str | Path, options: EstimateOptions | None = None,
             progress=None, first_trials: int | None = None) -> Scores:
    """Memorization and influence scores from every done trial in ``store``.

    Parameters
    ----------
    store : TrialStore, Study, or a study directory / URL (opened read-only)
    options : EstimateOptions
    progress : callable(done_blocks, total_blocks) or None
    first_trials : int, optional
        Use only the done trials with index below this. Trial k depends only on
        (config, k), so the first t trials of a grown study are exactly the trials of a
        t-trial study with the same config.

    Returns
    -------
    Scores
    """
    store = _as_store(store)
    opt = options or EstimateOptions()
    if not isinstance(opt, EstimateOptions):
        raise TypeError(f"options must be an EstimateOptions, got {type(opt).__name__}; e.g. "
                        "ts.estimate(store, ts.EstimateOptions(infl_threshold=0.15)).")
    opt.validate()  # fields may have been changed after construction
    if first_trials is not None and (isinstance(first_trials, bool) or int(first_trials) != first_trials
                                     or first_trials < 2):
        raise ValueError(f"first_trials must be an integer >= 2, got {first_trials!r}.")
    y_tr, y_te = store.y_train, store.y_test
    n, n_test = len(y_tr), len(y_te)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    mem = _MemAccumulator(n, n_classes)
    tiles = _tiles(n, n_test, opt.memory_budget)
    infl = _InfluenceCollector(y_tr, y_te, opt)
    passes = len(tiles)
    # one snapshot of the done flags: every pass reads the same trials, even while shards
    # finish, the study grows or a repair clears blocks (the counts must match the sums)
    done = store.done()
    n_blocks = -(-len(done) // store.block)
    for p, tile in enumerate(tiles):
        acc = _InflAccumulator(tile, n_test)
        # after the first pass only test predictions are needed
        fields = None if p == 0 else ("test_pred", "test_prob")
        for b, blk in enumerate(store.iter_blocks(fields, first_trials, done)):
            if first_trials is not None:
                blk = _head(blk, int(first_trials))
                if blk is None:
                    continue
            c_te = (blk.preds.test_pred == y_te).astype(np.float32)
            p_te = blk.preds.test_prob
            if p == 0:
                mem.add(blk, y_tr, c_te)
            acc.add(blk.mask[:, tile], c_te, p_te)
            if progress:
                progress(p * n_blocks + b + 1, passes * n_blocks)
        acc.flush()
        if mem.trials < 2:
            raise ValueError(f"only {mem.trials} trials are done in {store.path}; run the study first "
                             "(estimates need trials both with and without each example).")
        infl.add_tile(tile, acc, mem.n_in[tile], mem.n_out[tile])
    infl.finish()
    # (with each example's row in the user's data, where the store recorded it)
    scores = mem.scores(y_tr, y_te, infl, store.config, store.rows())
    scores.options = {"infl_threshold": float(opt.infl_threshold), "same_class": bool(opt.same_class),
                      "top_k": int(opt.top_k), "max_pairs": int(opt.max_pairs), "pairs_found": int(infl.found)}
    scores.n_pairs_negative = infl.negative
    if opt.infl_threshold > 0:
        scores.n_pairs_null = null_expected_pairs(mem.n_in, mem.n_out, np.rint(mem.test_correct), y_tr, y_te,
                                                  float(opt.infl_threshold), bool(opt.same_class))
    if infl.found > opt.max_pairs:
        warnings.warn(f"{infl.found:,} pairs have influence >= {opt.infl_threshold:g}, more than max_pairs="
                      f"{opt.max_pairs:,}; only the {opt.max_pairs:,} largest are kept (Scores.pairs is cut "
                      "below its smallest value). Raise max_pairs or infl_threshold to keep a complete set.",
                      stacklevel=2)
    return scores


# a Chernoff exponent above this puts a tail below e^-60 (1e-26): set to 0 (or its complement to 1)
CHERNOFF_CUT = 60.0


def _chernoff_exponent(count, a, p):
    """a * KL(count/a || p): P(X >= count) (count above a p), or P(X <= count) (below), is at most
    e^-exponent for X binomial(a, p), and for X hypergeometric with a draws and success share p
    (Hoeffding 1963: sampling without replacement is no more spread)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(count / np.maximum(a, 1), 0.0, 1.0)
        p = np.clip(p, 1e-300, 1 - 1e-16)
        kl = np.where(q > 0, q * np.log(q / p), 0.0) + np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0)
    return np.nan_to_num(a * kl, nan=0.0, posinf=np.inf)


def null_expected_pairs(n_in: np.ndarray, n_out: np.ndarray, test_correct: np.ndarray, y_tr: np.ndarray,
                        y_te: np.ndarray, threshold: float, same_class: bool) -> float:
    """How many eligible pairs would reach infl >= ``threshold`` if no training example
    influenced any test example: the expected number of noise pairs among those found.

    Under that null, whether test example j is right in a trial does not depend on whether
    the trial holds training example i. Given j's ``K`` correct trials among ``t``, the number
    of them among i's ``n_in`` trials is then hypergeometric (t, K, n_in), and infl >= thr
    needs at least ceil((K n_in + thr n_in n_out) / t) of them. The expectation sums that
    tail over the eligible pairs (same class when kept pairs are; examples held in and out
    of some trials), grouped by their (n_in, K): one tail probability per group, however many
    pairs, most of them settled by the support or a Chernoff bound (measured: 0.1 s at 480
    trials and about 1 s at 2,000 for 60,000 x 10,000 examples; 6-10 s at 10,000 trials). Exact for any accuracy, unlike a mirror count at -threshold, whose tail
    differs when test examples are almost always right or wrong. Pairs with true influence
    count too, so it leans towards more noise, not less.
    """
    from scipy.stats import hypergeom

    t = int(round(float(n_in[0] + n_out[0]))) if len(n_in) else 0
    ok = (n_in >= 1) & (n_out >= 1)  # pairs of other training examples have no estimate
    a_vals, a_idx = np.unique(n_in[ok].astype(np.int64), return_inverse=True)
    k_vals, k_idx = np.unique(test_correct.astype(np.int64), return_inverse=True)
    if not len(a_vals) or not len(k_vals):
        return 0.0
    a, k = a_vals[:, None], k_vals[None, :]
    need = np.ceil((k * a + (threshold - TIE_TOL) * a * (t - a)) / t - 1e-9)
    # P(at least `need` of j's right trials hold i). Cells the support decides, or the Chernoff
    # bound settles to within e^-60 (it holds for sampling without replacement too), are set;
    # scipy computes the rest (~45 us a cell: millions of cells at 10,000 trials)
    low, high = np.maximum(0, k + a - t), np.minimum(a, k)  # the support of the count
    above = need > k * a / t
    settled = _chernoff_exponent(np.where(above, need, need - 1), a, k / t) > CHERNOFF_CUT
    tail = np.where(need <= low, 1.0, np.where(need > high, 0.0, np.where(above, 0.0, 1.0)))
    rows, cols = np.nonzero(~settled & (need > low) & (need <= high))
    tail[rows, cols] = hypergeom.sf(need[rows, cols] - 1, t, k_vals[cols], a_vals[rows])
    classes = np.unique(np.concatenate([y_tr, y_te]))
    groups = [(y_tr[ok] == c, y_te == c) for c in classes] if same_class else [(slice(None), slice(None))]
    total = 0.0
    for tr, te in groups:
        per_a = np.bincount(a_idx[tr], minlength=len(a_vals))
        per_k = np.bincount(k_idx[te], minlength=len(k_vals))
        total += float(per_a @ tail @ per_k)
    return total


def _head(blk: Block, limit: int) -> Block | None:
    """The trials of ``blk`` with index below ``limit`` (None when there are none)."""
    keep = blk.trials < limit
    if keep.all():
        return blk
    if not keep.any():
        return None
    p = blk.preds
    return Block(trials=blk.trials[keep], mask=blk.mask[keep], seed=blk.seed[keep],
                 preds=Predictions(*(a[keep] if a.shape[0] == len(keep) else a
                                     for a in (p.train_pred, p.train_prob, p.test_pred, p.test_prob))))


MATRIX_MARK = "tailscope_influence_matrix"  # attribute of a full_matrix_path group this module wrote


def _open_matrix(path: str, n: int, n_test: int):
    """A fresh zarr group at ``path`` for the full influence matrix.

    Refuses (before anything is written) a path that holds anything but an influence
    matrix of an earlier estimate: opening it for writing would delete what is there,
    a study included.
    """
    import fsspec
    import zarr

    fs, root = fsspec.core.url_to_fs(path)
    if fs.exists(root):
        names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(root, detail=False)] if fs.isdir(root) else None
        if names is None or (names and not _is_matrix(path)):
            what = "is a file" if names is None else f"holds other files ({', '.join(sorted(names)[:5])})"
            raise ValueError(f"full_matrix_path {path} {what}; writing the influence matrix there would delete "
                             "them. Pass a new folder (an influence matrix of an earlier estimate may be "
                             "replaced).")
    g = zarr.open_group(path, mode="w")
    # "complete" turns True only after the last tile: an estimate killed midway leaves a matrix
    # that says it is partial (its unwritten rows read as 0)
    g.attrs[MATRIX_MARK] = {"n_train": n, "n_test": n_test, "complete": False}
    return g


def _is_matrix(path: str) -> bool:
    import zarr

    try:
        return MATRIX_MARK in zarr.open_group(path, mode="r").attrs
    except Exception:  # not a zarr group at all
        return False


def _tiles(n: int, n_test: int, budget: int) -> list[np.ndarray]:
    # per (row, test) entry: 3 float64 sums and the float32 product of a flush
    # (3 values); contrasts are computed a few rows at a time (see add_tile).
    rows = max(1, min(n, budget // (36 * max(n_test, 1))))
    return [np.arange(a, min(a + rows, n)) for a in range(0, n, rows)]


class _MemAccumulator:
    """Per-training-example sums (memorization), held-out predictions and accuracy curves."""

    def __init__(self, n: int, n_classes: int):
        self.n, self.C = n, n_classes
        self.n_in = np.zeros(n)
        self.hard, self.soft = _Moments((n,)), _Moments((n,))
        self.out_pred = np.zeros(n * n_classes, dtype=np.int64)
        self.trials = 0
        self.test_acc: list[float] = []
        self.in_acc: list[float] = []
        self.out_acc: list[float] = []
        self.curve: list[tuple[int, float]] = []
        self.test_correct: np.ndarray | float = 0.0  # per test example: trials that got it right

    def add(self, blk: Block, y_tr: np.ndarray, c_te: np.ndarray) -> None:
        m = blk.mask
        c = (blk.preds.train_pred == y_tr).astype(np.float64)
        s = blk.preds.train_prob.astype(np.float64)
        self.n_in += m.sum(0)
        self.test_correct = self.test_correct + c_te.sum(0, dtype=np.float64)
        for mom, v in ((self.hard, c), (self.soft, s)):
            mom.s_in += (v * m).sum(0)
            mom.q_in += (v * v * m).sum(0)
            mom.s_all += v.sum(0)
            mom.q_all += (v * v).sum(0)
        out_k, out_i = np.nonzero(~m)
        flat = out_i * self.C + blk.preds.train_pred[out_k, out_i].astype(np.int64)
        self.out_pred += np.bincount(flat, minlength=self.n * self.C)
        self.trials += len(m)
        acc_in, acc_out, acc_test = trial_accuracies(c, m, c_te)
        self.in_acc += acc_in.tolist()
        self.out_acc += acc_out.tolist()
        self.test_acc += acc_test.tolist()
        _, se, _, _ = self.hard.contrast(self.n_in, self.n_out)
        self.curve.append((self.trials, float(np.nanmedian(se)) if np.isfinite(se).any() else np.nan))

    @property
    def n_out(self) -> np.ndarray:
        return self.trials - self.n_in

    def scores(self, y_tr, y_te, infl: _InfluenceCollector, config: dict,
               rows: tuple[np.ndarray, np.ndarray] | None = None) -> Scores:
        mem, se, p_in, p_out = self.hard.contrast(self.n_in, self.n_out)
        smem, sse, sp_in, sp_out = self.soft.contrast(self.n_in, self.n_out)
        ci_low, ci_high = mem_interval(p_in, self.n_in, p_out, self.n_out)
        sci_low, sci_high = mem_interval(np.clip(sp_in, 0, 1), self.n_in, np.clip(sp_out, 0, 1), self.n_out)
        counts = self.out_pred.reshape(self.n, self.C)
        n_out = counts.sum(1)
        ratio = config["design"]["ratio"]
        curve = np.array(self.curve, dtype=float).reshape(-1, 2)
        return Scores(
            y_train=y_tr, y_test=y_te, classes=list(config["dataset"].get("classes") or
                                                   [str(c) for c in range(self.C)]),
            mem=mem, mem_se=se, soft_mem=smem, soft_mem_se=sse, n_in=self.n_in.astype(np.int64),
            n_out=self.n_out.astype(np.int64), acc_in=p_in, acc_out=p_out,
            out_pred=counts.argmax(1), out_pred_share=np.divide(counts.max(1), n_out,
                                                                out=np.zeros(self.n), where=n_out > 0),
            pairs=infl.pairs_frame(), topk_idx=infl.topk_idx, topk_infl=infl.topk_val,
            topk_se=infl.topk_se, max_infl=infl.max_infl, max_infl_test=infl.max_infl_arg,
            trials=self.trials, ratio=ratio, se_bound=theoretical_se_bound(self.trials, ratio),
            se_curve_trials=curve[:, 0].astype(np.int64), se_curve_median=curve[:, 1],
            trial_test_acc=np.array(self.test_acc), trial_in_acc=np.array(self.in_acc),
            trial_out_acc=np.array(self.out_acc), config=config,
            mem_ci_low=ci_low, mem_ci_high=ci_high, soft_mem_ci_low=sci_low, soft_mem_ci_high=sci_high,
            train_row=None if rows is None else rows[0], test_row=None if rows is None else rows[1],
        )


class _InflAccumulator:
    """(tile, n_test) sums of test correctness for trials that included each tile row.

    Blocks are buffered until ``flush_trials`` trials are waiting, then one float32
    matrix product over [hard, soft, soft^2] updates the float64 sums: fewer, larger
    products run near the BLAS peak. Hard values are 0/1 (exact in float32 sums of a
    few hundred); soft values are shifted first (see ``add``), which leaves contrasts
    and variances unchanged but keeps their float32 sums accurate.
    """

    def __init__(self, tile: np.ndarray, n_test: int, flush_trials: int = 256):
        self.n_test, self.flush_trials = n_test, flush_trials
        self.hard, self.soft = _Moments((len(tile), n_test)), _Moments((len(tile), n_test))
        self.masks: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.waiting = 0
        self.shift: np.ndarray | None = None  # (n_test,), see add

    def add(self, m_tile: np.ndarray, c_te: np.ndarray, p_te: np.ndarray) -> None:
        # probabilities are summed shifted by each test example's mean in the first block:
        # the SE then comes from small numbers, not from sum(p^2) - n mean^2 of two
        # nearly equal float32 sums (p near 1 with a tiny spread lost all its digits)
        if self.shift is None:
            self.shift = p_te.mean(0, dtype=np.float64).astype(np.float32)
        p_te = p_te.astype(np.float32) - self.shift
        self.masks.append(m_tile)
        self.values.append(np.concatenate([c_te, p_te, p_te * p_te], axis=1))
        self.waiting += len(m_tile)
        if self.waiting >= self.flush_trials:
            self.flush()

    def flush(self) -> None:
        if not self.waiting:
            return
        m = np.concatenate(self.masks).astype(np.float32)  # (K, tile)
        v = np.concatenate(self.values)  # (K, 3 n_test)
        self.masks, self.values, self.waiting = [], [], 0
        prod = m.T @ v  # matrix products do the per-pair sums
        col = v.sum(0, dtype=np.float64)
        t = self.n_test
        self.hard.s_in += prod[:, :t]
        self.hard.s_all += col[:t]
        self.soft.s_in += prod[:, t: 2 * t]
        self.soft.q_in += prod[:, 2 * t:]
        self.soft.s_all += col[t: 2 * t]
        self.soft.q_all += col[2 * t:]
        # 0/1 values: squares equal values
        self.hard.q_in, self.hard.q_all = self.hard.s_in, self.hard.s_all


def _top_rows(scored: np.ndarray, kk: int) -> np.ndarray:
    """Row indices (kk, n_cols) of each column's kk largest values, ties to the lower row.

    ``argpartition`` alone keeps an arbitrary subset of the values tied at the kk-th
    place, which would make the top-k depend on how rows are tiled.
    """
    if kk >= len(scored):
        return np.broadcast_to(np.arange(len(scored))[:, None], scored.shape).copy()
    kth = np.partition(scored, len(scored) - kk, axis=0)[len(scored) - kk]  # kk-th largest per column
    take = scored >= kth
    cols = np.flatnonzero(take.sum(0) > kk)  # columns with more rows tied at the kk-th value than fit
    if len(cols):  # there only: the tied rows go lowest first (3x faster than on every column)
        sub, at = scored[:, cols], kth[cols]
        above, tied = sub > at, sub == at
        take[:, cols] = above | (tied & (np.cumsum(tied, axis=0) <= kk - above.sum(0)))
    rows, c = np.nonzero(take)
    order = np.argsort(c, kind="stable")  # grouped by column, rows ascending within each
    return rows[order].reshape(scored.shape[1], kk).T


class _InfluenceCollector:
    """Turns tiles of influence estimates into kept pairs, per-test top-k and per-train maxima."""

    def __init__(self, y_tr: np.ndarray, y_te: np.ndarray, opt: EstimateOptions):
        self.y_tr, self.y_te, self.opt = y_tr, y_te, opt
        n, n_test, k = len(y_tr), len(y_te), min(opt.top_k, len(y_tr))
        self.parts: list[dict] = []
        self.kept = 0
        # empty slots: value -inf while collecting, index -1 / NaN after finish()
        self.topk_idx = np.full((n_test, k), -1, dtype=np.int64)
        self.topk_val = np.full((n_test, k), -np.inf)
        self.topk_se = np.full((n_test, k), np.nan)
        self.max_infl = np.full(n, np.nan)
        self.max_infl_arg = np.full(n, -1, dtype=np.int64)
        self.found = 0  # pairs at or above the threshold, also those max_pairs drops
        # the mirror of the kept pairs: eligible pairs at or below -threshold (None: threshold <= 0)
        self.negative: int | None = 0 if opt.infl_threshold > 0 else None
        self.full = self.full_group = None
        if opt.full_matrix_path:
            g = self.full_group = _open_matrix(str(opt.full_matrix_path), n, n_test)
            self.full = {name: g.create_array(name, shape=(n, n_test), chunks=(min(n, 1024), n_test),
                                              dtype="float32") for name in ("infl", "infl_se")}

    def add_tile(self, tile, acc: _InflAccumulator, n_in, n_out, rows_per_step: int = 256) -> None:
        """Estimates of a tile, a few rows at a time so temporaries stay small."""
        for a in range(0, len(tile), rows_per_step):
            sl = slice(a, a + rows_per_step)
            self._add_rows(tile[sl], acc.hard.rows(sl), acc.soft.rows(sl), n_in[sl], n_out[sl])

    def _add_rows(self, tile, hard: _Moments, soft: _Moments, n_in, n_out) -> None:
        infl, se, p_in, p_out = hard.contrast(n_in[:, None], n_out[:, None])
        sinfl, sse, _, _ = soft.contrast(n_in[:, None], n_out[:, None])
        if self.full is not None:
            self.full["infl"][tile[0]: tile[-1] + 1] = infl.astype(np.float32)
            self.full["infl_se"][tile[0]: tile[-1] + 1] = se.astype(np.float32)
        same = self.y_tr[tile][:, None] == self.y_te[None, :]
        finite = np.where(np.isfinite(infl), infl, -np.inf)
        scored = np.where(same, finite, -np.inf) if self.opt.same_class else finite
        best = np.max(scored, axis=1)
        # no eligible test example (never left out, or no test example of its class): NaN, -1
        self.max_infl[tile] = np.where(np.isfinite(best), best, np.nan)
        self.max_infl_arg[tile] = np.where(np.isfinite(best), np.argmax(scored, axis=1), -1)
        self._merge_topk(tile, scored, se)
        if self.negative is not None:  # same eligibility as kept pairs; NaN compares False
            low = at_least(-infl, self.opt.infl_threshold)
            self.negative += int(np.count_nonzero(low & same if self.opt.same_class else low))
        ii, jj = np.nonzero(at_least(scored, self.opt.infl_threshold))
        if len(ii):
            # the plug-in SE under-covers for test examples almost always right: an interval that does not
            lo, hi = mem_interval(p_in[ii, jj], n_in[ii], p_out[ii, jj], n_out[ii])
            self.parts.append({"tr_idx": tile[ii], "tt_idx": jj, "infl": infl[ii, jj], "infl_se": se[ii, jj],
                               "infl_ci_low": lo, "infl_ci_high": hi,
                               "soft_infl": sinfl[ii, jj], "soft_infl_se": sse[ii, jj]})
            self.kept += len(ii)
            self.found += len(ii)
            if self.kept > 2 * self.opt.max_pairs:
                self._truncate()

    def _merge_topk(self, tile, scored, se) -> None:
        k = self.topk_idx.shape[1]
        kk = min(k, len(tile))
        if kk == 0:
            return
        part = _top_rows(scored, kk)  # (kk, n_test) rows within tile
        cols = np.arange(scored.shape[1])
        cand_val = np.concatenate([self.topk_val, scored[part, cols].T], axis=1)
        cand_idx = np.concatenate([self.topk_idx, tile[part].T], axis=1)
        cand_se = np.concatenate([self.topk_se, se[part, cols].T], axis=1)
        # ties: lower training index first, so results do not depend on the row order or tiling
        order = np.lexsort((cand_idx, -cand_val), axis=1)[:, :k]
        rows = np.arange(len(order))[:, None]
        self.topk_val, self.topk_idx, self.topk_se = cand_val[rows, order], cand_idx[rows, order], cand_se[rows, order]

    def finish(self) -> None:
        """Mark the top-k slots no eligible training example filled: index -1, value and SE NaN;
        mark a full matrix complete (every tile written)."""
        if self.full_group is not None:
            self.full_group.attrs[MATRIX_MARK] = {**self.full_group.attrs[MATRIX_MARK], "complete": True}
        empty = ~np.isfinite(self.topk_val)
        self.topk_val = np.where(empty, np.nan, self.topk_val)
        self.topk_se = np.where(empty, np.nan, self.topk_se)
        self.topk_idx = np.where(empty, -1, self.topk_idx)

    def _truncate(self) -> None:
        merged = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        keep = np.argsort(-merged["infl"], kind="stable")[: self.opt.max_pairs]
        self.parts = [{k: v[keep] for k, v in merged.items()}]
        self.kept = len(keep)

    def pairs_frame(self):
        import pandas as pd

        if self.parts:
            self._truncate()
            d = self.parts[0]
        else:
            d = {k: np.zeros(0) for k in ("tr_idx", "tt_idx", "infl", "infl_se", "infl_ci_low", "infl_ci_high",
                                          "soft_infl", "soft_infl_se")}
        df = pd.DataFrame(d).astype({"tr_idx": np.int64, "tt_idx": np.int64})
        df["tr_label"] = self.y_tr[df["tr_idx"].to_numpy()]
        df["tt_label"] = self.y_te[df["tt_idx"].to_numpy()]
        return df.sort_values(["infl", "tr_idx", "tt_idx"], ascending=[False, True, True],
                              ignore_index=True)
