"""The Dataset container: train/test arrays, class names, image layout and a fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Raised for data a user supplied that tailscope cannot use; the message says how to fix it."""


@dataclass(frozen=True)
class Dataset:
    """A labeled train/test split held as numpy arrays.

    Parameters
    ----------
    x_train, x_test : ndarray
        Inputs, first axis is the example. Images are kept in their native dtype
        (often uint8) with shape ``(N, H, W)`` or ``(N, H, W, C)``; feature vectors
        have shape ``(N, D)``.
    y_train, y_test : ndarray of int
        Labels in ``0..C-1``.
    classes : list of str
        Class names; ``len(classes)`` is the number of classes C.
    name : str
        A short human-readable name (``"digits"``, ``"npz:/path/file.npz"``).
    image_shape : tuple or None
        ``(H, W, C)`` when the rows are images (possibly flattened), else None; the
        report uses it to draw examples.
    meta : dict
        Free-form provenance (source, loader options, preprocessing). Not part of the
        fingerprint, which covers the arrays and class names only.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    name: str = "dataset"
    image_shape: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_arrays(self.x_train, self.y_train, self.x_test, self.y_test, len(self.classes))
        # Normalise label dtype once so that every learner and the estimator agree.
        object.__setattr__(self, "y_train", np.ascontiguousarray(self.y_train, dtype=np.int64))
        object.__setattr__(self, "y_test", np.ascontiguousarray(self.y_test, dtype=np.int64))
        object.__setattr__(self, "classes", [str(c) for c in self.classes])
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the arrays (dtype, shape, bytes) and class names; identifies the data."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            for arr in (self.x_train, self.y_train, self.x_test, self.y_test):
                a = np.ascontiguousarray(arr)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(memoryview(a).cast("B"))
            h.update(repr(self.classes).encode())
            cached = h.hexdigest()[:32]
            self.__dict__["_fingerprint"] = cached
        return cached

    def describe(self) -> dict:
        """A JSON-able summary (recorded in study configs and reports)."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_classes": self.n_classes,
            "x_shape": list(self.x_train.shape[1:]),
            "x_dtype": str(self.x_train.dtype),
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }


def validate_arrays(x_train, y_train, x_test, y_test, n_classes: int) -> None:
    """Check shapes, finiteness and labels; raise DataError naming the problem and the fix."""
    for name, arr in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
        if not isinstance(arr, np.ndarray):
            raise DataError(f"{name} must be a numpy array, got {type(arr).__name__}; wrap it with np.asarray().")
        if arr.dtype == object:
            raise DataError(f"{name} has dtype object; convert it to a numeric array (e.g. arr.astype(np.float32)).")
    # Emptiness first: an empty split also has too few classes, but that is not the problem.
    for split, word, x, y in (("train", "training", x_train, y_train), ("test", "test", x_test, y_test)):
        if (x.ndim and x.shape[0] == 0) or (y.ndim and y.shape[0] == 0):
            raise DataError(f"the {word} split is empty (x_{split} has {x.shape[0] if x.ndim else 0} "
                            f"rows, y_{split} {y.shape[0] if y.ndim else 0} labels); provide at least "
                            f"one {word} example.")
    if n_classes < 2:
        raise DataError(f"need at least 2 classes, got {n_classes}; check the class list or the labels.")
    _check_split("train", x_train, y_train, n_classes)
    _check_split("test", x_test, y_test, n_classes)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"x_train rows have shape {x_train.shape[1:]} but x_test rows have shape {x_test.shape[1:]}; "
            "train and test inputs must have the same per-example shape."
        )
    empty = np.flatnonzero(np.bincount(y_train.astype(np.int64), minlength=n_classes) == 0)
    if len(empty):
        raise DataError(
            f"classes {empty.tolist()} have no training examples; drop them and renumber labels to 0..C-1 "
            "(np.unique(y, return_inverse=True) does this)."
        )


def _check_split(split: str, x: np.ndarray, y: np.ndarray, n_classes: int) -> None:
    if y.ndim != 1:
        raise DataError(f"y_{split} must be 1-D (one integer label per example), got shape {y.shape}.")
    if x.ndim < 2:
        raise DataError(f"x_{split} must have one row per example (at least 2-D), got shape {x.shape}.")
    if len(x) != len(y):
        raise DataError(f"x_{split} has {len(x)} rows but y_{split} has {len(y)} labels; they must match.")
    if len(y) == 0:
        raise DataError(f"the {split} split is empty; provide at least one {split} example.")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"x_{split} has non-numeric dtype {x.dtype}; convert it to numbers first.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataError(f"x_{split} contains NaN or inf in {bad} rows; impute or drop them first.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"y_{split} must hold integer class labels 0..C-1, got non-integer values.")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"y_{split} has dtype {y.dtype}; labels must be integers 0..C-1 "
            "(map names to integers with np.unique(y, return_inverse=True))."
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(
            f"y_{split} has labels in [{int(y.min())}, {int(y.max())}] but there are {n_classes} classes; "
            f"labels must lie in 0..{n_classes - 1}."
        )


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of indices into (train, test); each class keeps >= 1 train example."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * len(idx)))
        k = min(k, len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def encode_string_labels(y_train: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Map string labels to integers 0..C-1 (sorted names); test labels must occur in training."""
    if (y_train.dtype.kind in "USO") != (y_test.dtype.kind in "USO"):
        raise DataError("labels must be integers 0..C-1 in both splits, or names (strings) in both; "
                        f"got y_train of dtype {y_train.dtype} and y_test of dtype {y_test.dtype}.")
    names = np.unique(y_train)
    unknown = sorted(set(np.unique(y_test).tolist()) - set(names.tolist()))
    if unknown:
        raise DataError(f"y_test has labels {unknown[:5]} that never occur in y_train; every test "
                        "class needs training examples.")
    return np.searchsorted(names, y_train), np.searchsorted(names, y_test), [str(c) for c in names]
