"""Loaders for the file formats people have: ``PREFIX:PATH`` strings dispatched by load_dataset.

File formats live in :mod:`tailscope.data.formats` (idx, CIFAR, image folders); this
module holds the in-memory converters (numpy arrays, torch and Hugging Face datasets),
npz files, and the :data:`LOADERS` registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tailscope.data.dataset import DataError, Dataset, encode_string_labels, stratified_split
from tailscope.data.formats.cifar import load_cifar
from tailscope.data.formats.folder import load_folder
from tailscope.data.formats.idx import load_fashion_mnist, load_idx

__all__ = ["LOADERS", "from_arrays", "from_huggingface", "from_torch", "load_cifar",
           "load_fashion_mnist", "load_folder", "load_idx", "load_npz"]


def _infer_image_shape(x: np.ndarray) -> tuple[int, int, int] | None:
    """(H, W, C) for arrays shaped (N, H, W) or (N, H, W, C) with C in {1, 3}; else None."""
    if x.ndim == 3:
        return (x.shape[1], x.shape[2], 1)
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return tuple(x.shape[1:])
    return None


def from_arrays(
    x_train, y_train, x_test=None, y_test=None, *, classes=None, name="arrays",
    image_shape=None, test_fraction: float = 0.2, split_seed: int = 0, meta=None,
) -> Dataset:
    """Build a Dataset from numpy arrays; without a test split, make a seeded stratified one."""
    x_train = np.asarray(x_train)
    y_train = np.asarray(y_train)
    if (x_test is None) != (y_test is None):
        raise DataError("give both x_test and y_test, or neither (then a stratified split is made).")
    if x_test is None:
        if len(x_train) != len(y_train):
            raise DataError(f"x has {len(x_train)} rows but y has {len(y_train)} labels; they must match.")
        if len(y_train) == 0:
            raise DataError("the training split is empty (x and y have 0 rows); provide labeled examples.")
        tr, te = stratified_split(y_train, test_fraction, split_seed)
        x_train, x_test, y_train, y_test = x_train[tr], x_train[te], y_train[tr], y_train[te]
    x_test = np.asarray(x_test)
    y_test = np.asarray(y_test)
    if classes is None and (y_train.dtype.kind in "USO" or y_test.dtype.kind in "USO"):
        y_train, y_test, classes = encode_string_labels(y_train, y_test)
    if classes is None:
        # classes come from the training labels; test labels outside them are an error
        top = int(np.max(y_train, initial=0)) if len(y_train) else 0
        classes = [str(c) for c in range(top + 1)]
    if image_shape is None:
        image_shape = _infer_image_shape(x_train)
    return Dataset(x_train, y_train, x_test, y_test, list(classes), name=name,
                   image_shape=image_shape, meta=dict(meta or {}))


def load_npz(path: str, *, test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """``npz:PATH`` with keys x_train/y_train/x_test/y_test, or x/y (then a seeded stratified split).

    Optional keys: ``classes`` (strings) and ``image_shape``. Never unpickles.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"npz file {p} does not exist; pass npz:PATH with the path of a .npz file.")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        raise DataError(f"{p} holds pickled objects, which tailscope refuses to load; save plain "
                        f"numeric arrays with np.savez ({e}).") from None
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    image_shape = tuple(int(s) for s in arrays["image_shape"]) if "image_shape" in arrays else None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        return from_arrays(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                           classes=classes, name=f"npz:{p.name}", image_shape=image_shape,
                           meta={"source": str(p)})
    if {"x", "y"} <= arrays.keys():
        return from_arrays(arrays["x"], arrays["y"], classes=classes, name=f"npz:{p.name}",
                           image_shape=image_shape, test_fraction=test_fraction, split_seed=split_seed,
                           meta={"source": str(p), "test_fraction": test_fraction, "split_seed": split_seed})
    raise DataError(f"{p} has keys {sorted(arrays)}; expected x_train, y_train, x_test, y_test "
                    "(or x and y for an automatic stratified split).")


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


def _to_label(y, i: int) -> int:
    if hasattr(y, "item") and (getattr(y, "ndim", None) == 0 or getattr(y, "size", None) == 1
                               or (hasattr(y, "numel") and y.numel() == 1)):
        y = y.item()
    if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer, float, np.floating)):
        raise DataError(f"example {i} has label {y!r} ({type(y).__name__}); labels must be integers 0..C-1.")
    if float(y) != int(y):
        raise DataError(f"example {i} has non-integer label {y!r}; labels must be integers 0..C-1.")
    return int(y)


def _stack(pairs, n: int | None, channels: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack (x, y) pairs into preallocated arrays (one copy of the data, no list of arrays)."""
    x_out = y_out = None
    chunks: list[np.ndarray] = []  # used only when the length is unknown (iterable datasets)
    labels: list[int] = []
    first_shape = first_dtype = None
    count = 0
    for i, (x, y) in enumerate(pairs):
        arr = _to_numpy(x, channels)
        if first_shape is None:
            first_shape, first_dtype = arr.shape, arr.dtype
            if n is not None:
                x_out = np.empty((n, *arr.shape), dtype=arr.dtype)
                y_out = np.empty(n, dtype=np.int64)
        elif arr.shape != first_shape:
            raise DataError(f"{what} example {i} has shape {arr.shape} but example 0 has {first_shape}; "
                            "resize them to one size first (e.g. a Resize transform).")
        if n is not None:
            if i >= n:
                raise DataError(f"{what} yielded more than its len() = {n} examples.")
            x_out[i] = arr
            y_out[i] = _to_label(y, i)
        else:
            chunks.append(np.asarray(arr, dtype=first_dtype))
            labels.append(_to_label(y, i))
        count = i + 1
    if count == 0:
        raise DataError(f"{what} is empty; it needs at least one example.")
    if n is None:
        return np.stack(chunks), np.asarray(labels, dtype=np.int64)
    if count != n:
        raise DataError(f"{what} yielded {count} examples but its len() is {n}.")
    return x_out, y_out


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


def _finish(x_tr, y_tr, x_te, y_te, classes, name, test_fraction, split_seed, meta) -> Dataset:
    if x_te is None:
        tr, te = stratified_split(y_tr, test_fraction, split_seed)
        x_tr, x_te, y_tr, y_te = x_tr[tr], x_tr[te], y_tr[tr], y_tr[te]
        meta["options"].update(test_fraction=test_fraction, split_seed=split_seed)
    elif x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"train examples have shape {x_tr.shape[1:]} but test examples {x_te.shape[1:]}; "
                        "they must match.")
    if classes is None:
        classes = [str(c) for c in range(int(max(y_tr.max(), y_te.max())) + 1)]
    return Dataset(x_tr, y_tr, x_te, y_te, list(classes), name=name,
                   image_shape=_infer_image_shape(x_tr), meta=meta)


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
        channels-first (torch's convention) and moves channels last; PIL images and
        arrays are taken as ``(H, W[, C])``. Single-channel images become ``(H, W)``.

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
    return _finish(*parts, classes, name, test_fraction, split_seed, meta)


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
    return _finish(*parts, classes, name, test_fraction, split_seed, meta)


#: prefix -> loader(path, **options); load_dataset dispatches "PREFIX:PATH" strings here.
LOADERS = {
    "npz": load_npz,
    "idx": load_idx,
    "cifar": load_cifar,
    "folder": load_folder,
    "fashion-mnist": load_fashion_mnist,  # "fashion-mnist:DIR"; the bare name needs BUILTIN
}
