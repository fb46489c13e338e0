"""MNIST-style idx files (``idx:DIR``) and the Debian Fashion-MNIST package (``fashion-mnist``).

An idx file is a 4-byte magic number (two zero bytes, a dtype code, the number of
dimensions), one big-endian uint32 per dimension, then the values in big-endian
C order. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from tailscope.data.dataset import DataError, Dataset
from tailscope.data.formats._common import check_limit, subset_indices

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "find_idx_files", "load_fashion_mnist",
           "load_idx", "read_idx"]

#: idx dtype code -> big-endian numpy dtype
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

_SPLITS = {"train": ("train",), "test": ("t10k", "test")}
_KINDS = {"images": 3, "labels": 1}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path, count: int | None = None) -> np.ndarray:
    """Read an idx file (optionally ``.gz``) into a native-byte-order numpy array.

    Parameters
    ----------
    path : str or Path
        The file.
    count : int, optional
        Read only the first ``count`` items along the first axis (saves decompressing
        the rest). Default: all, and the file must end exactly after the data.

    Raises
    ------
    DataError
        Bad magic number or dtype code, a truncated file (naming how many bytes were
        expected and found), trailing bytes, or a corrupt gzip stream.
    """
    p = Path(path)
    try:
        with _open(p) as f:
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{p} is truncated: it has {len(head)} bytes, fewer than an idx header; "
                                "re-download or re-extract it.")
            if head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES or not 1 <= head[3] <= 8:
                raise DataError(f"{p} is not an idx file (magic bytes {head.hex()}; expected 0000 then a "
                                "dtype code 08/09/0b/0c/0d/0e and 1..8 dimensions). If it is gzip-"
                                "compressed, give it a .gz suffix.")
            dtype, ndim = IDX_DTYPES[head[2]], head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{p} is truncated inside its header ({ndim} dimensions announced); "
                                "re-download or re-extract it.")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            n = dims[0] if count is None else min(int(count), dims[0])
            shape = (n, *dims[1:])
            need = math.prod(shape) * dtype.itemsize
            data = f.read(need)
            if len(data) < need:
                which = f" for the first {n} items" if count is not None else ""
                raise DataError(f"{p} is truncated: its header announces shape {dims} ({need} data bytes"
                                f"{which}) but only {len(data)} bytes follow; re-download or re-extract it.")
            if count is None and f.read(1):
                raise DataError(f"{p} has bytes after the {need} data bytes its header (shape {dims}) "
                                "announces; the file is corrupt or not an idx file.")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {p}: {e}; the file is truncated or corrupt, re-download it.") from None
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def find_idx_files(directory: str | Path) -> dict[tuple[str, str], Path]:
    """Map (split, kind) -> file for the MNIST-style files in ``directory``.

    Accepts ``train-images-idx3-ubyte``, ``train-images.idx3-ubyte`` and the same with
    ``.gz``, for splits ``train`` and ``t10k`` (or ``test``) and kinds ``images`` and
    ``labels``. An uncompressed file wins over its ``.gz`` twin.
    """
    d = Path(directory)
    found = {}
    for split, prefixes in _SPLITS.items():
        for kind, dim in _KINDS.items():
            names = [f"{pre}-{kind}{sep}idx{dim}-ubyte{gz}"
                     for gz in ("", ".gz") for pre in prefixes for sep in ("-", ".")]
            for name in names:
                if (d / name).is_file():
                    found[(split, kind)] = d / name
                    break
    return found


def load_idx(path: str, *, classes=None, limit_train: int | None = None, limit_test: int | None = None,
             limit_mode: str = "stratified", limit_seed: int = 0, name: str | None = None,
             meta: dict | None = None) -> Dataset:
    """``idx:DIR``: MNIST-format train/test images and labels in a directory.

    Parameters
    ----------
    path : str
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``,
        and ``.idx3-ubyte`` spellings accepted).
    classes : list of str, optional
        Class names; default ``"0".."C-1"``.
    limit_train, limit_test : int, optional
        Keep only this many examples of each split (for quick runs and tests).
    limit_mode : {"stratified", "first"}
        ``"stratified"`` keeps class proportions, drawn with ``limit_seed``; ``"first"``
        keeps the first examples (and reads only those from disk).
    limit_seed : int
        Seed of the stratified subset.

    Returns
    -------
    Dataset
        Images ``(N, H, W)`` in the file's dtype (uint8 for MNIST), ``image_shape=(H, W, 1)``.
    """
    d = Path(path).expanduser()
    if not d.is_dir():
        raise DataError(f"idx directory {d} does not exist; pass idx:DIR with the folder holding "
                        "train-images-idx3-ubyte[.gz] and its three companions.")
    limit_train = check_limit("limit_train", limit_train, limit_mode)
    limit_test = check_limit("limit_test", limit_test, limit_mode)
    files = find_idx_files(d)
    missing = [f"{'t10k' if s == 'test' else s}-{k}-idx{_KINDS[k]}-ubyte[.gz]"
               for s in _SPLITS for k in _KINDS if (s, k) not in files]
    if missing:
        raise DataError(f"{d} lacks the idx files {', '.join(missing)}; an idx dataset needs train and "
                        "t10k images and labels (MNIST naming).")
    arrays = {}
    for split, limit in (("train", limit_train), ("test", limit_test)):
        first = limit if limit_mode == "first" else None
        labels = read_idx(files[(split, "labels")], first)
        images = read_idx(files[(split, "images")], first)
        if labels.ndim != 1:
            raise DataError(f"{files[(split, 'labels')]} has shape {labels.shape}; a labels file must be 1-D.")
        if images.ndim not in (3, 4):
            raise DataError(f"{files[(split, 'images')]} has shape {images.shape}; an images file must be "
                            "(N, H, W) or (N, H, W, C).")
        if len(images) != len(labels):
            raise DataError(f"{files[(split, 'images')].name} has {len(images)} images but "
                            f"{files[(split, 'labels')].name} has {len(labels)} labels; they must match.")
        idx = subset_indices(labels, limit, limit_mode, limit_seed)
        if idx is not None:
            images, labels = images[idx], labels[idx]
        arrays[split] = (images, labels.astype(np.int64))
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    if classes is None:
        n_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
        classes = [str(c) for c in range(n_classes)]
    image_shape = (*x_tr.shape[1:3], x_tr.shape[3] if x_tr.ndim == 4 else 1)
    options = {"limit_train": limit_train, "limit_test": limit_test, "limit_mode": limit_mode,
               "limit_seed": limit_seed}
    info = {"source": str(d), "format": "idx", "files": {f"{s}_{k}": p.name for (s, k), p in files.items()},
            "options": options, **(meta or {})}
    return Dataset(x_tr, y_tr, x_te, y_te, list(classes), name=name or f"idx:{d.name}",
                   image_shape=image_shape, meta=info)


def load_fashion_mnist(path: str | None = None, *, limit_train: int | None = None,
                       limit_test: int | None = None, limit_mode: str = "stratified",
                       limit_seed: int = 0) -> Dataset:
    """Fashion-MNIST (Zalando; 60,000 train / 10,000 test 28x28 grey images, 10 classes).

    Reads the files of Debian's ``dataset-fashion-mnist`` package in
    ``/usr/share/datasets/fashion-mnist`` (or ``path``, any folder with the same idx files).
    Options as :func:`load_idx`; e.g. ``limit_train=1000, limit_test=200`` for a small
    stratified slice.
    """
    d = Path(path or FASHION_MNIST_DIR).expanduser()
    if not d.is_dir() or len(find_idx_files(d)) < 4:
        hint = ("install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download "
                "the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist and "
                "pass fashion-mnist:DIR") if path is None else "pass the folder holding the four files"
        raise DataError(f"Fashion-MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) not found in {d}; {hint}.")
    ds = load_idx(str(d), classes=FASHION_MNIST_CLASSES, limit_train=limit_train, limit_test=limit_test,
                  limit_mode=limit_mode, limit_seed=limit_seed, name="fashion-mnist",
                  meta={"dataset": "fashion-mnist"})
    if ds.x_train.shape[1:] != (28, 28):
        raise DataError(f"{d} holds images of shape {ds.x_train.shape[1:]}, not Fashion-MNIST's 28x28.")
    return ds
