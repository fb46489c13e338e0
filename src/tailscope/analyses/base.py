"""What every analysis returns and how it is saved, so the report can show it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner, Predictions

ANALYSES_DIR = "analyses"


@dataclass
class AnalysisResult:
    """The outcome of one analysis.

    Attributes
    ----------
    name : str
        Folder name under ``<study>/analyses/`` (e.g. ``"label_noise"``).
    title : str
        Heading shown in the report.
    summary : dict
        Headline numbers (JSON-able scalars), shown as a table.
    reading : str
        One paragraph that says what the figure shows, written from the numbers.
    data : dict
        Arrays and tables behind the figure (JSON-able after ``tolist``).
    figure : matplotlib Figure or None
    """

    name: str
    title: str
    summary: dict
    reading: str
    data: dict = field(default_factory=dict)
    figure: object | None = None

    def save(self, study_dir: str | Path) -> Path:
        """Write result.json, reading.md and figure.png under ``<study_dir>/analyses/<name>/``."""
        out = Path(study_dir) / ANALYSES_DIR / self.name
        out.mkdir(parents=True, exist_ok=True)
        payload = {"name": self.name, "title": self.title, "summary": _jsonable(self.summary),
                   "data": _jsonable(self.data)}
        (out / "result.json").write_text(json.dumps(payload, indent=1))
        (out / "reading.md").write_text(self.reading.strip() + "\n")
        if self.figure is not None:
            self.figure.savefig(out / "figure.png", dpi=110, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(self.figure)
        return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def train_on_masks(learner: Learner, data: Dataset, masks: np.ndarray, seed: int,
                   block: int | None = None) -> Predictions:
    """Train one model per mask row with seeds derived from ``seed``, in learner-sized blocks."""
    masks = np.asarray(masks, dtype=bool)
    seeds = np.random.default_rng([seed, 0xA11]).integers(0, 2**31 - 1, len(masks))
    block = block or learner.preferred_block
    parts = [learner.fit_predict(data, masks[a:a + block], seeds[a:a + block])
             for a in range(0, len(masks), block)]
    return Predictions.concat(parts)


def accuracy(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-model accuracy: ``pred`` is (K, N), ``y`` is (N,)."""
    return (pred == y).mean(axis=1)


def mean_ci(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Mean and half-width of its normal-approximation 95% confidence interval."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    return float(v.mean()), float(z * v.std(ddof=1) / np.sqrt(len(v)))
