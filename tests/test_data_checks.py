"""Data checks found by QA: labels checked before splitting, npz split/pixel_max keys and
layout errors, dtype holes, channels-first images, and report thumbnail brightness."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tailscope as ts
from tailscope.data import DataError, Dataset, stratified_split
from tailscope.report.gallery import Thumbnails, as_image, display_max, to_uint8


def xy(n=100, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % 2


def load_quiet(path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning expected
        return ts.load_dataset(f"npz:{path}", **options)


# ------------------------------------------------------------ 1. labels checked before the split
def test_nan_label_is_refused_before_the_split(tmp_path):
    x, y = xy()
    y = y.astype(float)
    y[99] = np.nan
    with pytest.raises(DataError, match=r"y must hold integer class labels.*1 of 100 labels are "
                                        r"missing \(NaN, inf or None\) at rows \[99\]"):
        ts.from_arrays(x, y)
    # the explicit split path names the same problem
    with pytest.raises(DataError, match=r"y_test must hold integer class labels.*at rows \[19\]"):
        ts.from_arrays(x[:80], y[:80], x[80:], y[80:])
    with pytest.raises(DataError, match=r"y_test must hold integer class labels.*at rows \[19\]"):
        Dataset(x[:80], y[:80], x[80:], y[80:], ["a", "b"])
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"missing .* at rows \[99\]"):
        ts.load_dataset(f"npz:{tmp_path / 'nan.npz'}")
    # stratified_split itself never drops a row silently
    with pytest.raises(DataError, match=r"rows \[99\]"):
        stratified_split(y, 0.2, 0)


def test_none_and_inf_labels_are_refused_before_the_split():
    x, y = xy()
    obj = y.astype(object)
    obj[[3, 7]] = None
    with pytest.raises(DataError, match=r"2 of 100 labels are missing .* rows \[3, 7\]"):
        ts.from_arrays(x, obj)
    f = y.astype(float)
    f[5] = np.inf
    with pytest.raises(DataError, match=r"rows \[5\]"):
        ts.from_arrays(x, f)
    # clean float and object integer labels still split into a partition of all rows
    d = ts.from_arrays(x, y.astype(object))
    assert d.n_train + d.n_test == 100 and d.classes == ["0", "1"]


# ------------------------------------------------------------ 2. npz split key and unused keys
@pytest.mark.parametrize("split", [
    np.r_[np.zeros(70), np.ones(30)].astype(np.int8),
    np.array(["train"] * 70 + ["TEST "] * 30),
    np.r_[np.zeros(70, bool), np.ones(30, bool)],
    np.r_[np.zeros(70), np.ones(30)].astype(np.float32),
])
def test_npz_split_key_is_honoured(tmp_path, split):
    x, y = xy()
    x[:, 0] = np.arange(100)  # row ids
    perm = np.random.default_rng(1).permutation(100)
    p = tmp_path / "s.npz"
    np.savez(p, x=x[perm], y=y[perm], split=split)
    d = load_quiet(p)
    assert (d.n_train, d.n_test) == (70, 30)
    assert sorted(d.x_train[:, 0].astype(int).tolist()) == sorted(perm[:70].tolist())
    assert d.x_test[:, 0].astype(int).tolist() == perm[70:].tolist()  # file order kept
    np.testing.assert_array_equal(d.y_test, y[perm[70:]])
    assert d.meta["split"] == {"key": "split", "n_train": 70, "n_test": 30}


def test_npz_split_key_bad_values_and_opt_out(tmp_path):
    x, y = xy()
    for bad, match in [(np.r_[np.zeros(90), np.full(10, 2)].astype(int), r"values \[2\.0\]"),
                       (np.array(["train"] * 90 + ["val"] * 10), r"values \['val'\] that are neither"),
                       (np.zeros(99, int), r"shape \(99,\).*one entry per example \(100,\)"),
                       (np.zeros(100, int), r"puts every row in the training split")]:
        np.savez(tmp_path / "b.npz", x=x, y=y, split=bad)
        with pytest.raises(DataError, match=match):
            ts.load_dataset(f"npz:{tmp_path / 'b.npz'}")
    split = np.r_[np.zeros(70), np.ones(30)].astype(np.int8)
    np.savez(tmp_path / "s.npz", x=x, y=y, split=split, x_float=x.astype(np.float32))
    with pytest.warns(UserWarning, match=r"npz keys \['x_float'\] were not used") as rec:
        d = ts.load_dataset(f"npz:{tmp_path / 's.npz'}")
    assert rec[0].filename == __file__  # attributed to the caller's line
    assert (d.n_train, d.n_test) == (70, 30)
    # split_key=None: a random stratified split; 'split' is ignored as asked, not reported as unused
    with pytest.warns(UserWarning, match=r"npz keys \['x_float'\] were not used") as rec:
        r = ts.load_dataset(f"npz:{tmp_path / 's.npz'}", split_key=None)
    assert not any("['split'" in str(w.message) for w in rec)
    assert (r.n_train, r.n_test) == (80, 20)
    with pytest.warns(UserWarning) as rec:
        t = ts.load_dataset(f"npz:{tmp_path / 's.npz'}", test_fraction=0.5)
    assert (t.n_train, t.n_test) == (70, 30)
    assert any("test_fraction/split_seed are ignored" in str(w.message) for w in rec)
    with pytest.raises(DataError, match="has no key 'fold'"):
        ts.load_dataset(f"npz:{tmp_path / 's.npz'}", split_key="fold")


def test_npz_without_extra_keys_loads_without_warning(tmp_path):
    x, y = xy()
    np.savez(tmp_path / "a.npz", x=x, y=y, classes=np.array(["no", "yes"]))
    d = load_quiet(tmp_path / "a.npz")
    assert (d.n_train, d.n_test) == (80, 20) and d.classes == ["no", "yes"]
    assert d.meta["test_fraction"] == 0.2 and d.meta["split_seed"] == 0 and "pixel_max" not in d.meta


# ------------------------------------------------------------ 3. pixel_max and thumbnails
def small_images(top=16, n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, top + 1, (n, 8, 8)).astype(np.uint8)
    x[0, 0, 0] = top
    return x, np.arange(n) % 2


def test_thumbnails_scale_by_observed_max_or_pixel_max(tmp_path):
    x, y = small_images(16)
    d = ts.from_arrays(x, y)
    assert display_max(d) == 16.0
    img = to_uint8(d, as_image(d, np.full((8, 8), 8, np.uint8)))
    assert img.shape == (8, 8, 1) and int(img.max()) == 128  # 8 of 16 -> mid grey, not near black
    # recorded pixel_max wins over the observed maximum
    d32 = ts.from_arrays(x, y, meta={"pixel_max": 32})
    assert int(to_uint8(d32, as_image(d32, np.full((8, 8), 8, np.uint8))).max()) == 64
    # MNIST-like 0..255 data keeps its scale
    x255, _ = small_images(255)
    d255 = ts.from_arrays(x255, y)
    assert int(to_uint8(d255, as_image(d255, np.full((8, 8), 128, np.uint8))).max()) == 128
    # float images keep min/max scaling
    df = ts.from_arrays(x.astype(np.float32) / 16, y)
    assert display_max(df) is None
    # the written PNG is bright
    from PIL import Image

    rel = Thumbnails(d, tmp_path)("train", 0)
    assert np.asarray(Image.open(tmp_path / rel)).max() == 255


def test_npz_pixel_max_option_and_key(tmp_path):
    from tailscope.learners.torch_population import _input_stats

    x, y = small_images(16)
    np.savez(tmp_path / "o.npz", x=x, y=y)
    d = load_quiet(tmp_path / "o.npz", pixel_max=16)
    assert d.meta["pixel_max"] == 16.0
    assert _input_stats(d)[2] == 16.0  # the torch learners divide by the same number
    np.savez(tmp_path / "k.npz", x=x, y=y, pixel_max=np.array(16))
    k = load_quiet(tmp_path / "k.npz")
    assert k.meta["pixel_max"] == 16.0 and k.fingerprint == d.fingerprint
    assert load_quiet(tmp_path / "k.npz", pixel_max=20).meta["pixel_max"] == 20.0  # option overrides
    with pytest.raises(DataError, match=r"pixel_max is 8 but x_train holds values up to 16"):
        ts.load_dataset(f"npz:{tmp_path / 'o.npz'}", pixel_max=8)
    with pytest.raises(DataError, match="must be one positive number"):
        ts.load_dataset(f"npz:{tmp_path / 'o.npz'}", pixel_max=-1)
    # without pixel_max nothing is recorded (learners keep their 255 default), and the low top is pointed out
    with pytest.warns(UserWarning, match=r"go up to 16 only.*pixel_max=16"):
        assert "pixel_max" not in ts.load_dataset(f"npz:{tmp_path / 'o.npz'}").meta


# ------------------------------------------------------------ 4. npz layout errors
def test_npz_layout_errors_are_clear(tmp_path):
    x, y = xy()
    cases = []
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(2)[y])
    cases.append(("onehot.npz", r"y has shape \(100, 2\) and looks one-hot encoded.*y\.argmax\(1\)"))
    np.savez(tmp_path / "scalar.npz", x=x, y=np.array(3))
    cases.append(("scalar.npz", r"y is a single value \(a 0-d array: 3\); it must be a 1-D array"))
    np.save(tmp_path / "plain.npy", x)
    cases.append(("plain.npy", r"single \.npy array, not an \.npz archive.*keys x_train, y_train, "
                               r"x_test, y_test \(or x and y\).*np\.savez"))
    (tmp_path / "text.npz").write_text("hello")
    cases.append(("text.npz", r"is not an npz archive \(a zip file of \.npy arrays\)"))
    np.savez(tmp_path / "col.npz", x=x, y=y[:, None])
    cases.append(("col.npz", r"y must be 1-D .*shape \(100, 1\); flatten it with y\.ravel\(\)"))
    for name, match in cases:
        with pytest.raises(DataError, match=match):
            ts.load_dataset(f"npz:{tmp_path / name}")
    with pytest.raises(DataError, match=r"y_train has shape \(80, 2\) and looks one-hot"):
        ts.from_arrays(x[:80], np.eye(2)[y[:80]], x[80:], y[80:])


# ------------------------------------------------------------ 5. dtype and shape holes
def test_complex_and_out_of_float32_range_inputs_are_refused():
    x, y = xy()
    with pytest.raises(DataError, match=r"x_train is complex \(complex128\).*np\.abs\(x\)"):
        ts.from_arrays(x * 1j, y)
    big = x.copy()
    big[5, 1] = -1e39
    with pytest.raises(DataError, match=r"values up to 1e\+39 in magnitude, beyond the float32 range"):
        ts.from_arrays(big, y)
    big[5, 1] = 3e38  # still representable in float32
    assert ts.from_arrays(big, y).n_train == 80


def test_mixed_labels_and_string_labels_with_classes():
    x, _ = xy(60)
    with pytest.raises(DataError, match=r"y mixes class names and numbers \(e\.g\. 'a' and 0\)"):
        ts.from_arrays(x, np.array([0, "a"] * 30, dtype=object))
    names = np.array(["b", "a", "c"] * 20)
    x[:, 0] = np.arange(60)  # row ids
    d = ts.from_arrays(x, names, classes=["c", "b", "a"])  # classes gives the order
    assert d.classes == ["c", "b", "a"] and (d.n_train, d.n_test) == (48, 12)
    for xs, ys in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert np.array(d.classes)[ys].tolist() == names[xs[:, 0].astype(int)].tolist()
    # the names round-trip: rebuilding with an explicit split keeps every label
    d2 = ts.from_arrays(x[:45], names[:45], x[45:], names[45:], classes=["c", "b", "a"])
    assert np.array(d2.classes)[d2.y_train].tolist() == names[:45].tolist()
    assert d2.y_train[:3].tolist() == [1, 2, 0]
    with pytest.raises(DataError, match=r"y_train has labels \['c'\] that are not in classes=\['a', 'b'\]"):
        ts.from_arrays(x[:45], names[:45], x[45:], names[45:], classes=["a", "b"])
    with pytest.raises(DataError, match=r"classes lists \['a'\] more than once"):
        ts.from_arrays(x, names, classes=["a", "b", "a"])
    # integer labels still index classes
    d3 = ts.from_arrays(x, np.arange(60) % 3, classes=["x", "y", "z"])
    assert d3.classes == ["x", "y", "z"]


def test_image_shape_must_match_the_rows():
    x, y = xy(60)
    with pytest.raises(DataError, match=r"image_shape \(3, 3, 1\) holds 9 values but each row of "
                                        r"x_train holds 4.*image_shape=None"):
        ts.from_arrays(x, y, image_shape=(3, 3, 1))
    with pytest.raises(DataError, match="image_shape"):
        Dataset(x[:40], y[:40], x[40:], y[40:], ["a", "b"], image_shape=(3, 3, 1))
    assert ts.from_arrays(x, y, image_shape=(2, 2, 1)).image_shape == (2, 2, 1)


# ------------------------------------------------------------ 6. channels-first and RGBA images
@pytest.mark.parametrize("c", [1, 3])
def test_channels_first_images_are_moved_last(tmp_path, c):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, c, 8, 10), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(40)  # row ids
    y = np.arange(40) % 2
    d = ts.from_arrays(x, y)
    assert d.image_shape == (8, 10, c) and d.x_train.shape[1:] == (8, 10, c)
    assert d.meta["channels_moved_last"] is True
    for row, i in zip(d.x_train, d.x_train[:, 0, 0, 0].astype(int), strict=True):
        np.testing.assert_array_equal(row, np.moveaxis(x[i], 0, -1))
    np.savez(tmp_path / "cf.npz", x=x, y=y)
    assert load_quiet(tmp_path / "cf.npz").fingerprint == d.fingerprint
    # an explicit image_shape (H, W, C) with (C, H, W) rows moves the channels too
    e = ts.from_arrays(x[:30], y[:30], x[30:], y[30:], image_shape=(8, 10, c))
    np.testing.assert_array_equal(e.x_test[0], np.moveaxis(x[30], 0, -1))


def test_rgba_and_ambiguous_layouts(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    rgba = rng.integers(0, 256, (40, 8, 8, 4), dtype=np.uint8)
    d = ts.from_arrays(rgba, y)
    assert d.image_shape == (8, 8, 4)
    assert Thumbnails(d, tmp_path)("train", 0).endswith(".png")
    # channels-last data is unchanged
    hwc = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    h = ts.from_arrays(hwc, y, name="hwc")
    assert h.image_shape == (8, 8, 3) and "channels_moved_last" not in h.meta
    # (N, 3, 8, 4) could be RGBA 3x8 or RGB 8x4: not guessed, and the warning says what to do
    with pytest.warns(UserWarning, match=r"rows of shape \(3, 8, 4\) are not read as images.*"
                                         r"np\.moveaxis\(x, 1, -1\).*image_shape=\(H, W, C\)"):
        amb = ts.from_arrays(rng.normal(size=(40, 3, 8, 4)), y)
    assert amb.image_shape is None


@pytest.mark.parametrize("y, match", [
    (np.linspace(0, 1, 100), "not whole numbers.*studies classifiers"),
])
def test_labels_that_are_not_class_indices_are_named_before_any_split(y, match):
    x = np.random.default_rng(0).random((100, 3))
    with pytest.raises(DataError, match=match):
        ts.from_arrays(x, y)  # (an automatic split once said "at least 2 classes" or "no test example")
    with pytest.raises(DataError, match=match):
        ts.from_arrays(x, y, x, np.abs(y))


def test_negative_codes_are_classes_by_value_unless_a_class_list_is_indexed():
    x = np.random.default_rng(0).random((100, 3))
    y = (np.arange(100) % 2) * 2 - 1  # -1 / 1, the SVM convention
    data = ts.from_arrays(x, y)
    assert data.classes == ["-1", "1"] and np.bincount(data.y_train).tolist() == [40, 40]
    with pytest.raises(DataError, match=r"negative labels \(e.g. -1\).*index it.*return_inverse=True"):
        ts.from_arrays(x, y, classes=["no", "yes"])
    ok = ts.from_arrays(x, (np.arange(100) % 3).astype(float))  # class ids stored as floats
    assert ok.classes == ["0", "1", "2"] and ok.y_train.dtype == np.int64


@pytest.mark.parametrize("kw, match", [
    ({"test_fraction": "0.2"}, r"test_fraction must be a number in \(0, 1\), got '0.2'"),
    ({"test_fraction": float("nan")}, "test_fraction must be a number"),
    ({"split_seed": "abc"}, "split_seed must be a non-negative integer, got 'abc'"),
    ({"split_seed": 1.5}, "split_seed must be a non-negative integer"),
])
def test_split_options_of_the_wrong_type_are_named(kw, match):
    x = np.random.default_rng(0).random((100, 3))
    with pytest.raises(DataError, match=match):
        ts.from_arrays(x, np.arange(100) % 2, **kw)
