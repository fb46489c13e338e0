"""Loaders for the file formats people have: ``PREFIX:PATH`` strings dispatched by load_dataset.

File formats live in :mod:`tailscope.data.formats` (idx, CIFAR, image folders); this
module holds the in-memory converters (numpy arrays, torch and Hugging Face datasets),
npz files, and the :data:`LOADERS` registry.
"""

from __future__ import annotations

import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tailscope.data.dataset import (
    DataError,
    Dataset,
    decode_name,
    encode_labels,
    prepare_labels,
    stamp_rows,
    stratified_split,
)
from tailscope.data.formats.cifar import load_cifar
from tailscope.data.formats.folder import load_folder
from tailscope.data.formats.idx import load_fashion_mnist, load_idx
from tailscope.data.formats.table import frames_as_arrays, load_table

__all__ = ["LOADERS", "from_arrays", "from_huggingface", "from_torch", "load_cifar",
           "load_fashion_mnist", "load_folder", "load_idx", "load_npz"]


def _image_layout(x: np.ndarray) -> tuple[tuple[int, int, int] | None, bool]:
    """How the rows of ``x`` hold images: ((H, W, C), channels_first) or (None, False).

    Read as images: ``(N, H, W)`` (C = 1); ``(N, H, W, C)`` with C in {1, 3, 4} (grey,
    RGB, RGBA); and channels-first ``(N, C, H, W)`` with C in {1, 3} and H, W >= 8
    (channels_first=True: the caller moves the channels last). ``(N, 1|3, H, 4)`` could be
    either layout and is not guessed.
    """
    if x.ndim == 3:
        return (x.shape[1], x.shape[2], 1), False
    if x.ndim != 4:
        return None, False
    _, a, b, c = x.shape
    if c in (1, 3):
        return (a, b, c), False
    if a in (1, 3) and b >= 8 and c >= 8:
        return (b, c, a), True
    if c == 4 and a not in (1, 3):
        return (a, b, c), False
    return None, False


def _infer_image_shape(x: np.ndarray) -> tuple[int, int, int] | None:
    """(H, W, C) for channels-last arrays (N, H, W) or (N, H, W, C) with C in {1, 3, 4}; else None."""
    shape, channels_first = _image_layout(x)
    return None if channels_first else shape


def _warn(message: str) -> None:
    """warnings.warn attributed to the first caller outside tailscope.data (the user's line)."""
    here, level, frame = str(Path(__file__).parent), 1, sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


_LAYOUT_HINT = ("For images, put the channels last ((N, H, W, C), e.g. np.moveaxis(x, 1, -1) for "
                "(N, C, H, W) arrays) or pass image_shape=(H, W, C).")


def _arrange_images(x_train: np.ndarray, x_test: np.ndarray, image_shape, meta: dict):
    """(x_train, x_test, image_shape) with channels-first images moved to channels last."""
    same = x_train.ndim == x_test.ndim and x_train.shape[1:] == x_test.shape[1:]
    if image_shape is not None:
        try:
            hwc = tuple(int(v) for v in image_shape)
        except (TypeError, ValueError):
            return x_train, x_test, image_shape  # the Dataset names the problem
        # (N, C, H, W) rows given with image_shape=(H, W, C): move the channels last
        if (same and x_train.ndim == 4 and len(hwc) == 3 and x_train.shape[1:] != hwc
                and x_train.shape[1:] == (hwc[2], hwc[0], hwc[1])):
            meta["channels_moved_last"] = True
            return (np.ascontiguousarray(np.moveaxis(x_train, 1, -1)),
                    np.ascontiguousarray(np.moveaxis(x_test, 1, -1)), hwc)
        return x_train, x_test, hwc
    shape, channels_first = _image_layout(x_train)
    if channels_first and same:
        meta["channels_moved_last"] = True
        return (np.ascontiguousarray(np.moveaxis(x_train, 1, -1)),
                np.ascontiguousarray(np.moveaxis(x_test, 1, -1)), shape)
    if shape is None and x_train.ndim >= 4 and same:
        _warn(
            f"rows of shape {tuple(x_train.shape[1:])} are not read as images (tailscope reads (N, H, W), "
            "(N, H, W, C) with C in 1, 3, 4, and (N, C, H, W) with C in 1, 3 and H, W >= 8); they are "
            "used as flat feature vectors, so image models (cnn, resnet) and report pictures are not "
            f"available. {_LAYOUT_HINT}")
    return x_train, x_test, (shape if not channels_first else None)


