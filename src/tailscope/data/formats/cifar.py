"""CIFAR-10 / CIFAR-100 "python version" batches (``cifar:DIR``), read without running pickle code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tailscope.data.dataset import DataError, Dataset
from tailscope.data.formats._common import check_limit, subset_indices
from tailscope.data.formats.safe_pickle import safe_load

__all__ = ["load_cifar", "read_cifar_batch"]

_SIDE = 32
_ROW = 3 * _SIDE * _SIDE
_SUBDIRS = ("cifar-10-batches-py", "cifar-100-python")


def _key(d: dict, *names: str):
    for n in names:
        if n in d:
            return d[n]
    return None


def _decode_keys(obj: dict) -> dict:
    """CIFAR pickles come from Python 2; keys may be bytes when read with encoding='bytes'."""
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _names(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _images(data, source: Path) -> np.ndarray:
    """(N, 3072) channel-planar rows -> (N, 32, 32, 3) uint8."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) % _ROW:
            raise DataError(f"{source}: 'data' holds {len(data)} bytes, not a multiple of {_ROW} (3x32x32).")
        arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, _ROW)
    else:
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as e:
            raise DataError(f"{source}: 'data' is not a rectangular array ({e}).") from None
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise DataError(f"{source}: 'data' has dtype {arr.dtype}; CIFAR pixels are integers 0..255.")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"{source}: 'data' has values in [{arr.min()}, {arr.max()}]; CIFAR pixels are 0..255.")
        if arr.ndim == 4 and arr.shape[1:] == (3, _SIDE, _SIDE):
            arr = arr.reshape(len(arr), _ROW)
        if arr.ndim != 2 or arr.shape[1] != _ROW:
            raise DataError(f"{source}: 'data' has shape {arr.shape}; a CIFAR batch holds (N, {_ROW}) rows "
                            "of 1024 red, 1024 green and 1024 blue pixels.")
        arr = arr.astype(np.uint8, copy=False)
    return np.ascontiguousarray(arr.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1))


def read_cifar_batch(path: str | Path, label_mode: str = "fine") -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch with the restricted unpickler.

    Returns ``(images (N, 32, 32, 3) uint8, labels (N,) int64)``. Labels come from
    ``labels`` (CIFAR-10) or ``fine_labels``/``coarse_labels`` (CIFAR-100, by ``label_mode``).
    Accepts numpy arrays (as the real files hold), nested lists or raw bytes for ``data``.
    """
    p = Path(path)
    obj = safe_load(p)
    if not isinstance(obj, dict):
        raise DataError(f"{p} holds a {type(obj).__name__}; a CIFAR batch is a dict with 'data' and labels.")
    obj = _decode_keys(obj)
    data = obj.get("data")
    if data is None:
        raise DataError(f"{p} has no 'data' entry (keys: {sorted(map(str, obj))}); is it a CIFAR batch?")
    labels = _key(obj, "labels", f"{label_mode}_labels", "fine_labels")
    if labels is None:
        raise DataError(f"{p} has no labels (looked for 'labels', '{label_mode}_labels'); keys: "
                        f"{sorted(map(str, obj))}.")
    images = _images(data, p)
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{p}: labels must be a flat list of integers, got shape {y.shape}, dtype {y.dtype}.")
    if len(y) != len(images):
        raise DataError(f"{p} has {len(images)} images but {len(y)} labels; the batch is corrupt.")
    return images, y.astype(np.int64)


def _resolve(d: Path) -> Path:
    if (d / "test_batch").is_file() or (d / "test").is_file():
        return d
    for sub in _SUBDIRS:
        if (d / sub).is_dir():
            return d / sub
    return d


def load_cifar(path: str, *, label_mode: str = "fine", limit_train: int | None = None,
               limit_test: int | None = None, limit_mode: str = "stratified", limit_seed: int = 0) -> Dataset:
    """``cifar:DIR``: CIFAR-10 or CIFAR-100 python batches.

    Parameters
    ----------
    path : str
        ``cifar-10-batches-py`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
        ``batches.meta``) or ``cifar-100-python`` (``train``, ``test``, ``meta``), or a
        folder containing one of them.
    label_mode : {"fine", "coarse"}
        CIFAR-100 only: the 100 fine classes or the 20 superclasses.
    limit_train, limit_test, limit_mode, limit_seed
        Keep a subset of each split, as in :func:`tailscope.data.formats.idx.load_idx`.

    Notes
    -----
    The batches are pickles. They are read with a restricted unpickler that builds only
    containers and numeric numpy arrays; a batch asking for any other Python object
    (a tampered file) is refused with a DataError and nothing in it is run.
    """
    if label_mode not in ("fine", "coarse"):
        raise DataError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}.")
    limit_train = check_limit("limit_train", limit_train, limit_mode)
    limit_test = check_limit("limit_test", limit_test, limit_mode)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"CIFAR directory {root} does not exist; pass cifar:DIR with the extracted "
                        "cifar-10-batches-py or cifar-100-python folder.")
    d = _resolve(root)
    batches = sorted((p for p in d.iterdir() if re.fullmatch(r"data_batch_\d+", p.name)),
                     key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if batches and (d / "test_batch").is_file():
        variant, train_files, test_file, meta_file = "cifar-10", batches, d / "test_batch", d / "batches.meta"
    elif (d / "train").is_file() and (d / "test").is_file():
        variant, train_files, test_file, meta_file = "cifar-100", [d / "train"], d / "test", d / "meta"
    else:
        raise DataError(f"{d} holds neither CIFAR-10 batches (data_batch_1..5, test_batch) nor CIFAR-100 "
                        "files (train, test); pass the extracted python-version folder.")
    parts = [read_cifar_batch(f, label_mode) for f in train_files]
    x_tr = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y_tr = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    x_te, y_te = read_cifar_batch(test_file, label_mode)
    classes = None
    if meta_file.is_file():
        meta = safe_load(meta_file)
        meta = _decode_keys(meta) if isinstance(meta, dict) else {}
        names = _key(meta, "label_names", f"{label_mode}_label_names")
        classes = _names(names) if names is not None else None
    n_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    if classes is None:
        classes = [str(c) for c in range(n_classes)]
    elif len(classes) < n_classes:
        raise DataError(f"{meta_file} names {len(classes)} classes but labels go up to {n_classes - 1}.")
    for split, limit in (("train", limit_train), ("test", limit_test)):
        y = y_tr if split == "train" else y_te
        idx = subset_indices(y, limit, limit_mode, limit_seed)
        if idx is not None:
            if split == "train":
                x_tr, y_tr = x_tr[idx], y_tr[idx]
            else:
                x_te, y_te = x_te[idx], y_te[idx]
    options = {"label_mode": label_mode, "limit_train": limit_train, "limit_test": limit_test,
               "limit_mode": limit_mode, "limit_seed": limit_seed}
    info = {"source": str(d), "format": "cifar", "variant": variant,
            "files": [f.name for f in train_files] + [test_file.name], "options": options}
    suffix = f"-{label_mode}" if variant == "cifar-100" else ""
    return Dataset(x_tr, y_tr, x_te, y_te, classes, name=f"cifar:{d.name}{suffix}",
                   image_shape=(_SIDE, _SIDE, 3), meta=info)
