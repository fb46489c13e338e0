"""Wrap a plain function as a Learner, for algorithms that are neither torch nor scikit-learn."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner, LearnerError, Predictions, as_labels


class CallableLearner(Learner):
    """``fn(x_train_subset, y_train_subset, x_eval, seed) -> (pred, proba_or_None)``.

    ``x_eval`` is the train inputs followed by the test inputs; ``pred`` holds integer
    class ids 0..C-1 (floats such as 0.6 are refused, not truncated); ``proba``
    (optional) is an (N, C) matrix of class probabilities. ``name`` and ``params``
    identify the algorithm in the study config: change them when the function changes.
    ``fn`` must be importable (a module-level function, not a lambda or a local
    function) to run in worker processes; :meth:`check_picklable` says so clearly.
    """

    def __init__(self, fn: Callable, name: str, params: dict | None = None, block: int = 8):
        self.fn = fn
        self.name = name
        self.params = dict(params or {})
        self.preferred_block = block

    def spec(self) -> dict:
        return {"kind": "callable", "name": self.name, "params": self.params}

    def _fn_name(self) -> str:
        qual = getattr(self.fn, "__qualname__", None)
        if qual is None:
            return repr(self.fn)
        mod = getattr(self.fn, "__module__", None)
        return f"{mod}.{qual}" if mod else qual

    def check_data(self, data: Dataset) -> None:
        """Accept every dataset: the function sees the raw arrays, missing values (NaN) included."""
        return None

    def check_picklable(self) -> None:
        """Raise :class:`LearnerError` if ``fn`` cannot reach worker processes.

        Lambdas and local functions cannot be pickled; a function defined in an
        interactive session (``python -c``, a notebook's ``__main__``) pickles but
        cannot be imported by a spawned worker.
        """
        fix = "define it at module top level (in a .py file), or run with workers=1."
        try:
            pickle.dumps(self)  # (the function is all it holds that may not pickle)
        except Exception as e:
            raise LearnerError(
                f"CallableLearner's function {self._fn_name()} cannot be sent to worker processes "
                f"(lambdas and local functions cannot be pickled: {type(e).__name__}: {e}); "
                + fix) from e
        main = sys.modules.get("__main__")
        if getattr(self.fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
            raise LearnerError(
                f"CallableLearner's function {self._fn_name()} was defined in an interactive "
                "session, which worker processes cannot import; " + fix)

    def fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        x_eval = np.concatenate([data.x_train, data.x_test])
        y_eval = np.concatenate([data.y_train, data.y_test])
        n, c = data.n_train, data.n_classes
        who = f"CallableLearner {self.name!r} (function {self._fn_name()})"
        out = []
        for mask, seed in zip(masks, seeds, strict=True):
            pred, proba = self.fn(data.x_train[mask], data.y_train[mask], x_eval, int(seed))
            if np.shape(pred) != (len(y_eval),):
                raise LearnerError(f"{who} returned predictions of shape {np.shape(pred)}; expected "
                                   f"({len(y_eval)},), one label per row of x_eval (train, then test).")
            pred = as_labels(pred, f"the predictions of {who}")
            if proba is None:
                prob = (pred == y_eval).astype(np.float32)
            else:
                proba = np.asarray(proba)
                if proba.shape != (len(y_eval), c):
                    raise LearnerError(f"{who} returned proba of shape {proba.shape}; expected "
                                       f"({len(y_eval)}, {c}): one column per class, or None.")
                prob = proba[np.arange(len(y_eval)), y_eval]
            out.append((pred[:n], prob[:n], pred[n:], prob[n:]))
        return Predictions(*(np.stack(a) for a in zip(*out, strict=True)))