def _warn_dim_integer_images(x: np.ndarray, image_shape, meta: dict) -> None:
    """Integer images are read as 0..255 unless told their white (pixel_max): say so when their
    largest value is far below that (0..16 digits would be divided by 255)."""
    if image_shape is None or "pixel_max" in meta or x.dtype.kind not in "iu" or not x.size:
        return
    top = int(x.max())
    if 0 < top < 128:
        _warn(f"these integer images go up to {top} only, and are read as 0..255 (white = 255); if {top} is white, "
              f"pass pixel_max={top} (--data-opt pixel_max={top}, a pixel_max key in an npz file, or "
              f"meta={{'pixel_max': {top}}} in from_arrays).")


def _check_same_rows(x, y, what: str) -> None:
    """pandas inputs pair rows by position here, as numpy does: refuse x and y whose indexes
    say their rows are in different orders (a shuffled frame, a separately sorted Series)."""
    import pandas as pd

    if not (isinstance(x, pd.Series | pd.DataFrame) and isinstance(y, pd.Series | pd.DataFrame)):
        return  # (lists and tuples have an index method, not rows)
    xi, yi = x.index, y.index
    if xi.equals(yi):
        return
    if len(xi) == len(yi) and set(xi) == set(yi):
        raise DataError(f"{what} are pandas objects with the same rows in different orders (their indexes differ); "
                        "tailscope pairs them by position, so align them first: y = y.loc[x.index].")
    raise DataError(f"{what} are pandas objects whose indexes differ; tailscope pairs rows by position, so align "
                    "them first (y = y.loc[x.index]), or pass numpy arrays (.to_numpy()) if the order is right.")


