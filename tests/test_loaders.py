"""File-format loaders: idx, Fashion-MNIST, CIFAR (restricted unpickling), image folders, torch, HF."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tailscope import DataError, load_dataset
from tailscope.data.formats import idx as idx_mod
from tailscope.data.formats.cifar import read_cifar_batch
from tailscope.data.formats.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx
from tailscope.data.formats.safe_pickle import UnsafePickleError, safe_loads
from tailscope.data.loaders import LOADERS, from_huggingface, from_torch, load_fashion_mnist

# ----------------------------------------------------------------------------------------- helpers

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
             np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    head = bytes([0, 0, IDX_CODES[arr.dtype.newbyteorder("=")], arr.ndim])
    head += np.asarray(arr.shape, dtype=">u4").tobytes()
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_images(n: int, h: int = 5, w: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    y = np.arange(n) % 3
    return x, y.astype(np.uint8)


def write_mnist_dir(d: Path, *, gz: bool = False, dotted: bool = False, n_train: int = 30, n_test: int = 9):
    d.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = make_images(n_train, seed=1)
    x_te, y_te = make_images(n_test, seed=2)
    sep = "." if dotted else "-"
    ext = ".gz" if gz else ""
    write_idx(d / f"train-images{sep}idx3-ubyte{ext}", x_tr)
    write_idx(d / f"train-labels{sep}idx1-ubyte{ext}", y_tr)
    write_idx(d / f"t10k-images{sep}idx3-ubyte{ext}", x_te)
    write_idx(d / f"t10k-labels{sep}idx1-ubyte{ext}", y_te)
    return x_tr, y_tr, x_te, y_te


class Boom:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes with Python 2's STRING opcodes, as the real CIFAR files (made by
    Python 2's cPickle) do; loaded with encoding='latin1' they come back as str."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_string(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_string
    dispatch[str] = _save_py2_string


def py2_dumps(obj) -> bytes:
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(d: Path, *, style: str = "numpy", protocol: int = 2) -> dict:
    """Two train batches, a test batch and batches.meta in CIFAR-10's layout."""
    d.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat"]
    out = {"train": [], "test": None}

    def dump(obj, path):
        if style == "py2":
            path.write_bytes(py2_dumps(obj))
        else:
            path.write_bytes(pickle.dumps(obj, protocol=protocol))

    for i, (n, seed) in enumerate([(8, 1), (6, 2)], start=1):
        data = cifar_rows(n, seed)
        labels = [int(v) for v in np.arange(n) % 4]
        out["train"].append((data, labels))
        payload = data.tolist() if style == "lists" else data
        dump({"batch_label": f"training batch {i} of 2", "labels": labels, "data": payload,
              "filenames": [f"img_{i}_{k}.png" for k in range(n)]}, d / f"data_batch_{i}")
    data = cifar_rows(5, 3)
    labels = [3, 2, 1, 0, 1]
    out["test"] = (data, labels)
    dump({"batch_label": "testing batch", "labels": labels,
          "data": data.tolist() if style == "lists" else data}, d / "test_batch")
    dump({"label_names": names, "num_cases_per_batch": 8, "num_vis": 3072}, d / "batches.meta")
    out["names"] = names
    return out


def planar_to_hwc(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def save_png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)


# --------------------------------------------------------------------------------------------- idx


@pytest.mark.parametrize("gz,dotted", [(False, False), (True, False), (False, True), (True, True)])
def test_idx_dir_loads_exact_values(tmp_path, gz, dotted):
    x_tr, y_tr, x_te, y_te = write_mnist_dir(tmp_path / "m", gz=gz, dotted=dotted)
    ds = load_dataset(f"idx:{tmp_path / 'm'}")
    np.testing.assert_array_equal(ds.x_train, x_tr)
    np.testing.assert_array_equal(ds.x_test, x_te)
    np.testing.assert_array_equal(ds.y_train, y_tr.astype(np.int64))
    np.testing.assert_array_equal(ds.y_test, y_te.astype(np.int64))
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (30, 5, 4)
    assert ds.image_shape == (5, 4, 1)
    assert ds.classes == ["0", "1", "2"]
    assert ds.meta["format"] == "idx" and ds.meta["source"] == str(tmp_path / "m")
    assert "options" in ds.meta


