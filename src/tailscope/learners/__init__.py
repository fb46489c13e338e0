"""Learners: the randomized training algorithm A, applied to a block of trials at once.

:class:`TorchLearner` is loaded on first access (module-level ``__getattr__``), so that
importing tailscope does not import torch (several seconds) unless torch is used.
"""

from typing import TYPE_CHECKING, Any

from tailscope.learners.base import Learner, LearnerError, Predictions
from tailscope.learners.callable import CallableLearner
from tailscope.learners.sklearn import SklearnLearner
from tailscope.learners.synthetic import SyntheticLearner

if TYPE_CHECKING:
    from tailscope.learners.torch_population import TorchLearner

__all__ = ["CallableLearner", "Learner", "LearnerError", "Predictions", "SklearnLearner", "SyntheticLearner", "TorchLearner"]

_LAZY = {"TorchLearner": "tailscope.learners.torch_population"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