def from_arrays(
    x_train, y_train, x_test=None, y_test=None, *, classes=None, name="arrays",
    image_shape=None, test_fraction: float = 0.2, split_seed: int = 0, meta=None,
    allow_missing: bool = False,
) -> Dataset:
    """Build a Dataset from numpy arrays; without a test split, make a seeded stratified one.

    Parameters
    ----------
    x_train, y_train, x_test, y_test : array-like
        Inputs (one row per example) and labels. Labels are class names (strings) or
        non-negative integer codes: ``0..C-1`` as they are, other codes (``1..K``, ``3, 7, 9``)
        become classes in numeric order named by their values. A DataFrame's column names
        label the features (``meta["feature_names"]``), and a test DataFrame's columns are
        matched to the training one's by name. Without ``x_test``/``y_test``,
        ``x_train``/``y_train`` are split (stratified, seeded by ``split_seed``,
        ``test_fraction`` of each class to test); labels are checked (no NaN or None)
        before splitting.
    classes : list of str, optional
        The class names in order: class ``k`` is ``classes[k]``. Integer labels index it;
        string labels must each be one of its names (which fixes the order). Default:
        the sorted names for string labels, else the integer codes as written.
    image_shape : (H, W, C), optional
        Default: inferred for ``(N, H, W)``, ``(N, H, W, C)`` with C in 1, 3, 4 and
        channels-first ``(N, C, H, W)`` with C in 1, 3 (moved to channels last).
    allow_missing : bool
        Accept NaN in float inputs as missing values (recorded as ``meta["allow_missing"]``).
        Only learners that handle them can train on such data: a scikit-learn Pipeline
        starting with an imputer, or an estimator such as HistGradientBoostingClassifier;
        the torch learners refuse it when a study is created.
    """
    if not isinstance(allow_missing, bool | np.bool_) and allow_missing not in (0, 1):
        raise DataError(f"allow_missing must be True or False, got {allow_missing!r}.")
    allow_missing = bool(allow_missing)
    for arg, x in (("x_train", x_train), ("x_test", x_test)):
        if hasattr(x, "toarray") and hasattr(x, "nnz"):  # scipy.sparse: np.asarray makes a 0-d object array
            raise DataError(f"{arg} is a scipy sparse matrix, which tailscope does not take; pass a dense array "
                            f"({arg}.toarray()), reducing its width first if it does not fit in memory.")
    meta = dict(meta or {})
    for xs, ys, what in ((x_train, y_train, "x_train and y_train"), (x_test, y_test, "x_test and y_test")):
        _check_same_rows(xs, ys, what)
    x_train, x_test, names = frames_as_arrays(x_train, x_test)  # DataFrames: their column names label the features
    if names is not None and "feature_names" not in meta:
        meta["feature_names"] = names
    x_train = np.asarray(x_train)
    if (x_test is None) != (y_test is None):
        raise DataError("give both x_test and y_test, or neither (then a stratified split is made).")
    make_split = x_test is None
    y_train = prepare_labels(y_train, "y" if make_split else "y_train", allow_negative=classes is None)
    if x_train.ndim == 0:
        raise DataError(f"x{'' if make_split else '_train'} is a single value (a 0-d array); it must hold "
                        "one row per example.")
    if make_split:
        if len(x_train) != len(y_train):
            raise DataError(f"x has {len(x_train)} rows but y has {len(y_train)} labels; they must match.")
        if len(y_train) == 0:
            raise DataError("the training split is empty (x and y have 0 rows); provide labeled examples.")
        tr, te = stratified_split(y_train, test_fraction, split_seed)
        meta["rows"] = {"train": tr, "test": te}  # each example's row in the arrays given
        meta.pop("rows_fingerprint", None)  # (stamped below, for these arrays)
        if len(te) == 0:
            raise DataError(f"the automatic split put no example in the test split: test_fraction={test_fraction:g} "
                            f"of each class rounds to 0 with {len(y_train)} examples; pass a larger test_fraction, "
                            "or give x_test and y_test.")
        x_train, x_test, y_train, y_test = x_train[tr], x_train[te], y_train[tr], y_train[te]
    else:
        x_test = np.asarray(x_test)
        y_test = prepare_labels(y_test, "y_test", allow_negative=classes is None)
        if x_test.ndim == 0:
            raise DataError("x_test is a single value (a 0-d array); it must hold one row per example.")
    y_train, y_test, classes = encode_labels(y_train, y_test, classes)
    if allow_missing:
        meta["allow_missing"] = True
    x_train, x_test, image_shape = _arrange_images(x_train, x_test, image_shape, meta)
    _warn_dim_integer_images(x_train, image_shape, meta)
    return stamp_rows(Dataset(x_train, y_train, x_test, y_test, list(classes), name=name,
                              image_shape=image_shape, meta=meta))


_NPY_MAGIC = b"\x93NUMPY"
_SPLIT_WORDS = {"train": 0, "training": 0, "test": 1, "testing": 1}


def _split_codes(split: np.ndarray, key: str, n: int, p: Path) -> np.ndarray:
    """An npz split array as a boolean "is test" mask; DataError for anything else.

    Understood: strings ``train``/``test`` (also ``training``/``testing``, any case), integers
    or integer-valued floats 0 (train) / 1 (test), and booleans (True = test).
    """
    if split.ndim != 1 or len(split) != n:
        raise DataError(f"{p.name}: key {key!r} has shape {split.shape}, but it must hold one entry per "
                        f"example ({n},): 0 or 'train' for training rows, 1 or 'test' for test rows.")
    fix = (f"use 0/'train' and 1/'test' only (drop or merge other rows first), or pass split_key=None "
           f"to ignore {key!r} and make a random stratified split")
    if split.dtype.kind in "US":
        words = np.char.lower(np.char.strip(split.astype(str)))
        uniq = np.unique(words)
        unknown = [str(u) for u in uniq if str(u) not in _SPLIT_WORDS]
        if unknown:
            raise DataError(f"{p.name}: key {key!r} has values {unknown[:5]} that are neither train nor "
                            f"test; {fix}.")
        return np.array([_SPLIT_WORDS[str(u)] for u in uniq], dtype=bool)[np.searchsorted(uniq, words)]
    if split.dtype == bool:
        return split.copy()
    if split.dtype.kind in "iuf":
        v = split.astype(np.float64)
        bad = np.unique(v[~np.isin(v, (0.0, 1.0))])
        if len(bad):
            raise DataError(f"{p.name}: key {key!r} has values {bad[:5].tolist()} (0 = train, 1 = test "
                            f"expected); {fix}.")
        return v == 1.0
    raise DataError(f"{p.name}: key {key!r} has dtype {split.dtype}; {fix}.")


