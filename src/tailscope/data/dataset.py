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
        fingerprint, which covers the arrays and class names only. ``meta["allow_missing"]``
        (set by ``from_arrays(..., allow_missing=True)``) lets float inputs hold NaN as
        missing values; each learner then says whether it can take them
        (:meth:`tailscope.learners.Learner.check_data`). ``meta["rows"]`` (``{"train": ...,
        "test": ...}``), where tailscope made or read the split, gives each example's row in
        the user's file or arrays; studies store it, and the scores carry it (``row``).
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
        validate_arrays(self.x_train, self.y_train, self.x_test, self.y_test, len(self.classes),
                        allow_missing=bool(self.meta.get("allow_missing")))
        # Normalise label dtype once so that every learner and the estimator agree.
        object.__setattr__(self, "y_train", np.ascontiguousarray(self.y_train, dtype=np.int64))
        object.__setattr__(self, "y_test", np.ascontiguousarray(self.y_test, dtype=np.int64))
        object.__setattr__(self, "classes", [str(c) for c in self.classes])
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", check_image_shape(self.image_shape, self.x_train))

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:  # (the arrays would print thousands of numbers)
        shape = self.x_train.shape[1:]
        kind = (f"images {'x'.join(map(str, self.image_shape))}" if self.image_shape
                else f"{int(np.prod(shape))} features")
        return (f"Dataset({self.name!r}: {self.n_train} train, {self.n_test} test, {self.n_classes} classes, "
                f"{kind}, {self.x_train.dtype})")

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    @property
    def missing_rows(self) -> tuple[int, int]:
        """Rows of (x_train, x_test) holding a missing value (NaN); only datasets built with
        ``allow_missing=True`` can have any."""
        cached = self.__dict__.get("_missing_rows")
        if cached is None:
            cached = (0, 0)
            if self.meta.get("allow_missing"):
                cached = (_nan_rows(self.x_train), _nan_rows(self.x_test))
            self.__dict__["_missing_rows"] = cached
        return cached

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


def stamp_rows(data: Dataset) -> Dataset:
    """Mark ``data.meta["rows"]`` as this data's (its fingerprint beside it), unless it already
    belongs to other data (a meta dict carried over from another dataset)."""
    if "rows" in data.meta and "rows_fingerprint" not in data.meta:
        data.meta["rows_fingerprint"] = data.fingerprint
    return data


def carry_rows(old: Dataset, new: Dataset) -> Dataset:
    """``new`` (the same examples as ``old``, in the same order: inputs transformed or labels
    changed) keeps ``old``'s recorded rows, stamped for its own fingerprint."""
    if recorded_rows(old) is not None and new.meta is not old.meta and (new.n_train, new.n_test) == (
            old.n_train, old.n_test):
        new.meta["rows"] = old.meta["rows"]
        new.meta["rows_fingerprint"] = new.fingerprint
    return new


def recorded_rows(data: Dataset) -> dict | None:
    """The examples' rows in the user's data, when recorded for exactly this data (else None)."""
    rows = data.meta.get("rows")
    if not rows or data.meta.get("rows_fingerprint") != data.fingerprint:
        return None
    return rows


