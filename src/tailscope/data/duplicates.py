"""Exact duplicates: identical input rows within the training set and across train and test.

They matter to memorization: a model trained without one copy usually saw the other, so a
duplicated example's memorization estimate is lowered (about 1 - q for a pair that would
otherwise be memorized), and copies with different labels are almost always label errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailscope.data.dataset import Dataset

__all__ = ["ExactDuplicates", "exact_duplicates"]


@dataclass(frozen=True)
class ExactDuplicates:
    """Groups of identical input rows.

    Attributes
    ----------
    train_group : ndarray of int, (n_train,)
        Group id of each training example whose input occurs more than once in the training
        set, -1 for the others.
    conflicting_groups : ndarray of int
        The group ids whose copies do not all carry the same label.
    test_copy_of : ndarray of int, (n_test,)
        For each test example, a training example with the identical input, or -1.
    """

    train_group: np.ndarray
    conflicting_groups: np.ndarray
    test_copy_of: np.ndarray

    @property
    def n_groups(self) -> int:
        return int(self.train_group.max(initial=-1) + 1)

    @property
    def n_train_in_groups(self) -> int:
        return int((self.train_group >= 0).sum())

    @property
    def n_test_with_copy(self) -> int:
        return int((self.test_copy_of >= 0).sum())

    def __repr__(self) -> str:
        return (f"ExactDuplicates({self.n_groups} groups of {self.n_train_in_groups} training examples, "
                f"{len(self.conflicting_groups)} with conflicting labels; {self.n_test_with_copy} test examples "
                "with a training copy)")

    def members(self, group: int) -> np.ndarray:
        return np.flatnonzero(self.train_group == group)

    def summary(self, data: Dataset) -> dict:
        """Counts (JSON-able), including test copies whose training twin has another label."""
        copies = self.test_copy_of >= 0
        relabelled = int((data.y_train[self.test_copy_of[copies]] != data.y_test[copies]).sum())
        conflicting = np.isin(self.train_group, self.conflicting_groups) & (self.train_group >= 0)
        return {"groups": self.n_groups, "train_in_groups": self.n_train_in_groups,
                "conflicting_groups": int(len(self.conflicting_groups)),
                "train_in_conflicting_groups": int(conflicting.sum()),
                "test_with_train_copy": self.n_test_with_copy, "test_copy_other_label": relabelled}


def _row_keys(x: np.ndarray) -> np.ndarray:
    """Each row's bytes as one opaque value (rows compare equal exactly when their bytes do)."""
    rows = np.ascontiguousarray(x.reshape(len(x), -1))
    if rows.dtype.kind == "f":
        # -0.0 and 0.0 are the same input, and so is every NaN (missing) whatever its sign and payload
        rows = np.where(np.isnan(rows), np.nan, rows + 0.0).astype(rows.dtype)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def exact_duplicates(data: Dataset) -> ExactDuplicates:
    """Find training rows that occur more than once, and test rows identical to a training row."""
    n = data.n_train
    keys = _row_keys(np.concatenate([data.x_train.reshape(n, -1), data.x_test.reshape(data.n_test, -1)]))
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    train_ids = inverse[:n]
    train_counts = np.bincount(train_ids, minlength=len(counts))
    repeated = np.flatnonzero(train_counts > 1)
    group_of_key = np.full(len(counts), -1)
    group_of_key[repeated] = np.arange(len(repeated))
    train_group = group_of_key[train_ids]

    labels_low = np.full(len(repeated), np.iinfo(np.int64).max)
    labels_high = np.full(len(repeated), -1)
    grouped = train_group >= 0
    np.minimum.at(labels_low, train_group[grouped], data.y_train[grouped])
    np.maximum.at(labels_high, train_group[grouped], data.y_train[grouped])
    conflicting = np.flatnonzero(labels_low != labels_high)

    # a training example with each key (first occurrence in the concatenation is in train if any is)
    test_ids = inverse[n:]
    has_train = train_counts[test_ids] > 0
    test_copy_of = np.where(has_train, first[test_ids], -1)
    return ExactDuplicates(train_group, conflicting, test_copy_of)