def _pixel_max(value, p: Path, where: str) -> float:
    try:
        v = float(np.asarray(value).reshape(-1)[0]) if np.size(value) == 1 else None
    except (TypeError, ValueError):
        v = None
    if v is None or not np.isfinite(v) or v <= 0:
        raise DataError(f"{p.name}: pixel_max ({where}) must be one positive number, got {value!r}.")
    return v


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    with open(p, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    expect = ("tailscope needs an .npz archive with keys x_train, y_train, x_test, y_test (or x and y); "
              "save one with np.savez('data.npz', x=x, y=y)")
    if head == _NPY_MAGIC:
        raise DataError(f"{p} is a single .npy array, not an .npz archive; {expect}.")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p} is not an npz archive (a zip file of .npy arrays); {expect}.")
    try:
        with np.load(p, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" not in str(e):
            raise DataError(f"{p} could not be read as an npz archive ({e}); {expect}.") from None
        raise DataError(f"{p} holds pickled objects, which tailscope refuses to load; save plain "
                        f"numeric arrays with np.savez ({e}).") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise DataError(f"{p} could not be read as an npz archive ({type(e).__name__}: {e}); "
                        f"{expect}.") from None


def load_npz(path: str, *, test_fraction: float | None = None, split_seed: int | None = None,
             split_key: str | None = "split", pixel_max: float | None = None,
             allow_missing: bool = False) -> Dataset:
    """``npz:PATH`` with keys x_train/y_train/x_test/y_test, or x/y.

    With x/y, a key ``split`` (name set by ``split_key``) gives the train/test split:
    one entry per example, ``0``/``"train"``/False for training rows and
    ``1``/``"test"``/True for test rows (USPS's official split is stored so). Without it,
    or with ``split_key=None``, a seeded stratified split is made (``test_fraction``,
    default 0.2, and ``split_seed``, default 0).

    Optional keys: ``classes`` (strings), ``image_shape`` and ``pixel_max`` (the largest
    possible pixel value, e.g. 16 for 0..16 images; the ``pixel_max`` option overrides
    it). It is recorded as ``meta["pixel_max"]``: learners divide integer pixels by it and
    the report scales thumbnails by it. Keys that are not used are named in a warning.
    ``allow_missing=True`` accepts NaN inputs as missing values (see :func:`from_arrays`).
    Never unpickles.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"npz file {p} does not exist; pass npz:PATH with the path of a .npz file.")
    arrays = _read_npz(p)
    used = {k for k in ("classes", "image_shape", "pixel_max") if k in arrays}
    classes = [decode_name(c, "classes") for c in np.atleast_1d(arrays["classes"]).tolist()] \
        if "classes" in arrays else None
    image_shape = tuple(int(s) for s in np.atleast_1d(arrays["image_shape"])) if "image_shape" in arrays \
        else None
    meta: dict = {"source": str(p)}
    if pixel_max is not None:
        meta["pixel_max"] = _pixel_max(pixel_max, p, "option")
    elif "pixel_max" in arrays:
        meta["pixel_max"] = _pixel_max(arrays["pixel_max"], p, "key")
    if "pixel_max" in meta:  # it scales the inputs: part of the study's identity (see Study.config)
        meta["pixel_max_set"] = True
    if split_key is not None and not isinstance(split_key, str):
        raise DataError(f"split_key must be the name of an npz key or None, got {split_key!r}.")

    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        used |= {"x_train", "y_train", "x_test", "y_test"}
        args = (arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
        kw: dict = {}
    elif {"x", "y"} <= arrays.keys():
        used |= {"x", "y"}
        x, y = arrays["x"], arrays["y"]
        if split_key is not None and split_key in arrays:
            used.add(split_key)
            if test_fraction is not None or split_seed is not None:
                _warn(f"{p.name}: test_fraction/split_seed are ignored because the file's "
                              f"{split_key!r} key gives the split; pass split_key=None for a random "
                              "stratified split.")
            y = prepare_labels(y, "y", allow_negative=classes is None)
            if np.ndim(x) == 0 or len(x) != len(y):
                raise DataError(f"x has {len(x) if np.ndim(x) else 0} rows but y has {len(y)} labels; "
                                "they must match.")
            is_test = _split_codes(arrays[split_key], split_key, len(y), p)
            n_test = int(is_test.sum())
            if n_test in (0, len(y)):
                raise DataError(f"{p.name}: key {split_key!r} puts every row in the "
                                f"{'test' if n_test else 'training'} split; it must mark some rows as train "
                                f"and some as test, or pass split_key=None for a random stratified split.")
            args = (x[~is_test], y[~is_test], x[is_test], y[is_test])
            kw = {}
            meta["split"] = {"key": split_key, "n_train": len(y) - n_test, "n_test": n_test}
            meta["rows"] = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
        else:
            if split_key is not None and split_key != "split":
                raise DataError(f"{p.name} has no key {split_key!r} (split_key); keys are {sorted(arrays)}.")
            tf = 0.2 if test_fraction is None else test_fraction
            seed = 0 if split_seed is None else split_seed
            args = (x, y)
            kw = {"test_fraction": tf, "split_seed": seed}
            meta.update(test_fraction=tf, split_seed=seed)
    else:
        raise DataError(f"{p} has keys {sorted(arrays)}; expected x_train, y_train, x_test, y_test "
                        "(or x and y for an automatic stratified split).")
    ignored = {"split"} if split_key is None else set()  # (asked for: not worth a warning)
    unused = sorted(arrays.keys() - used - ignored)
    if unused:
        _warn(f"{p.name}: npz keys {unused} were not used; tailscope read {sorted(used)}. "
                      "Inputs must be stored as x (or x_train/x_test); a train/test split as "
                      "'split' (0 = train, 1 = test).")
    data = from_arrays(*args, classes=classes, name=f"npz:{p.name}", image_shape=image_shape, meta=meta,
                       allow_missing=allow_missing, **kw)
    if "pixel_max" in meta:
        top = float(data.x_train.max()) if data.x_train.size else 0.0
        if top > meta["pixel_max"]:
            raise DataError(f"{p.name}: pixel_max is {meta['pixel_max']:g} but x_train holds values up to "
                            f"{top:g}; pass the largest possible pixel value (e.g. 255 for 8-bit images).")
    return data


# --------------------------------------------------------------------------- in-memory datasets


def _to_numpy(x, channels: str):
    """One example -> (ndarray, was_torch_tensor). PIL images become (H, W) or (H, W, C)."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        arr = x.detach().cpu().numpy()
        if channels == "first" and arr.ndim != 3:
            raise DataError(f"channels='first' needs (C, H, W) tensors, got shape {arr.shape}.")
        if channels == "first" or (channels == "auto" and arr.ndim == 3 and arr.shape[0] in (1, 3)
                                   and arr.shape[-1] not in (1, 3)):
            arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
        return arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
    if mod.startswith("PIL"):
        im = x
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            # 16/32-bit and float grey: their values as they are (converting to "L" clips them at 255)
            arr = np.asarray(im)
            return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder not in "=|" else arr
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB" if im.mode not in ("1", "I", "I;16", "F", "LA") else "L")
        return np.asarray(im)
    if isinstance(x, Mapping) and ("bytes" in x or "path" in x):  # undecoded HF Image feature
        import io

        from PIL import Image

        src = io.BytesIO(x["bytes"]) if x.get("bytes") else x["path"]
        with Image.open(src, formats=("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")) as im:
            im.load()
            return _to_numpy(im, channels)
    arr = np.asarray(x)
    if arr.dtype == object:
        raise DataError(f"cannot convert an example of type {type(x).__name__} to a numeric array.")
    if channels == "first":
        if arr.ndim != 3:
            raise DataError(f"channels='first' needs (C, H, W) examples, got shape {arr.shape}.")
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _to_label(y, i: int) -> int | str:
    """One item's label: an integer class index, or a class name (str, e.g. a Hugging Face string column)."""
    if hasattr(y, "item") and (getattr(y, "ndim", None) == 0 or getattr(y, "size", None) == 1
                               or (hasattr(y, "numel") and y.numel() == 1)):
        y = y.item()
    if isinstance(y, (str, np.str_)):
        return str(y)
    if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer, float, np.floating)):
        raise DataError(f"example {i} has label {y!r} ({type(y).__name__}); labels must be integers 0..C-1 "
                        "or class names (strings).")
    if not np.isfinite(y) or float(y) != int(y):
        raise DataError(f"example {i} has non-integer label {y!r}; labels must be integers 0..C-1.")
    return int(y)


