"""Exact duplicate rows within the training set and across train and test."""

import numpy as np

import tailscope as ts
from tailscope.data.duplicates import exact_duplicates


def test_groups_conflicts_and_test_copies():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    y = np.arange(12) % 3
    x[5], y[5] = x[1], y[1]          # same label: a plain duplicate
    x[7], y[7] = x[2], (y[2] + 1) % 3  # another label: a conflict
    x[9] = x[2]
    x[0, 0], x[11, 0] = 0.0, -0.0     # signed zeros are the same input
    x[11, 1:] = x[0, 1:]
    y[11] = y[0]
    xt = np.stack([x[1], rng.normal(size=3), x[4]])
    data = ts.from_arrays(x, y, xt, np.array([y[1], 0, (y[4] + 1) % 3]))
    dup = exact_duplicates(data)
    groups = {tuple(dup.members(g)) for g in range(dup.n_groups)}
    assert groups == {(1, 5), (2, 7, 9), (0, 11)}
    assert [tuple(dup.members(g)) for g in dup.conflicting_groups] == [(2, 7, 9)]
    assert dup.test_copy_of[0] in (1, 5) and dup.test_copy_of[1] == -1 and dup.test_copy_of[2] == 4
    assert dup.summary(data) == {"groups": 3, "train_in_groups": 7, "conflicting_groups": 1,
                                 "train_in_conflicting_groups": 3, "test_with_train_copy": 2,
                                 "test_copy_other_label": 1}


def test_no_duplicates_and_images():
    data = ts.load_dataset("digits")
    dup = exact_duplicates(data)
    assert dup.train_group.shape == (data.n_train,) and dup.test_copy_of.shape == (data.n_test,)
    keys = {data.x_train[i].tobytes() for i in range(data.n_train)}
    assert dup.n_train_in_groups == data.n_train - len(keys) + dup.n_groups


def test_every_missing_value_is_the_same_input():
    x = np.array([[1.0, np.nan], [1.0, -np.float64(np.nan)], [2.0, 3.0], [4.0, 5.0]])
    x[1, 1] = np.copysign(np.nan, -1.0)  # a NaN with its sign bit set, as 0/0 can give
    data = ts.from_arrays(x, [0, 0, 1, 1], x_test=x[2:], y_test=[1, 1], allow_missing=True)
    assert [tuple(exact_duplicates(data).members(0))] == [(0, 1)]
