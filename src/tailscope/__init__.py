"""tailscope: what a classifier memorizes and which training examples its test predictions lean on.

Subsampled memorization and influence estimators of Feldman & Zhang (NeurIPS 2020),
with standard errors, fast population training, a crash-safe trial store and reports.
"""

from tailscope._version import __version__
from tailscope.data import (
    DataError,
    Dataset,
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
    Predictions,
    SklearnLearner,
    SyntheticLearner,
    TorchLearner,
)
from tailscope.scores import Scores
from tailscope.store import StoreError, TrialStore
from tailscope.study import Study

__all__ = [
    "__version__", "CallableLearner", "DataError", "Dataset", "Design", "EstimateOptions", "Learner",
    "Predictions", "Scores", "SklearnLearner", "StoreError", "Study", "SyntheticLearner", "TorchLearner", "TrialStore",
    "estimate", "from_arrays", "from_huggingface", "from_torch", "load_dataset", "preprocess",
    "theoretical_se_bound",
]
