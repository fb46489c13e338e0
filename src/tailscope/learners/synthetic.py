"""A learner whose true memorization and influence are known by construction (for tests)."""

from __future__ import annotations

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner, Predictions


class SyntheticLearner(Learner):
    """Predicts each example correctly at random, with known probabilities.

    Training example i is right with probability ``p_in[i]`` when i is in the trial's
    subset and ``p_out[i]`` otherwise, so mem(i) = p_in[i] - p_out[i] exactly. Test
    example j is right with probability ``base[j] + sum_i effect[i, j] * [i in subset]``
    (clipped to [0, 1]; keep it inside). A wrong prediction is label (y + 1) mod C.
    The soft score is the 0/1 outcome, so hard and soft estimates agree.
    """

    preferred_block = 50

    def __init__(self, p_in, p_out, base, effect, name: str = "synthetic"):
        self.p_in = np.asarray(p_in, dtype=np.float64)
        self.p_out = np.asarray(p_out, dtype=np.float64)
        self.base = np.asarray(base, dtype=np.float64)
        self.effect = np.asarray(effect, dtype=np.float64)
        self.name = name

    def spec(self) -> dict:
        import hashlib

        h = hashlib.sha256()
        for a in (self.p_in, self.p_out, self.base, self.effect):
            h.update(a.tobytes())
        return {"kind": "synthetic", "name": self.name, "params_sha256": h.hexdigest()[:16]}

    def true_mem(self) -> np.ndarray:
        return self.p_in - self.p_out

    def true_infl(self, n: int, m: int) -> np.ndarray:
        """Exact subsampled influence for a uniform m-of-n design.

        Including i changes the inclusion odds of every other example:
        P(i' in I | i in I) - P(i' in I | i not in I) = -1/(n-1).
        """
        total = self.effect.sum(axis=0, keepdims=True)
        return self.effect - (total - self.effect) / (n - 1)

    def fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        self._check_shapes(data.n_train, data.n_test)
        C = data.n_classes
        tr_p = np.where(masks, self.p_in, self.p_out)
        te_p = np.clip(self.base + masks.astype(np.float64) @ self.effect, 0, 1)
        tr_u = np.stack([np.random.default_rng(int(s)).random(data.n_train) for s in seeds])
        te_u = np.stack([np.random.default_rng([int(s), 1]).random(data.n_test) for s in seeds])
        tr_ok, te_ok = tr_u < tr_p, te_u < te_p
        return Predictions(
            np.where(tr_ok, data.y_train, (data.y_train + 1) % C), tr_ok.astype(np.float32),
            np.where(te_ok, data.y_test, (data.y_test + 1) % C), te_ok.astype(np.float32),
        )

    def _check_shapes(self, n: int, n_test: int) -> None:
        wanted = {"p_in": (n,), "p_out": (n,), "base": (n_test,), "effect": (n, n_test)}
        for name, shape in wanted.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"SyntheticLearner.{name} has shape {got}, but this dataset needs {shape} "
                                 f"(n_train={n}, n_test={n_test}); build the learner for this dataset.")