def check_image_shape(image_shape, x: np.ndarray) -> tuple[int, ...]:
    """``image_shape`` as a tuple of ints, checked against the rows of ``x``; DataError if it does not fit."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise DataError(f"image_shape must be a tuple of integers (H, W, C), got {image_shape!r}.") from None
    per_row = int(np.prod(x.shape[1:]))
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise DataError(f"image_shape must be (H, W, C) (or (H, W)) with positive sizes, got {shape}.")
    if int(np.prod(shape)) != per_row:
        raise DataError(
            f"image_shape {shape} holds {int(np.prod(shape))} values but each row of x_train holds "
            f"{per_row} (row shape {tuple(x.shape[1:])}); pass an image_shape (H, W, C) with "
            f"H * W * C = {per_row}, or image_shape=None for feature vectors."
        )
    if len(shape) == 3 and shape[0] in (1, 3) and shape[2] > 4:
        # (3, 32, 32): torch's (C, H, W) order, which would read as 3 rows of 32 pixels with 32 channels
        raise DataError(
            f"image_shape {shape} reads as height {shape[0]}, width {shape[1]} and {shape[2]} channels, but "
            f"image_shape is (H, W, C): it looks like channels-first (C, H, W). Leave image_shape out (arrays "
            f"(N, C, H, W) are recognised and moved channels-last), or pass image_shape={shape[1:] + shape[:1]} "
            "with x = np.moveaxis(x, 1, -1)."
        )
    return shape


def _rows_text(rows: np.ndarray) -> str:
    shown = [int(r) for r in rows[:5]]
    return f"{shown}" + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def missing_labels(y: np.ndarray) -> np.ndarray:
    """Rows of ``y`` whose label is missing: NaN or inf (floats), None or NaN (object arrays)."""
    if y.dtype.kind in "fc":
        return np.flatnonzero(~np.isfinite(y))
    if y.dtype == object:
        return np.flatnonzero([v is None or (isinstance(v, (float, np.floating, complex, np.complexfloating))
                                             and not np.isfinite(v)) for v in y.ravel()])
    return np.zeros(0, dtype=np.int64)


def _missing_label_error(name: str, rows: np.ndarray, y: np.ndarray) -> DataError:
    how = f" (e.g. keep = np.isfinite({name}); x, {name} = x[keep], {name}[keep])" if y.dtype.kind == "f" else ""
    return DataError(
        f"{name} must hold integer class labels 0..C-1, but {len(rows)} of {len(y)} labels are missing "
        f"(NaN, inf or None) at rows {_rows_text(rows)}; drop those rows{how} or give them a class first."
    )


def _looks_one_hot(y: np.ndarray) -> bool:
    if y.ndim != 2 or y.shape[1] < 2 or y.dtype.kind not in "biuf" or not y.size:
        return False
    v = y.astype(np.float64)
    return bool(np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1
                and np.allclose(v.sum(axis=1), 1.0))


def prepare_labels(y, name: str = "y", allow_negative: bool = False) -> np.ndarray:
    """Check a label array before anything is split or encoded; return it as a clean 1-D array.

    Refuses (DataError, naming the problem and the fix): a 0-d or 2-D array (one-hot
    labels get the ``argmax(1)`` hint), missing labels (NaN, inf, None), and object
    arrays that mix strings and numbers. Object arrays of strings become ``str`` arrays
    and object arrays of integers become int64; other dtypes pass unchanged (the Dataset
    checks the values). Numeric labels must be integer-valued (integer floats become
    int64), and not negative unless ``allow_negative`` (codes such as -1/1 that become
    classes by value, without a class list to index).
    """
    return _class_indices(_label_array(y, name), name, allow_negative)


def _class_indices(y: np.ndarray, name: str, allow_negative: bool = False) -> np.ndarray:
    """Numeric labels checked as class indices (names pass unchanged)."""
    if y.dtype.kind not in "iuf" or not len(y):
        return y
    if y.dtype.kind == "f":
        frac = y[y != np.round(y)]
        if len(frac):
            raise DataError(f"{name} has labels that are not whole numbers (e.g. {frac[0]:g}): labels are classes, "
                            "and tailscope studies classifiers. Pass integer class indices 0..C-1 (class ids stored "
                            f"as floats: {name}.astype(int)), or class names as strings.")
        y = y.astype(np.int64)
    if y.min() < 0 and not allow_negative:
        raise DataError(f"{name} has negative labels (e.g. {int(y.min())}), but with a class list integer labels "
                        f"index it (0..C-1). Leave classes out (codes such as -1/1 then become classes named by "
                        f"their values), or map them with np.unique({name}, return_inverse=True)[1].")
    return y


def _label_array(y, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 0:
        raise DataError(f"{name} is a single value (a 0-d array: {y.item()!r}); it must be a 1-D array "
                        "with one class label per example.")
    if _looks_one_hot(y):
        raise DataError(f"{name} has shape {y.shape} and looks one-hot encoded (one column per class); "
                        f"pass one integer class index per example instead: {name}.argmax(1).")
    if y.ndim != 1:
        fix = f"; flatten it with {name}.ravel()" if y.ndim == 2 and y.shape[1] == 1 else ""
        raise DataError(f"{name} must be 1-D (one integer label per example), got shape {y.shape}{fix}.")
    rows = missing_labels(y)
    if len(rows):
        raise _missing_label_error(name, rows, y)
    if y.dtype == bool:  # binary labels: False is class 0, True class 1
        if name != "y_test" and len(y) and y.all() == y.any():  # (a test split of one class is fine)
            raise DataError(f"{name} is boolean and every label is {bool(y[0])}: a classifier needs examples of "
                            "both classes (False is class 0, True class 1).")
        return y.astype(np.int64)
    if y.dtype.kind == "S":  # bytes (e.g. read from HDF5): names
        return np.array([decode_name(v, name) for v in y.tolist()], dtype=str)
    if y.dtype != object or not len(y):
        return y
    kinds: dict[str, object] = {}
    for v in y:
        if isinstance(v, (str, np.str_, bytes, np.bytes_)):
            kinds.setdefault("str", v)
        elif isinstance(v, (bool, np.bool_)):
            kinds.setdefault("bool", v)
        elif isinstance(v, (int, np.integer)):
            kinds.setdefault("int", v)
        elif isinstance(v, (float, np.floating)):
            kinds.setdefault("float", v)
        else:
            kinds.setdefault(type(v).__name__, v)
    if set(kinds) == {"str"}:
        return np.array([decode_name(v, name) for v in y], dtype=str)
    if set(kinds) == {"int"}:
        return y.astype(np.int64)
    if set(kinds) <= {"int", "float"}:
        return y.astype(np.float64)
    if set(kinds) == {"bool"}:
        return y.astype(np.int64)
    if "str" in kinds:
        other = next(v for k, v in kinds.items() if k != "str")
        raise DataError(
            f"{name} mixes class names and numbers (e.g. {kinds['str']!r} and {other!r}); use one kind "
            f"for every label: all names (e.g. {name}.astype(str)) or all integers 0..C-1."
        )
    raise DataError(f"{name} holds labels of types {sorted(kinds)}; labels must be integers 0..C-1 or "
                    "class names (strings).")


def decode_name(v, what: str) -> str:
    """A label or class name as text: bytes (HDF5 files store names so) are decoded as UTF-8."""
    if isinstance(v, bytes | np.bytes_):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{what} holds the bytes {bytes(v)[:20]!r}, which are not UTF-8 text; decode the names "
                            "with their encoding first (e.g. [b.decode('latin-1') for b in names]).") from None
    return str(v)


def _nan_rows(x: np.ndarray) -> int:
    if not np.issubdtype(x.dtype, np.floating):
        return 0
    return int(np.isnan(x).reshape(len(x), -1).any(axis=1).sum())


def validate_arrays(x_train, y_train, x_test, y_test, n_classes: int, *, allow_missing: bool = False) -> None:
    """Check shapes, finiteness and labels; raise DataError naming the problem and the fix.

    ``allow_missing`` accepts NaN in float inputs (missing values, for learners that
    impute them); inf is refused either way.
    """
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
    _check_split("train", x_train, y_train, n_classes, allow_missing)
    _check_split("test", x_test, y_test, n_classes, allow_missing)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"x_train rows have shape {x_train.shape[1:]} but x_test rows have shape {x_test.shape[1:]}; "
            "train and test inputs must have the same per-example shape."
        )
    empty = np.flatnonzero(np.bincount(y_train.astype(np.int64), minlength=n_classes) == 0)
    low = int(y_train.min()) if len(y_train) else 0
    if len(empty) and low > 0 and np.array_equal(empty, np.arange(low)):  # labels 1..K (or 10..): offset
        raise DataError(f"labels start at {low}, but tailscope numbers classes 0..C-1, so classes "
                        f"{_rows_text(empty)} have no training examples; shift them (y - {low}) or pass the "
                        "labels as names (y.astype(str)).")
    if len(empty):
        raise DataError(
            f"classes {_rows_text(empty)} have no training examples; drop them and renumber labels to 0..C-1 "
            "(np.unique(y, return_inverse=True) does this)."
        )


def _check_split(split: str, x: np.ndarray, y: np.ndarray, n_classes: int, allow_missing: bool) -> None:
    if y.ndim != 1:
        raise DataError(f"y_{split} must be 1-D (one integer label per example), got shape {y.shape}.")
    if x.ndim < 2:
        raise DataError(f"x_{split} must have one row per example (at least 2-D), got shape {x.shape}.")
    if len(x) != len(y):
        raise DataError(f"x_{split} has {len(x)} rows but y_{split} has {len(y)} labels; they must match.")
    if len(y) == 0:
        raise DataError(f"the {split} split is empty; provide at least one {split} example.")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(
            f"x_{split} is complex ({x.dtype}); learners take real numbers only. Pass the real and "
            "imaginary parts as separate features (np.concatenate([x.real, x.imag], axis=-1)) or the "
            "magnitude (np.abs(x))."
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"x_{split} has non-numeric dtype {x.dtype}; convert it to numbers first.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        _refuse_non_finite(split, x, allow_missing)
    if np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize > 4 and x.size:
        top = max(abs(float(np.fmax.reduce(x, axis=None))), abs(float(np.fmin.reduce(x, axis=None))))  # NaN skipped
        if top > float(np.finfo(np.float32).max):
            raise DataError(
                f"x_{split} has values up to {top:.3g} in magnitude, beyond the float32 range "
                f"(+-{float(np.finfo(np.float32).max):.3g}) in which the learners compute; rescale it "
                "first (divide by a constant, take logs, or standardise each feature)."
            )
    if np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.complexfloating):
        rows = missing_labels(y)
        if len(rows):
            raise _missing_label_error(f"y_{split}", rows, y)
        if np.issubdtype(y.dtype, np.complexfloating) or not np.all(y == np.round(y)):
            raise DataError(f"y_{split} must hold integer class labels 0..C-1, got non-integer values.")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"y_{split} has dtype {y.dtype}; labels must be integers 0..C-1 "
            "(map names to integers with np.unique(y, return_inverse=True))."
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        if split == "test" and y.min() >= 0:
            extra = np.unique(y[y >= n_classes]).astype(np.int64)
            raise DataError(
                f"y_test has labels {_rows_text(extra)} that no training example has (there are {n_classes} "
                f"classes, 0..{n_classes - 1}); every test class needs training examples: "
                "drop those test rows or add training examples of those classes."
            )
        raise DataError(
            f"y_{split} has labels in [{int(y.min())}, {int(y.max())}] but there are {n_classes} classes; "
            f"labels must lie in 0..{n_classes - 1}."
        )


def _refuse_non_finite(split: str, x: np.ndarray, allow_missing: bool) -> None:
    """Refuse inf always, NaN unless missing values are allowed."""
    flat = x.reshape(len(x), -1)
    n_inf = int(np.isinf(flat).any(axis=1).sum())
    n_nan = int(np.isnan(flat).any(axis=1).sum())
    if n_inf:
        raise DataError(f"x_{split} contains NaN or inf in {int((~np.isfinite(flat)).any(axis=1).sum())} rows "
                        f"({n_inf} with inf); replace inf by finite values (e.g. np.clip or np.nan_to_num) "
                        "or drop those rows.")
    if n_nan and not allow_missing:
        raise DataError(f"x_{split} contains NaN or inf in {n_nan} rows (NaN: missing values); impute or drop "
                        "them first, or, for a learner that handles missing values (a scikit-learn Pipeline "
                        "starting with SimpleImputer, HistGradientBoostingClassifier, RandomForestClassifier), "
                        "accept them: allow_missing=True (from_arrays or load_dataset), or --data-opt allow_missing=true "
                        "on the command line.")


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of indices into (train, test); each class keeps >= 1 train example."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float | np.number) \
            or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"split_seed must be a non-negative integer, got {seed!r}.")
    # Labels are checked first: a NaN label equals no class, so its row would silently vanish.
    y = prepare_labels(y, "y", allow_negative=True)  # (grouped only: any codes will do)
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


def _check_ids_are_not_names(y: np.ndarray, names: list[str]) -> None:
    """Integer labels index ``classes``; labels that are the names themselves (3, 7, 9 with
    classes ["3", "7", "9"]) would fall outside 0..C-1: say how to match them by name."""
    values = np.unique(y)
    if len(values) and (values.min() < 0 or values.max() >= len(names)) and \
            {str(v) for v in values.tolist()} <= set(names):
        raise DataError(f"integer labels index classes (label k is classes[k]), but these labels are the class "
                        f"names themselves ({[str(v) for v in values[:5].tolist()]} ...); pass them as names "
                        "so they are matched by name: y.astype(str).")


def encode_labels(y_train: np.ndarray, y_test: np.ndarray,
                  classes=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels as integers 0..C-1 plus the class names.

    ``classes`` (optional) lists the class names in order: class ``k`` is ``classes[k]``.
    Integer labels index it; string labels are names and must each be one of its
    entries. Without ``classes``, string labels become the sorted names; integer labels
    0..C-1 keep their values (names ``"0".."C-1"``, C = the largest training label + 1),
    and other integer codes (1..K, or 3, 7, 9) become classes in numeric order, named by
    their values.
    """
    is_str_tr, is_str_te = y_train.dtype.kind in "USO", y_test.dtype.kind in "USO"
    if is_str_tr != is_str_te:
        raise DataError("labels must be integers 0..C-1 in both splits, or names (strings) in both; "
                        f"got y_train of dtype {y_train.dtype} and y_test of dtype {y_test.dtype}.")
    if classes is None:
        if is_str_tr:
            return encode_string_labels(y_train, y_test)
        values = np.unique(y_train)
        if len(values) and not np.array_equal(values, np.arange(len(values))) and values.dtype.kind in "iub":
            # other integer codes (1..K, or 3, 7, 9): the classes are their values in numeric order,
            # named as written, as scikit-learn takes any labels
            unseen = np.setdiff1d(y_test, values)
            if len(unseen):
                raise DataError(f"y_test has labels {_rows_text(unseen)} that no training example has (training "
                                f"labels: {_rows_text(values)}); every test class needs training examples: drop "
                                "those test rows or add training examples of those classes.")
            return (np.searchsorted(values, y_train).astype(np.int64), np.searchsorted(values, y_test).astype(np.int64),
                    [str(v) for v in values.tolist()])
        top = int(np.max(y_train, initial=0)) if len(y_train) else 0
        return y_train, y_test, [str(c) for c in range(top + 1)]
    if isinstance(classes, (str, bytes)):
        raise DataError(f"classes must be a list of class names, got the single string {classes!r}.")
    names = [decode_name(c, "classes") for c in classes]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise DataError(f"classes lists {dupes[:5]} more than once; every class name must be unique.")
    if not is_str_tr:
        _check_ids_are_not_names(y_train, names)
        return y_train, y_test, names
    index = {c: k for k, c in enumerate(names)}
    out = []
    for what, y in (("y_train", y_train), ("y_test", y_test)):
        uniq, inverse = np.unique(y.astype(str), return_inverse=True)
        unknown = [str(u) for u in uniq if str(u) not in index]
        if unknown:
            raise DataError(
                f"{what} has labels {unknown[:5]} that are not in classes={names[:10]}"
                f"{' ...' if len(names) > 10 else ''}; with string labels, classes gives the class names "
                "in order and every label must be one of them. Add the missing names to classes, or leave "
                "classes=None to use the sorted label names."
            )
        out.append(np.array([index[str(u)] for u in uniq], dtype=np.int64)[inverse.ravel()])
    return out[0], out[1], names
