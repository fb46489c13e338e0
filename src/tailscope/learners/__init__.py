"""Learners: the randomized training algorithm A, applied to a block of trials at once."""

from tailscope.learners.base import Learner, Predictions
from tailscope.learners.callable import CallableLearner
from tailscope.learners.sklearn import SklearnLearner
from tailscope.learners.synthetic import SyntheticLearner
from tailscope.learners.torch_population import TorchLearner

__all__ = ["CallableLearner", "Learner", "Predictions", "SklearnLearner", "SyntheticLearner", "TorchLearner"]
