"""Helpers shared by the format loaders: subsetting a split and checking options."""

from __future__ import annotations

import numpy as np

from tailscope.data.dataset import DataError

LIMIT_MODES = ("stratified", "first")


def check_limit(name: str, limit, mode: str) -> int | None:
    """Validate a ``limit_train``/``limit_test`` option; return it as an int or None."""
    if mode not in LIMIT_MODES:
        raise DataError(f"limit_mode must be one of {LIMIT_MODES}, got {mode!r}.")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(f"{name} must be a positive integer (number of examples to keep) or None, "
                        f"got {limit!r}.")
    return int(limit)


def subset_indices(y: np.ndarray, limit: int | None, mode: str = "stratified", seed: int = 0) -> np.ndarray | None:
    """Indices (sorted) of a subset of size ``limit`` of the examples with labels ``y``.

    ``mode="first"`` keeps the first ``limit`` examples. ``mode="stratified"`` keeps
    class proportions (largest-remainder rounding, at least one example per class when
    ``limit`` allows) and draws within each class with ``np.random.default_rng(seed)``.
    Returns None when no subsetting is needed (``limit`` is None or >= len(y)).
    """
    n = len(y)
    if limit is None or limit >= n:
        return None
    if mode == "first":
        return np.arange(limit)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    if limit >= len(classes):
        quota += 1
    rest = limit - int(quota.sum())
    spare = counts - quota
    share = rest * spare / max(int(spare.sum()), 1)
    add = np.minimum(np.floor(share).astype(np.int64), spare)
    quota += add
    left = limit - int(quota.sum())
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    while left > 0:  # hand out the remainder to the largest fractional parts, skipping full classes
        for c in order:
            if left == 0:
                break
            if quota[c] < counts[c]:
                quota[c] += 1
                left -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), size=int(q), replace=False)
              for c, q in zip(classes, quota, strict=True) if q > 0]
    return np.sort(np.concatenate(picked))
