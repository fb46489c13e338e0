"""Any scikit-learn classifier as a Learner: one clone per trial, seeded when it takes a seed."""

from __future__ import annotations

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner, Predictions, true_label_prob


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


class SklearnLearner(Learner):
    """Train a clone of ``estimator`` per trial.

    Parameters
    ----------
    estimator : sklearn classifier
        Cloned for every trial; if it has a ``random_state`` parameter it is set
        from the trial seed. Inputs are flattened to (N, D) and cast to float32.
    scale : float or None
        Divide inputs by this number first (None: ``data.meta["pixel_max"]`` for
        integer images, else 1).
    """

    preferred_block = 8

    def __init__(self, estimator, scale: float | None = None):
        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")
                and hasattr(estimator, "get_params")):
            raise TypeError(f"{type(estimator).__name__} is not a scikit-learn classifier; "
                            "pass e.g. LogisticRegression() or RandomForestClassifier().")
        self.estimator = estimator
        self.scale = scale

    def spec(self) -> dict:
        params = {k: repr(v) for k, v in sorted(self.estimator.get_params(deep=True).items())}
        return {"kind": "sklearn", "estimator": type(self.estimator).__module__ + "." +
                type(self.estimator).__qualname__, "params": params, "scale": self.scale}

    def _inputs(self, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
        scale = self.scale
        if scale is None:
            integer = np.issubdtype(data.x_train.dtype, np.integer)
            scale = float(data.meta.get("pixel_max", 255)) if integer and data.is_image else 1.0
        return (_flat(data.x_train).astype(np.float32) / scale,
                _flat(data.x_test).astype(np.float32) / scale)

    def fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        from sklearn.base import clone

        xtr, xte = self._inputs(data)
        parts = []
        for mask, seed in zip(masks, seeds, strict=True):
            est = clone(self.estimator)
            if "random_state" in est.get_params():
                est.set_params(random_state=int(seed))
            est.fit(xtr[mask], data.y_train[mask])
            parts.append(self._predict(est, xtr, data.y_train) + self._predict(est, xte, data.y_test))
        return Predictions(*(np.stack(a) for a in zip(*parts, strict=True)))

    @staticmethod
    def _predict(est, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if hasattr(est, "predict_proba"):
            proba = est.predict_proba(x)
            pred = np.asarray(est.classes_)[proba.argmax(axis=1)]
            return pred, true_label_prob(proba, np.asarray(est.classes_), y)
        pred = est.predict(x)
        return pred, (pred == y).astype(np.float32)
