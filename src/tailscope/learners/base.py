"""The Learner protocol: the randomized training algorithm A, trained on a block of trials."""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from tailscope.data.dataset import DataError, Dataset

_INT16 = np.iinfo(np.int16)


class LearnerError(ValueError):
    """A learner that cannot be used as given, or that failed; the message says what to change."""


def as_labels(pred, name: str = "predictions") -> np.ndarray:
    """``pred`` as int16 class labels; refuses values that are not integral labels.

    Integer and bool arrays pass, and so do floats that hold whole numbers (2.0). A
    float such as 0.6 (a regressor's output) is refused instead of being truncated.
    """
    a = np.asarray(pred)
    if a.dtype.kind == "O":  # e.g. a list of Python numbers mixed with None
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            pass
    if a.dtype.kind in "biu":
        vals = a
    elif a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            example = a[bad].ravel()[:3].tolist()
            raise LearnerError(
                f"learner returned non-integer predicted labels in {name} (e.g. {example}); "
                "a learner must predict class ids 0..C-1. Regressors and clusterers cannot "
                "be used: pass a classifier (e.g. LogisticRegression()).")
        vals = a
    else:
        raise LearnerError(f"learner returned {name} of dtype {a.dtype}; predicted labels must be "
                           "integer class ids 0..C-1.")
    if vals.size and (vals.min() < _INT16.min or vals.max() > _INT16.max):
        raise LearnerError(f"learner returned {name} with labels outside "
                           f"{_INT16.min}..{_INT16.max}; predicted labels must be class ids 0..C-1.")
    return vals.astype(np.int16)


@dataclass
class Predictions:
    """What K trained models say about every train and test example.

    Attributes
    ----------
    train_pred, test_pred : ndarray of int16, shape (K, n) and (K, n_test)
        Predicted labels.
    train_prob, test_prob : ndarray of float32, same shapes
        Probability each model gives to the *true* label (the "soft" score). Learners
        without probabilities report 1.0 where the prediction is right, else 0.0.
    """

    train_pred: np.ndarray
    train_prob: np.ndarray
    test_pred: np.ndarray
    test_prob: np.ndarray

    def __post_init__(self) -> None:
        # refuses non-integral labels (0.6) instead of truncating them
        self.train_pred = as_labels(self.train_pred, "train_pred")
        self.test_pred = as_labels(self.test_pred, "test_pred")
        self.train_prob = np.asarray(self.train_prob, dtype=np.float32)
        self.test_prob = np.asarray(self.test_prob, dtype=np.float32)

    @property
    def n_trials(self) -> int:
        return self.train_pred.shape[0]

    def check(self, k: int, n_train: int, n_test: int, n_classes: int) -> None:
        """Raise ValueError if a learner returned arrays of the wrong shape or range."""
        want = {"train_pred": (k, n_train), "train_prob": (k, n_train),
                "test_pred": (k, n_test), "test_prob": (k, n_test)}
        for name, shape in want.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"learner returned {name} of shape {got}, expected {shape}.")
        for name in ("train_pred", "test_pred"):
            a = getattr(self, name)
            if a.size and (a.min() < 0 or a.max() >= n_classes):
                raise ValueError(f"learner returned {name} outside 0..{n_classes - 1}.")
        for name in ("train_prob", "test_prob"):
            a = getattr(self, name)
            if not np.isfinite(a).all() or (a.size and (a.min() < -1e-4 or a.max() > 1 + 1e-4)):
                raise ValueError(f"learner returned {name} with NaN or values outside [0, 1].")

    @classmethod
    def concat(cls, parts: list[Predictions]) -> Predictions:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("train_pred", "train_prob", "test_pred", "test_prob")))


def refuse_missing(data: Dataset, who: str) -> None:
    """Raise DataError if ``data`` holds missing values (NaN inputs), naming the ways out."""
    n_train, n_test = data.missing_rows
    if n_train or n_test:
        raise DataError(
            f"{who} cannot train on missing values: {data.name} has NaN inputs in {n_train} training and "
            f"{n_test} test rows. Impute them before building the data, or use a scikit-learn estimator "
            "that handles them (SklearnLearner(make_pipeline(SimpleImputer(), ...)) or "
            "HistGradientBoostingClassifier()).")


class Learner(ABC):
    """A randomized training algorithm A, applied to K subsets at once.

    Subclasses implement :meth:`fit_predict` and :meth:`spec`. A learner must be
    picklable (worker processes and Ray receive a copy) and deterministic given the
    seeds, so that a resumed study reproduces an uninterrupted one.
    """

    #: trials per learner call that suit this learner (the runner's block size default)
    preferred_block: int = 16

    @abstractmethod
    def fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        """Train one model per row of ``masks`` (bool, shape (K, n_train)) with seed ``seeds[k]``."""

    @abstractmethod
    def spec(self) -> dict:
        """A JSON-able description; part of the study config, so changing it refuses an old store."""

    def check_data(self, data: Dataset) -> None:
        """Raise if this learner cannot train on ``data`` at all (called before a study writes anything).

        The default refuses missing values (NaN inputs of data built with
        ``allow_missing=True``), which most learners cannot take; learners that handle them,
        or that have other requirements (image models), override it.
        """
        refuse_missing(data, type(self).__name__)

    def check_here(self) -> None:
        """Raise if this learner cannot train in this process (a device it lacks): called before a
        study writes anything when its trials train on this machine (not on a Ray cluster)."""
        return None

    def use_cpu_only(self) -> None:
        """Train on CPUs only from now on (called in a Ray task given no GPU); a no-op for CPU learners."""
        return None

    def check_picklable(self) -> None:
        """Raise :class:`LearnerError` if this learner cannot be sent to worker processes.

        Local worker processes (``workers > 1``) receive a pickled copy of the learner;
        call this before starting them, so that a lambda or local function fails with a
        clear message instead of a raw ``PicklingError`` from inside the pool.
        """
        try:
            pickle.dumps(self)
        except Exception as e:  # PicklingError, AttributeError ("Can't pickle local object"), TypeError
            raise LearnerError(
                f"{type(self).__name__} cannot be sent to worker processes ({type(e).__name__}: {e}); "
                "make everything it holds picklable (module-level functions and classes), "
                "or run with workers=1.") from e

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


def true_label_prob(proba: np.ndarray, model_classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Probability of the true label from a predict_proba matrix whose columns are ``model_classes``.

    Classes a model never saw (absent from its subset) get probability 0.
    """
    col = np.full(int(max(y.max(initial=0), model_classes.max(initial=0))) + 1, -1)
    col[model_classes] = np.arange(len(model_classes))
    idx = col[y]
    out = np.zeros(len(y), dtype=np.float32)
    ok = idx >= 0
    out[ok] = proba[np.flatnonzero(ok), idx[ok]]
    return out
