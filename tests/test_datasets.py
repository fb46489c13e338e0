"""Dataset validation, npz splits, subsets and preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from tailscope import DataError, Dataset, from_arrays, load_dataset
from tailscope.data.formats._common import subset_indices
from tailscope.data.preprocess import preprocess


def arrays(n_train=12, n_test=6, shape=(4, 3), n_classes=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, (n_train, *shape)).astype(dtype)
    x_te = rng.integers(0, 256, (n_test, *shape)).astype(dtype)
    return x_tr, np.arange(n_train) % n_classes, x_te, np.arange(n_test) % n_classes


# -------------------------------------------------------------------------------------- validation


def test_valid_dataset_normalises_labels():
    x_tr, y_tr, x_te, y_te = arrays()
    ds = Dataset(x_tr, y_tr.astype(np.uint8), x_te, y_te.astype(np.int32), ["a", "b", "c"])
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.n_classes == 3 and ds.n_train == 12


def test_integer_valued_float_labels_are_accepted():
    x_tr, y_tr, x_te, y_te = arrays()
    ds = Dataset(x_tr, y_tr.astype(np.float32), x_te, y_te.astype(np.float64), ["a", "b", "c"])
    assert ds.y_train.dtype == np.int64 and ds.y_train.tolist() == y_tr.tolist()


@pytest.mark.parametrize("mutate,pattern", [
    (lambda a: (a[0][:-1], a[1], a[2], a[3]), r"x_train has 11 rows but y_train has 12 labels"),
    (lambda a: (a[0], a[1], a[2], a[3][:-2]), r"x_test has 6 rows but y_test has 4 labels"),
    (lambda a: (np.where(np.arange(12)[:, None, None] == 3, np.nan, a[0].astype(np.float32)), *a[1:]),
     r"x_train contains NaN or inf in 1 rows"),
    (lambda a: (a[0], a[1], np.full(a[2].shape, np.inf), a[3]), r"x_test contains NaN or inf in 6 rows"),
    (lambda a: (a[0], a[1] + 0.5, a[2], a[3]), r"y_train must hold integer class labels"),
    (lambda a: (a[0], a[1].astype(str), a[2], a[3]), r"y_train has dtype <U\d+; labels must be integers"),
    (lambda a: (a[0], a[1], a[2], a[3] + 1), r"y_test has labels \[3\] that no training example has"),
    (lambda a: (a[0], a[1] - 1, a[2], a[3]), r"y_train has labels in \[-1, 1\]"),
    (lambda a: (a[0], np.where(a[1] == 1, 0, a[1]), a[2], a[3]), r"classes \[1\] have no training examples"),
    (lambda a: (a[0][:, 0, 0], a[1], a[2], a[3]), r"x_train must have one row per example \(at least 2-D\)"),
    (lambda a: (a[0], a[1][:, None], a[2], a[3]), r"y_train must be 1-D"),
    (lambda a: (a[0], a[1], a[2][:, :2], a[3]), r"x_train rows have shape \(4, 3\) but x_test rows have shape \(2, 3\)"),
    (lambda a: (a[0].astype(object), *a[1:]), r"x_train has dtype object"),
    (lambda a: (a[0].tolist(), *a[1:]), r"x_train must be a numpy array"),
    (lambda a: (a[0], a[1], a[2][:0], a[3][:0]), r"the test split is empty"),
])
def test_validation_errors_are_dataerrors_with_fixes(mutate, pattern):
    args = mutate(arrays())
    with pytest.raises(DataError, match=pattern):
        Dataset(*args, classes=["a", "b", "c"])


def test_too_few_classes_and_mismatched_from_arrays():
    x_tr, y_tr, x_te, y_te = arrays()
    with pytest.raises(DataError, match="at least 2 classes"):
        Dataset(x_tr, y_tr * 0, x_te, y_te * 0, classes=["only"])
    with pytest.raises(DataError, match="both x_test and y_test"):
        from_arrays(x_tr, y_tr, x_te)
    with pytest.raises(DataError, match="x has 11 rows but y has 12 labels"):
        from_arrays(x_tr[:-1], y_tr)
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------------------------ npz and split


def test_npz_xy_split_is_stratified_and_seeded(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], [40, 30, 20, 10])
    x = rng.normal(size=(100, 5)).astype(np.float32)
    x[:, 0] = np.arange(100)  # row ids, to check which rows went where
    p = tmp_path / "xy.npz"
    np.savez(p, x=x, y=y, classes=np.array(["w", "x", "y", "z"]))
    a = load_dataset(f"npz:{p}", test_fraction=0.2, split_seed=7)
    b = load_dataset(str(p), test_fraction=0.2, split_seed=7)
    c = load_dataset(f"npz:{p}", test_fraction=0.2, split_seed=8)
    assert np.bincount(a.y_test).tolist() == [8, 6, 4, 2]  # exactly 20% of every class
    assert np.bincount(a.y_train).tolist() == [32, 24, 16, 8]
    assert a.fingerprint == b.fingerprint and a.fingerprint != c.fingerprint
    ids = np.concatenate([a.x_train[:, 0], a.x_test[:, 0]]).astype(int)
    assert sorted(ids.tolist()) == list(range(100))  # a partition, nothing lost or repeated
    np.testing.assert_array_equal(y[a.x_test[:, 0].astype(int)], a.y_test)
    assert a.classes == ["w", "x", "y", "z"]
    assert a.meta["split_seed"] == 7 and a.meta["test_fraction"] == 0.2


def test_npz_explicit_split_and_errors(tmp_path):
    x_tr, y_tr, x_te, y_te = arrays()
    p = tmp_path / "s.npz"
    np.savez(p, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    ds = load_dataset(f"npz:{p}")
    np.testing.assert_array_equal(ds.x_test, x_te)
    assert ds.image_shape == (4, 3, 1)
    np.savez(tmp_path / "bad.npz", a=x_tr)
    with pytest.raises(DataError, match="expected x_train"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")
    with pytest.raises(DataError, match="test_fraction must be a number in"):
        from_arrays(x_tr, y_tr, test_fraction=1.5)


# ------------------------------------------------------------------------------------------ subsets


def test_subset_indices_stratified_and_first():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    idx = subset_indices(y, 10, "stratified", seed=0)
    assert len(idx) == 10 and np.bincount(y[idx]).tolist() == [5, 3, 2]
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, subset_indices(y, 10, "stratified", seed=0))
    assert not np.array_equal(idx, subset_indices(y, 10, "stratified", seed=1))
    small = subset_indices(np.repeat([0, 1, 2], [97, 2, 1]), 5, "stratified", seed=0)
    assert set(np.repeat([0, 1, 2], [97, 2, 1])[small]) == {0, 1, 2}  # every class kept
    np.testing.assert_array_equal(subset_indices(y, 4, "first"), np.arange(4))
    assert subset_indices(y, 100, "first") is None and subset_indices(y, None) is None
    for k in (1, 2, 3, 7, 33, 99):
        assert len(subset_indices(y, k, "stratified", seed=k)) == k


# ------------------------------------------------------------------------------------ preprocessing


def image_set(n_train=40, n_test=10, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (5, 4, channels) if channels > 1 else (5, 4)
    x_tr = rng.integers(0, 256, (n_train, *shape), dtype=np.uint8)
    x_te = rng.integers(0, 256, (n_test, *shape), dtype=np.uint8)
    return from_arrays(x_tr, np.arange(n_train) % 2, x_te, np.arange(n_test) % 2, name="img")


def test_preprocess_unit_scale():
    ds = image_set()
    p = preprocess(ds, scale="unit")
    assert p.x_train.dtype == np.float32 and p.x_train.shape == ds.x_train.shape
    np.testing.assert_allclose(p.x_train, ds.x_train / 255.0, rtol=1e-6)
    np.testing.assert_allclose(p.x_test, ds.x_test / 255.0, rtol=1e-6)
    assert p.meta["preprocess"][-1]["divisor"] == 255.0
    assert p.fingerprint != ds.fingerprint
    np.testing.assert_array_equal(p.y_train, ds.y_train)
    assert ds.x_train.dtype == np.uint8  # input untouched


def test_preprocess_uses_pixel_max_from_meta():
    x_tr, y_tr, x_te, y_te = arrays()
    ds = Dataset(x_tr % 17, y_tr, x_te % 17, y_te, ["a", "b", "c"], meta={"pixel_max": 16})
    p = preprocess(ds, scale="unit")
    np.testing.assert_allclose(p.x_train, (x_tr % 17) / 16.0, rtol=1e-6)
    assert "pixel_max" not in p.meta and p.meta["preprocess"][0]["input_pixel_max"] == 16


def test_preprocess_per_channel_uses_training_statistics_only():
    ds = image_set(channels=3)
    p = preprocess(ds, scale="unit", normalize="per_channel", chunk_size=7)
    x = ds.x_train.astype(np.float64) / 255
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2))
    rec = p.meta["preprocess"][-1]
    np.testing.assert_allclose(rec["mean"], mean, rtol=1e-10)
    np.testing.assert_allclose(rec["std"], std, rtol=1e-10)
    np.testing.assert_allclose(p.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(p.x_train.std(axis=(0, 1, 2)), 1, atol=1e-4)
    np.testing.assert_allclose(p.x_test, (ds.x_test / 255 - mean) / std, atol=1e-5)  # train stats on test
    assert rec["fit_on"] == "train"


def test_preprocess_per_feature_flatten_and_constant_features():
    ds = image_set(channels=1)
    x_tr = ds.x_train.copy()
    x_tr[:, 0, 0] = 9  # a constant pixel
    ds = from_arrays(x_tr, ds.y_train, ds.x_test, ds.y_test)
    p = preprocess(ds, normalize="per_feature", flatten=True)
    assert p.x_train.shape == (40, 20) and p.image_shape == (5, 4, 1)
    f = x_tr.reshape(40, -1).astype(np.float64)
    mean, std = f.mean(0), f.std(0)
    std[0] = 1.0
    np.testing.assert_allclose(p.x_train, (f - mean) / std, atol=1e-4)
    np.testing.assert_allclose(p.x_test, (ds.x_test.reshape(10, -1) - mean) / std, atol=1e-4)
    assert p.meta["preprocess"][-1]["n_constant"] == 1
    assert (p.x_train[:, 0] == 0).all()
    flat = preprocess(ds, flatten=True)
    np.testing.assert_array_equal(flat.x_train, x_tr.reshape(40, -1).astype(np.float32))


def test_preprocess_records_steps_and_rejects_bad_options():
    ds = image_set()
    twice = preprocess(preprocess(ds, scale="unit"), normalize="per_feature")
    assert [r["scale"] for r in twice.meta["preprocess"]] == ["unit", None]
    with pytest.raises(DataError, match="scale must be"):
        preprocess(ds, scale="minmax")
    with pytest.raises(DataError, match="normalize must be"):
        preprocess(ds, normalize="global")
    feats = from_arrays(np.ones((10, 3)) * np.arange(10)[:, None], np.arange(10) % 2,
                        np.ones((4, 3)), np.arange(4) % 2)
    with pytest.raises(DataError, match="per_feature"):
        preprocess(feats, normalize="per_channel")
    g = preprocess(feats, scale="unit")  # float input: divided by the training max |x|
    assert g.meta["preprocess"][0]["divisor"] == 9.0 and g.x_train.max() == 1.0


def test_preprocess_large_uint8_stays_float32():
    x = np.random.default_rng(0).integers(0, 256, (3000, 28, 28), dtype=np.uint8)
    ds = from_arrays(x[:2500], np.arange(2500) % 10, x[2500:], np.arange(500) % 10)
    p = preprocess(ds, scale="unit", normalize="per_channel", chunk_size=512)
    assert p.x_train.dtype == np.float32 and p.x_test.dtype == np.float32
    m = p.meta["preprocess"][0]["mean"][0]
    assert abs(m - x[:2500].mean() / 255) < 1e-9


def test_preprocess_keeps_the_spread_of_features_with_a_large_offset():
    """Timestamps (1.7e9 + a few units): centring after a float32 cast would leave rounding noise."""
    from tailscope.data.preprocess import preprocess

    rng = np.random.default_rng(0)
    signal = rng.normal(size=(300, 2)) * 2.33
    out = preprocess(Dataset(signal + 1.7e9, np.arange(300) % 2, signal[:10] + 1.7e9, np.arange(10) % 2,
                             ["a", "b"]), normalize="per_feature")
    expected = (signal - signal.mean(0)) / signal.std(0)
    np.testing.assert_allclose(out.x_train, expected, atol=1e-5)


def test_an_image_shape_in_channels_first_order_is_named():
    x = np.zeros((20, 3, 20, 36), np.uint8)
    y = np.arange(20) % 2
    with pytest.raises(DataError, match=r"looks like channels-first.*image_shape=\(20, 36, 3\)"):
        from_arrays(x, y, image_shape=(3, 20, 36))
    assert from_arrays(x, y).image_shape == (20, 36, 3)
