"""Wrap a plain function as a Learner, for algorithms that are neither torch nor scikit-learn."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner, Predictions


class CallableLearner(Learner):
    """``fn(x_train_subset, y_train_subset, x_eval, seed) -> (pred, proba_or_None)``.

    ``x_eval`` is the train inputs followed by the test inputs; ``proba`` (optional)
    is an (N, C) matrix of class probabilities. ``name`` and ``params`` identify the
    algorithm in the study config: change them when the function changes.
    ``fn`` must be importable (a module-level function) to run in worker processes.
    """

    def __init__(self, fn: Callable, name: str, params: dict | None = None, block: int = 8):
        self.fn = fn
        self.name = name
        self.params = dict(params or {})
        self.preferred_block = block

    def spec(self) -> dict:
        return {"kind": "callable", "name": self.name, "params": self.params}

    def fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        x_eval = np.concatenate([data.x_train, data.x_test])
        y_eval = np.concatenate([data.y_train, data.y_test])
        n = data.n_train
        out = []
        for mask, seed in zip(masks, seeds, strict=True):
            pred, proba = self.fn(data.x_train[mask], data.y_train[mask], x_eval, int(seed))
            pred = np.asarray(pred)
            if proba is None:
                prob = (pred == y_eval).astype(np.float32)
            else:
                prob = np.asarray(proba)[np.arange(len(y_eval)), y_eval]
            out.append((pred[:n], prob[:n], pred[n:], prob[n:]))
        return Predictions(*(np.stack(a) for a in zip(*out, strict=True)))