def test_read_idx_dtypes_and_count(tmp_path):
    arr = np.arange(-12, 12, dtype=np.int16).reshape(4, 3, 2)
    p = write_idx(tmp_path / "a-idx3-ubyte", arr)
    got = read_idx(p)
    np.testing.assert_array_equal(got, arr)
    assert got.dtype == np.dtype("int16") and got.dtype.isnative
    np.testing.assert_array_equal(read_idx(p, count=2), arr[:2])
    f = write_idx(tmp_path / "f.gz", np.linspace(0, 1, 6, dtype=np.float32))
    np.testing.assert_allclose(read_idx(f), np.linspace(0, 1, 6, dtype=np.float32))


def test_idx_truncated_file_is_a_clear_error(tmp_path):
    write_mnist_dir(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"truncated.*only \d+ bytes follow"):
        load_dataset(f"idx:{tmp_path}")
    p.write_bytes(p.read_bytes()[:6])
    with pytest.raises(DataError, match="truncated inside its header"):
        read_idx(p)


def test_idx_truncated_gzip_is_a_clear_error(tmp_path):
    write_mnist_dir(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(DataError, match="truncated or corrupt|truncated"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_bad_magic_trailing_bytes_and_count_mismatch(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(bad)
    good = write_idx(tmp_path / "g", np.zeros((2, 2, 2), np.uint8))
    good.write_bytes(good.read_bytes() + b"xx")
    with pytest.raises(DataError, match="bytes after"):
        read_idx(good)
    d = tmp_path / "m"
    write_mnist_dir(d)
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(29, np.uint8))
    with pytest.raises(DataError, match="30 images but .* 29 labels"):
        load_dataset(f"idx:{d}")


def test_idx_missing_files_named(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset(f"idx:{tmp_path}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"idx:{tmp_path / 'nope'}")


def test_idx_limits_first_and_stratified(tmp_path):
    x_tr, y_tr, _, _ = write_mnist_dir(tmp_path, n_train=30)
    first = load_dataset(f"idx:{tmp_path}", limit_train=7, limit_test=3, limit_mode="first")
    np.testing.assert_array_equal(first.x_train, x_tr[:7])
    assert first.n_test == 3 and first.meta["options"]["limit_train"] == 7
    a = load_dataset(f"idx:{tmp_path}", limit_train=12, limit_seed=5)
    b = load_dataset(f"idx:{tmp_path}", limit_train=12, limit_seed=5)
    c = load_dataset(f"idx:{tmp_path}", limit_train=12, limit_seed=6)
    assert np.bincount(a.y_train).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    with pytest.raises(DataError, match="limit_train must be a positive integer"):
        load_dataset(f"idx:{tmp_path}", limit_train=0)
    with pytest.raises(DataError, match="limit_mode"):
        load_dataset(f"idx:{tmp_path}", limit_mode="random")


# ----------------------------------------------------------------------------------- fashion-mnist

_HAVE_FMNIST = len(idx_mod.find_idx_files(FASHION_MNIST_DIR)) == 4 if Path(FASHION_MNIST_DIR).is_dir() else False


@pytest.mark.skipif(not _HAVE_FMNIST, reason=f"Fashion-MNIST files not in {FASHION_MNIST_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_small_slice():
    ds = load_fashion_mnist(limit_train=200, limit_test=50)
    assert ds.name == "fashion-mnist"
    assert ds.x_train.shape == (200, 28, 28) and ds.x_test.shape == (50, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.image_shape == (28, 28, 1)
    assert ds.classes == FASHION_MNIST_CLASSES and ds.classes[9] == "Ankle boot"
    assert np.bincount(ds.y_train, minlength=10).tolist() == [20] * 10  # stratified slice
    assert ds.meta["options"]["limit_train"] == 200
    same = LOADERS["fashion-mnist"]("", limit_train=200, limit_test=50)
    assert same.fingerprint == ds.fingerprint
    first = load_fashion_mnist(limit_train=100, limit_test=10, limit_mode="first")
    # The first Fashion-MNIST training label is 9 (ankle boot), the first test label too.
    assert first.y_train[0] == 9 and first.y_test[0] == 9


def test_fashion_mnist_absent_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_mod, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        idx_mod.load_fashion_mnist()


def test_fashion_mnist_from_other_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    ds = load_dataset(f"fashion-mnist:{tmp_path}")
    assert ds.classes == FASHION_MNIST_CLASSES and ds.n_train == 20


# ------------------------------------------------------------------------------------------- cifar


@pytest.mark.parametrize("style,protocol", [("numpy", 2), ("numpy", 4), ("numpy", 5), ("py2", 2), ("lists", 4)])
def test_cifar10_batches(tmp_path, style, protocol):
    info = write_cifar10(tmp_path / "cifar-10-batches-py", style=style, protocol=protocol)
    ds = load_dataset(f"cifar:{tmp_path / 'cifar-10-batches-py'}")
    rows = np.concatenate([b[0] for b in info["train"]])
    assert ds.x_train.shape == (14, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train, planar_to_hwc(rows))
    # pixel (row 2, col 7) of the first image: red, green, blue planes of the flat row
    assert ds.x_train[0, 2, 7].tolist() == [rows[0, 2 * 32 + 7], rows[0, 1024 + 2 * 32 + 7],
                                            rows[0, 2048 + 2 * 32 + 7]]
    np.testing.assert_array_equal(ds.y_train, sum((b[1] for b in info["train"]), []))
    np.testing.assert_array_equal(ds.y_test, info["test"][1])
    np.testing.assert_array_equal(ds.x_test, planar_to_hwc(info["test"][0]))
    assert ds.classes == info["names"]
    assert ds.image_shape == (32, 32, 3)
    assert ds.meta["format"] == "cifar" and ds.meta["variant"] == "cifar-10"


def test_cifar_parent_dir_and_bytes_keys(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d)
    # Keys as bytes, as pickle.load(encoding="bytes") users re-save them.
    obj = {b"data": cifar_rows(4, 9), b"labels": [0, 1, 2, 3]}
    (d / "data_batch_1").write_bytes(pickle.dumps(obj))
    ds = load_dataset(f"cifar:{tmp_path}")  # the parent folder is accepted too
    assert ds.n_train == 4 + 6


def test_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    fine = {"train": [0, 1, 2, 3, 4, 5], "test": [5, 4, 3]}
    for split, labels in fine.items():
        obj = {"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), "fine_labels": labels,
               "coarse_labels": [v // 3 for v in labels], "filenames": [f"{split}{i}" for i in labels]}
        (d / split).write_bytes(pickle.dumps(obj, protocol=2))
    fine_names = ["apple", "bowl", "can", "dolphin", "elephant", "fox"]
    (d / "meta").write_bytes(pickle.dumps({"fine_label_names": fine_names,
                                           "coarse_label_names": ["food", "animal"]}, protocol=2))
    f = load_dataset(f"cifar:{d}")
    assert f.classes == fine_names and f.y_train.tolist() == fine["train"] and f.name.endswith("-fine")
    c = load_dataset(f"cifar:{d}", label_mode="coarse")
    assert c.classes == ["food", "animal"] and c.y_test.tolist() == [1, 1, 1]
    with pytest.raises(DataError, match="label_mode"):
        load_dataset(f"cifar:{d}", label_mode="medium")


def test_cifar_bad_batches(tmp_path):
    d = tmp_path / "c"
    write_cifar10(d)
    (d / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]}))
    with pytest.raises(DataError, match=r"shape \(3, 100\)"):
        load_dataset(f"cifar:{d}")
    (d / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_dataset(f"cifar:{d}")
    (d / "test_batch").write_bytes(pickle.dumps({"data": [[300] * 3072], "labels": [0]}))
    with pytest.raises(DataError, match="0..255"):
        load_dataset(f"cifar:{d}")
    (d / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]})[:-9])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(f"cifar:{d}")
    with pytest.raises(DataError, match="neither CIFAR-10"):
        load_dataset(f"cifar:{tmp_path}")


@pytest.mark.parametrize("target", ["test_batch", "data_batch_1", "batches.meta"])
def test_tampered_cifar_batch_is_refused_and_not_executed(tmp_path, target):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d)
    marker = tmp_path / "PWNED"
    evil = {"data": cifar_rows(2, 0), "labels": [0, 1], "label_names": ["a", "b"], "x": Boom(marker)}
    (d / target).write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"asks for (posix|os|nt)\.system.*refuses") as exc:
        load_dataset(f"cifar:{d}")
    assert isinstance(exc.value, UnsafePickleError)
    assert str(d / target) in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize("make", [
    lambda m: pickle.dumps(Boom(m), protocol=0),
    lambda m: pickle.dumps(Boom(m), protocol=5),
    lambda m: b"cbuiltins\neval\n(V__import__('os').system('touch " + str(m).encode() + b"')\ntR.",
    lambda m: b"cbuiltins\ngetattr\n(cnumpy\nndarray\nV__reduce__\ntR.",
    lambda m: b"\x80\x02K\x01\x82.",  # EXT1: copyreg extension registry
    lambda m: b"P1\n.",  # persistent id
])
def test_safe_loads_refuses_globals_without_running_them(tmp_path, make):
    marker = tmp_path / "marker"
    with pytest.raises(DataError):
        safe_loads(make(marker))
    assert not marker.exists()


def test_safe_loads_array_checks():
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    got = safe_loads(pickle.dumps({"a": a, "s": np.float32(1.5), "t": (1, b"x")}))
    np.testing.assert_array_equal(got["a"], a)
    assert got["a"].dtype.isnative and got["a"].flags.writeable
    assert got["s"] == np.float32(1.5) and got["t"] == (1, b"x")
    f = np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    np.testing.assert_array_equal(safe_loads(pickle.dumps(f, protocol=2)), f)
    with pytest.raises(UnsafePickleError, match="dtype"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    with pytest.raises(UnsafePickleError, match="dtype"):
        safe_loads(pickle.dumps(np.zeros(2, dtype=[("a", "u1"), ("b", "f4")])))
    with pytest.raises(UnsafePickleError):
        safe_loads(pickle.dumps(np.ma.masked_array([1, 2], mask=[0, 1])))
    with pytest.raises(UnsafePickleError, match="dtype"):
        safe_loads(pickle.dumps(np.array(["ab"])))
    # An array whose header promises more bytes than it holds.
    raw = pickle.dumps(np.arange(4, dtype=np.uint8), protocol=2)
    forged = raw.replace(b"K\x04\x85", b"K\x05\x85")
    assert forged != raw
    with pytest.raises(UnsafePickleError, match="needs exactly 5"):
        safe_loads(forged)


def test_read_cifar_batch_lists(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({"data": [[7] * 3072, [9] * 3072], "labels": [1, 0]}))
    x, y = read_cifar_batch(p)
    assert x.shape == (2, 32, 32, 3) and (x[1] == 9).all() and y.tolist() == [1, 0]


# -------------------------------------------------------------- a malicious pickle is never loaded


def test_no_loader_unpickles_stray_files(tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps(Boom(marker))
    # idx
    m = tmp_path / "mnist"
    write_mnist_dir(m)
    for name in ("evil.pkl", "train-images-idx3-ubyte.pkl", "data.pt", "train.npy"):
        (m / name).write_bytes(payload)
    assert load_dataset(f"idx:{m}").n_train == 30
    # folder (a pickle next to the images, and one disguised as a PNG)
    f = tmp_path / "folder"
    for c in ("a", "b"):
        for i in range(3):
            save_png(f / c / f"{i}.png", np.full((4, 4), i * 40, np.uint8))
    (f / "a" / "evil.pkl").write_bytes(payload)
    (f / "b" / "labels.pickle").write_bytes(payload)
    assert load_dataset(f"folder:{f}", test_fraction=0.34).meta["skipped_files"] == 2
    (f / "b" / "disguised.png").write_bytes(payload)
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(f"folder:{f}")
    # cifar (stray pickles beside valid batches)
    c = tmp_path / "cifar"
    write_cifar10(c)
    (c / "data_batch_extra.pkl").write_bytes(payload)
    (c / "readme.html").write_bytes(payload)
    assert load_dataset(f"cifar:{c}").n_train == 14
    # npz holding an object array
    np.savez(tmp_path / "evil.npz", x=np.array([Boom(marker)] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(DataError, match="pickled objects"):
        load_dataset(f"npz:{tmp_path / 'evil.npz'}")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ folder


def test_folder_with_train_test_split_grey(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {}
    for split, n in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                arr = rng.integers(0, 256, (6, 5), dtype=np.uint8)
                imgs[(split, c, i)] = arr
                save_png(tmp_path / split / c / f"{i:02d}.png", arr)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.classes == ["cat", "dog"]
    assert ds.x_train.shape == (6, 6, 5) and ds.x_train.dtype == np.uint8
    assert ds.image_shape == (6, 5, 1)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1] and ds.y_test.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(ds.x_train[4], imgs[("train", "dog", 1)])
    np.testing.assert_array_equal(ds.x_test[1], imgs[("test", "cat", 1)])
    assert ds.meta["files"]["train"][4] == os.path.join("train", "dog", "01.png")
    assert ds.meta["options"]["mode"] == "L"


def test_folder_flat_split_rgb_seeded(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("a", "b", "c"):
        for i in range(5):
            save_png(tmp_path / c / f"{i}.png", rng.integers(0, 256, (4, 3, 3), dtype=np.uint8))
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    ds = load_dataset(f"folder:{tmp_path}", test_fraction=0.4, split_seed=3)
    again = load_dataset(f"folder:{tmp_path}", test_fraction=0.4, split_seed=3)
    other = load_dataset(f"folder:{tmp_path}", test_fraction=0.4, split_seed=4)
    assert ds.x_train.shape == (9, 4, 3, 3) and ds.image_shape == (4, 3, 3)
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]
    assert ds.fingerprint == again.fingerprint != other.fingerprint
    # files listed in meta match the pixels
    first = ds.meta["files"]["test"][0]
    np.testing.assert_array_equal(ds.x_test[0], np.asarray(Image.open(tmp_path / first)))
    assert ds.meta["options"]["split_seed"] == 3


def test_folder_sizes_and_modes(tmp_path):
    save_png(tmp_path / "a" / "0.png", np.zeros((8, 6), np.uint8))
    save_png(tmp_path / "a" / "1.png", np.full((8, 6), 200, np.uint8))
    save_png(tmp_path / "b" / "0.png", np.full((4, 4, 3), 100, np.uint8))
    save_png(tmp_path / "b" / "1.png", np.full((8, 6, 3), 50, np.uint8))
    with pytest.raises(DataError, match=r"differ in size.*size=\(H, W\)"):
        load_dataset(f"folder:{tmp_path}")
    ds = load_dataset(f"folder:{tmp_path}", size=(4, 3), test_fraction=0.5)
    assert ds.x_train.shape == (2, 4, 3, 3)  # one RGB image makes the set RGB
    assert ds.image_shape == (4, 3, 3)
    grey = load_dataset(f"folder:{tmp_path}", size=(4, 3), mode="L", test_fraction=0.5)
    assert grey.x_train.shape == (2, 4, 3)
    with pytest.raises(DataError, match="mode must be"):
        load_dataset(f"folder:{tmp_path}", mode="CMYK")
    with pytest.raises(DataError, match="size must be"):
        load_dataset(f"folder:{tmp_path}", size=(4,))


def test_folder_deep_images_keep_their_brightness_in_grey_and_colour(tmp_path):
    # 16-bit PNGs: one white level (65535), also when one colour file makes the set RGB
    for c, v in (("a", 20000), ("b", 40000)):
        (tmp_path / "g" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), v, np.uint16)).save(tmp_path / "g" / c / f"{i}.png")
    grey = load_dataset(f"folder:{tmp_path / 'g'}")
    colour = load_dataset(f"folder:{tmp_path / 'g'}", mode="RGB")
    want = np.where(grey.y_train == 0, 78, 156)  # 20000 / 65535 * 255, 40000 / 65535 * 255
    np.testing.assert_array_equal(grey.x_train[:, 4, 4], want)
    np.testing.assert_array_equal(colour.x_train[:, 4, 4], np.repeat(want[:, None], 3, 1))
    # 32-bit and float images: one white level for the folder, not each image's own maximum
    for c in ("a", "b"):
        (tmp_path / "t" / c).mkdir(parents=True)
        for v in (100, 400):
            a = np.full((4, 4), v, np.int32)
            a[0, 0] = 2 * v
            Image.fromarray(a, "I").save(tmp_path / "t" / c / f"i{v}.tif")
            Image.fromarray((a / 1000).astype(np.float32), "F").save(tmp_path / "t" / c / f"f{v}.tif")
    ds = load_dataset(f"folder:{tmp_path / 't'}", test_fraction=0.25)
    got = {f: int(x[2, 2]) for f, x in zip(ds.meta["files"]["train"] + ds.meta["files"]["test"],
                                            np.concatenate([ds.x_train, ds.x_test]), strict=True)}
    assert {os.path.basename(f): v for f, v in got.items()} == {"i100.tif": 32, "i400.tif": 128, "f100.tif": 26,
                                                                 "f400.tif": 102}


def test_folders_inside_class_folders_are_named(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            save_png(tmp_path / c / f"{i}.png", np.full((4, 4), 10 * i, np.uint8))
    save_png(tmp_path / "a" / "more" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.warns(UserWarning, match=r"1 folder\(s\) inside class folders were not read \(e.g. a.more\)"):
        ds = load_dataset(f"folder:{tmp_path}")
    assert ds.meta["skipped_folders"] == 1 and ds.n_train + ds.n_test == 6


def test_from_torch_keeps_16_bit_pil_values():
    from tailscope.data.loaders import _to_numpy

    for mode_arr in (np.full((4, 4), 40000, np.uint16), np.full((4, 4), 0.25, np.float32)):
        arr = _to_numpy(Image.fromarray(mode_arr), "auto")
        np.testing.assert_array_equal(arr, mode_arr)
        assert arr.dtype.isnative


def test_folder_errors(tmp_path):
    save_png(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(10))
    with pytest.raises(DataError, match="bad.png"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="class folders"):
        load_dataset(f"folder:{tmp_path / 'a'}")
    s = tmp_path / "split"
    save_png(s / "train" / "x" / "0.png", np.zeros((4, 4), np.uint8))
    save_png(s / "train" / "y" / "0.png", np.zeros((4, 4), np.uint8))
    save_png(s / "test" / "z" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"\['z'\]"):
        load_dataset(f"folder:{s}")


# ----------------------------------------------------------------------------------- torch and HF


class TorchSet:
    """A map-style torch dataset: CHW float tensors and 0-d tensor labels."""

    classes = ["zero", "one", "two"]

    def __init__(self, n: int, channels: int = 3, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand((n, channels, 5, 4), generator=g)
        self.y = torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_from_torch_chw_tensors():
    tr, te = TorchSet(9), TorchSet(6, seed=1)
    ds = from_torch(tr, te)
    assert ds.x_train.shape == (9, 5, 4, 3) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train[2], tr.x[2].permute(1, 2, 0).numpy())
    assert ds.y_test.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.classes == ["zero", "one", "two"] and ds.image_shape == (5, 4, 3)
    assert ds.meta["format"] == "torch"
    grey = from_torch(TorchSet(9, channels=1))
    assert grey.x_train.shape[1:] == (5, 4) and grey.image_shape == (5, 4, 1)
    assert grey.n_train + grey.n_test == 9 and grey.meta["options"]["split_seed"] == 0


def test_from_torch_pil_items_and_real_torch_dataset():
    import torch
    from torch.utils.data import Dataset as TorchDataset

    class PilSet(TorchDataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return Image.fromarray(np.full((3, 2, 3), i * 10, np.uint8)), i % 2

    ds = from_torch(PilSet(6), PilSet(4), classes=["even", "odd"])
    assert ds.x_train.shape == (6, 3, 2, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_train[5, 0, 0, 0] == 50 and ds.y_train.tolist() == [0, 1, 0, 1, 0, 1]
    tds = torch.utils.data.TensorDataset(torch.arange(24, dtype=torch.float32).reshape(6, 4),
                                         torch.tensor([0, 1, 0, 1, 0, 1]))
    flat = from_torch(tds, tds)
    assert flat.x_train.shape == (6, 4) and flat.image_shape is None

    class Ragged(TorchDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3 + i), 0

    with pytest.raises(DataError, match="example 1 has shape"):
        from_torch(Ragged())


class FakeClassLabel:
    def __init__(self, names):
        self.names = names


class FakeImage:  # named like datasets.Image so the image column is found by type
    pass


FakeImage.__name__ = "Image"
FakeClassLabel.__name__ = "ClassLabel"


class FakeHF:
    """Duck-typed stand-in for datasets.Dataset: .features, len, row iteration, column access."""

    def __init__(self, rows, names=("cat", "dog")):
        self.rows = rows
        self.features = {"img": FakeImage(), "target": FakeClassLabel(list(names)), "id": object()}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        return [r[key] for r in self.rows] if isinstance(key, str) else self.rows[key]

    def __iter__(self):
        return iter(self.rows)


def hf_rows(n, seed):
    rng = np.random.default_rng(seed)
    return [{"img": Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)), "target": i % 2, "id": i}
            for i in range(n)]


def test_from_huggingface_duck_typed():
    tr, te = FakeHF(hf_rows(6, 0)), FakeHF(hf_rows(4, 1))
    ds = from_huggingface(tr, te)
    assert ds.classes == ["cat", "dog"]
    assert ds.x_train.shape == (6, 4, 4) and ds.image_shape == (4, 4, 1)
    np.testing.assert_array_equal(ds.x_test[3], np.asarray(te.rows[3]["img"]))
    assert ds.y_train.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.meta["options"]["image_key"] == "img" and ds.meta["options"]["label_key"] == "target"
    both = from_huggingface({"train": tr, "test": te})
    assert both.fingerprint == ds.fingerprint
    arrays = FakeHF([{"img": np.full((2, 2, 3), i, np.uint8), "target": i % 2, "id": i} for i in range(6)])
    a = from_huggingface(arrays, image_key="img", label_key="target", test_fraction=0.34)
    assert a.x_train.shape[1:] == (2, 2, 3) and a.n_test == 2
    with pytest.raises(DataError, match="not a column"):
        from_huggingface(tr, image_key="pixels")


def test_from_torch_and_huggingface_labels_get_the_array_checks():
    import torch

    names = FakeHF([{"img": np.full((2, 2), i, np.uint8), "target": ["dog", "cat"][i % 2], "id": i}
                    for i in range(6)])
    names.features["target"] = object()  # a plain string column, not a ClassLabel
    ds = from_huggingface(names, names, label_key="target")
    assert ds.classes == ["cat", "dog"] and ds.y_train.tolist() == [1, 0, 1, 0, 1, 0]
    mixed = FakeHF([{"img": np.zeros((2, 2), np.uint8), "target": ["cat", 1][i % 2], "id": i} for i in range(4)])
    mixed.features["target"] = object()
    with pytest.raises(DataError, match="mixes class names and numbers"):
        from_huggingface(mixed, mixed, label_key="target")
    nan = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.tensor([0.0, 1.0, float("nan"), 1.0]))
    with pytest.raises(DataError, match="example 2 has non-integer label"):
        from_torch(nan)
    labels = torch.utils.data.TensorDataset(torch.zeros(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]))
    with pytest.raises(DataError, match="label"):
        from_torch(labels, labels, classes=["a", "b"])  # label 2 has no name
    negative = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.tensor([0, -1, 0, 1]))
    with pytest.raises(DataError, match="label"):
        from_torch(negative, negative)


def test_loaders_registry_and_dispatch(tmp_path):
    assert {"npz", "idx", "cifar", "folder", "fashion-mnist"} <= set(LOADERS)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("tiff:whatever")


@pytest.mark.skipif(not _HAVE_FMNIST, reason=f"Fashion-MNIST files not in {FASHION_MNIST_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
def test_cli_run_on_a_fashion_mnist_slice(tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app
    from tailscope.study import Study

    out = tmp_path / "fm"
    args = ["run", "-d", "fashion-mnist", "--data-opt", "limit_train=300", "--data-opt", "limit_test=60",
            "-l", "logreg", "--opt", "max_iter=30", "--trials", "4", "--block-size", "2", "-o", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    study = Study.open(out)  # the slice options were recorded, so the data reloads identically
    assert study.data.n_train == 300 and study.data.n_test == 60
    assert study.info()["done"] == 4 and study.info()["mean_test_acc"] > 0.5
