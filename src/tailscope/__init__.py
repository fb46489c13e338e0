"""tailscope: what a classifier memorizes and which training examples its test predictions lean on.

Subsampled memorization and influence estimators of Feldman & Zhang (NeurIPS 2020),
with standard errors, fast population training, a crash-safe trial store and reports.
"""

import typing as _typing

from tailscope._version import __version__
from tailscope.data import (
    DataError,
    Dataset,
    exact_duplicates,
    from_arrays,
    from_huggingface,
    from_torch,
    load_dataset,
    preprocess,
)
from tailscope.design import Design, theoretical_se_bound
from tailscope.estimate import EstimateOptions, estimate
from tailscope.learners import (
    CallableLearner,
    Learner,
    LearnerError,
    Predictions,
    SklearnLearner,
    SyntheticLearner,
)
from tailscope.report import write_report
from tailscope.scores import Scores, ScoresUnreadable
from tailscope.store import StoreError, TrialStore
from tailscope.study import Study

if _typing.TYPE_CHECKING:
    from tailscope.learners.torch_population import TorchLearner

__all__ = [
    "__version__", "CallableLearner", "DataError", "Dataset", "Design", "EstimateOptions", "Learner",
    "LearnerError", "Predictions", "Scores", "ScoresUnreadable", "SklearnLearner", "StoreError", "Study",
    "SyntheticLearner", "TorchLearner", "TrialStore",
    "estimate", "exact_duplicates", "from_arrays", "from_huggingface", "from_torch", "load_dataset", "preprocess",
    "theoretical_se_bound", "write_report",
]


# Loaded on first access so that ``import tailscope`` (and the CLI) does not import torch.
_LAZY = {"TorchLearner": "tailscope.learners"}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:  # the public names (and dunders), not this module's helpers
    return sorted({n for n in globals() if n.startswith("__")} | set(__all__))