def _stack(pairs, n: int | None, channels: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack (x, y) pairs into a preallocated array (one copy of the data, no list of arrays)
    and their labels (int64, or an object array when any label is a class name)."""
    x_out = None
    chunks: list[np.ndarray] = []  # used only when the length is unknown (iterable datasets)
    labels: list[int | str] = []
    first_shape = first_dtype = None
    count = 0
    for i, (x, y) in enumerate(pairs):
        arr = _to_numpy(x, channels)
        if first_shape is None:
            first_shape, first_dtype = arr.shape, arr.dtype
            if n is not None:
                x_out = np.empty((n, *arr.shape), dtype=arr.dtype)
        elif arr.shape != first_shape:
            raise DataError(f"{what} example {i} has shape {arr.shape} but example 0 has {first_shape}; "
                            "resize them to one size first (e.g. a Resize transform).")
        if n is not None:
            if i >= n:
                raise DataError(f"{what} yielded more than its len() = {n} examples.")
            x_out[i] = arr
        else:
            chunks.append(np.asarray(arr, dtype=first_dtype))
        labels.append(_to_label(y, i))
        count = i + 1
    if count == 0:
        raise DataError(f"{what} is empty; it needs at least one example.")
    if n is not None and count != n:
        raise DataError(f"{what} yielded {count} examples but its len() is {n}.")
    names = any(isinstance(v, str) for v in labels)  # prepare_labels sorts out names, and names mixed with numbers
    y_out = np.array(labels, dtype=object) if names else np.asarray(labels, dtype=np.int64)
    return (np.stack(chunks) if n is None else x_out), y_out


def _pairs_torch(ds):
    if hasattr(ds, "__len__") and hasattr(ds, "__getitem__"):
        for i in range(len(ds)):
            item = ds[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise DataError(f"torch dataset item {i} is a {type(item).__name__}; expected (x, y).")
            yield item[0], item[1]
    else:
        for i, item in enumerate(ds):
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise DataError(f"torch dataset item {i} is a {type(item).__name__}; expected (x, y).")
            yield item[0], item[1]


def _torch_classes(ds):
    for obj in (ds, getattr(ds, "dataset", None)):  # torch.utils.data.Subset wraps .dataset
        names = getattr(obj, "classes", None)
        if names is not None and not callable(names):
            return [str(c) for c in names]
    return None


def _finish(x_tr, y_tr, x_te, y_te, classes, name, channels, test_fraction, split_seed, meta) -> Dataset:
    """The stacked examples through :func:`from_arrays` (the same label, split and image checks).

    After ``_to_numpy`` the examples are (H, W[, C]) and that layout is passed on; where it is
    not an image tailscope reads ((N, H, W, C) with C outside 1, 3, 4), and with
    ``channels="auto"``, ``from_arrays`` infers the layout (it also reads (C, H, W)).
    """
    for what, y in (("train", y_tr), ("test", y_te)):
        codes = np.asarray(y) if y is not None else np.zeros(0)
        if codes.dtype.kind in "iuf" and len(codes) and codes.min() < 0:
            # torch datasets mark unlabeled examples -1 (STL10's unlabeled split): not a class
            raise DataError(f"the {what} dataset has negative labels (e.g. {codes.min():g}), which torch datasets use "
                            "for unlabeled examples; keep only labeled ones (torch.utils.data.Subset).")
    if x_tr.dtype == np.uint16 and "pixel_max" not in meta:  # 16-bit images (PIL "I;16"): white is 65535, not 255
        meta.update(pixel_max=65535.0, pixel_max_set=True)  # (it scales inputs: part of the study's identity)
    if x_te is None:
        meta["options"].update(test_fraction=test_fraction, split_seed=split_seed)
    image_shape = None
    if channels != "auto" and x_tr.ndim in (3, 4):
        image_shape = _infer_image_shape(x_tr) if x_tr.ndim == 4 else (*x_tr.shape[1:], 1)
    return from_arrays(x_tr, y_tr, x_te, y_te, classes=classes, name=name, image_shape=image_shape,
                       test_fraction=test_fraction, split_seed=split_seed, meta=meta)


def from_torch(dataset_train, dataset_test=None, *, classes=None, name: str = "torch",
               channels: str = "auto", test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Convert torch datasets of ``(x, y)`` items into a Dataset, reading every item once.

    Parameters
    ----------
    dataset_train, dataset_test : torch.utils.data.Dataset
        Map-style (``len`` and indexing) or iterable. ``x`` is a tensor, a PIL image or an
        array; ``y`` an int or a 0-d tensor. Transforms run once here, so use deterministic
        ones (no random augmentation). Without ``dataset_test`` a seeded stratified split
        of ``dataset_train`` is made.
    classes : list of str, optional
        Default: the dataset's ``.classes`` (torchvision sets it), else ``"0".."C-1"``.
    channels : {"auto", "first", "last"}
        Layout of 3-D examples. ``"auto"`` treats tensors shaped ``(1|3, H, W)`` as
        channels-first (torch's convention) and moves channels last; PIL images are
        ``(H, W[, C])`` and arrays are read as :func:`from_arrays` reads them (``(1|3, H, W)``
        channels-first, else channels last). Single-channel images become ``(H, W)``.

    Labels may be integers ``0..C-1`` or class names (strings); they get the checks of
    :func:`from_arrays`.

    Returns
    -------
    Dataset
        Arrays in the examples' dtype (uint8 stays uint8, ``ToTensor`` output is float32).
    """
    if channels not in ("auto", "first", "last"):
        raise DataError(f"channels must be 'auto', 'first' or 'last', got {channels!r}.")
    if classes is None:
        classes = _torch_classes(dataset_train)
    meta = {"source": f"torch:{type(dataset_train).__name__}", "format": "torch",
            "options": {"channels": channels}}
    parts = []
    for what, ds in (("dataset_train", dataset_train), ("dataset_test", dataset_test)):
        if ds is None:
            parts += [None, None]
            continue
        n = len(ds) if hasattr(ds, "__len__") and hasattr(ds, "__getitem__") else None
        parts += list(_stack(_pairs_torch(ds), n, channels, what))
    return _finish(*parts, classes, name, channels, test_fraction, split_seed, meta)


def _hf_columns(ds) -> list[str]:
    feats = getattr(ds, "features", None)
    if feats is not None:
        return list(feats)
    names = getattr(ds, "column_names", None)
    if names is None:
        raise DataError(f"{type(ds).__name__} has no .features or .column_names; pass a Hugging Face "
                        "datasets.Dataset (e.g. load_dataset(...)['train']).")
    return list(names)


def _hf_pick(ds, key, wanted: tuple[str, ...], kind: str, feature_type: str) -> str:
    cols = _hf_columns(ds)
    if key is not None:
        if key not in cols:
            raise DataError(f"{kind}_key={key!r} is not a column; columns are {cols}.")
        return key
    feats = getattr(ds, "features", None) or {}
    for c in cols:  # a column whose feature type says so (Image, ClassLabel)
        if type(feats.get(c)).__name__ == feature_type:
            return c
    for c in wanted:
        if c in cols:
            return c
    raise DataError(f"cannot tell which column holds the {kind}s among {cols}; pass {kind}_key=.")


def _hf_rows(ds, image_key: str, label_key: str):
    src = ds.select_columns([image_key, label_key]) if hasattr(ds, "select_columns") else ds
    for row in src:
        yield row[image_key], row[label_key]


def from_huggingface(ds_train, ds_test=None, *, image_key: str | None = None,
                     label_key: str | None = None, classes=None, name: str = "huggingface",
                     channels: str = "last", test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Convert in-memory Hugging Face ``datasets.Dataset`` objects into a Dataset.

    ``datasets`` is not imported; any object with ``.features`` (or ``.column_names``),
    ``len()`` and row iteration (dicts) works. A ``DatasetDict``-like mapping with
    ``"train"`` and ``"test"`` may be passed as ``ds_train`` alone.

    Parameters
    ----------
    image_key, label_key : str, optional
        Columns to use. Default: the column whose feature is an ``Image`` (else ``image``,
        ``img``, ``pixel_values``, ``x``, ``features``) and the ``ClassLabel`` column (else
        ``label``, ``labels``, ``fine_label``, ``y``).
    classes : list of str, optional
        Default: the label column's ``ClassLabel.names``, else ``"0".."C-1"``.
    channels : {"last", "first", "auto"}
        Layout of array-valued 3-D images (PIL images are always ``(H, W[, C])``).
    """
    if channels not in ("auto", "first", "last"):
        raise DataError(f"channels must be 'auto', 'first' or 'last', got {channels!r}.")
    if ds_test is None and isinstance(ds_train, Mapping) and "train" in ds_train:
        ds_train, ds_test = ds_train["train"], ds_train.get("test")
    image_key = _hf_pick(ds_train, image_key, ("image", "img", "pixel_values", "x", "features"),
                         "image", "Image")
    label_key = _hf_pick(ds_train, label_key, ("label", "labels", "fine_label", "y"), "label", "ClassLabel")
    if classes is None:
        feat = (getattr(ds_train, "features", None) or {}).get(label_key)
        names = getattr(feat, "names", None)
        classes = [str(c) for c in names] if names else None
    meta = {"source": f"huggingface:{type(ds_train).__name__}", "format": "huggingface",
            "options": {"image_key": image_key, "label_key": label_key, "channels": channels}}
    parts = []
    for what, ds in (("ds_train", ds_train), ("ds_test", ds_test)):
        if ds is None:
            parts += [None, None]
            continue
        if ds is not ds_train:
            missing = {image_key, label_key} - set(_hf_columns(ds))
            if missing:
                raise DataError(f"{what} lacks the columns {sorted(missing)} that ds_train uses.")
        n = len(ds) if hasattr(ds, "__len__") else None
        parts += list(_stack(_hf_rows(ds, image_key, label_key), n, channels, what))
    return _finish(*parts, classes, name, channels, test_fraction, split_seed, meta)


#: prefix -> loader(path, **options); load_dataset dispatches "PREFIX:PATH" strings here.
LOADERS = {
    "npz": load_npz,
    "csv": load_table,  # (delimited text or parquet: the file's content decides)
    "parquet": load_table,
    "idx": load_idx,
    "cifar": load_cifar,
    "folder": load_folder,
    "fashion-mnist": load_fashion_mnist,  # "fashion-mnist:DIR"; the bare name needs BUILTIN
}
