"""Learners by name, for the CLI and for rebuilding a stored study's learner."""

from __future__ import annotations

from tailscope.learners.base import Learner

SKLEARN_LEARNERS = ("logreg", "forest", "knn")
TORCH_MODELS = ("linear", "mlp", "cnn", "resnet")


def make_learner(name: str, **options) -> Learner:
    """Build a learner from a short name.

    ``logreg``, ``forest``, ``knn``: scikit-learn estimators (options go to the estimator).
    ``linear``, ``mlp``, ``cnn``, ``resnet``: the torch population trainer (options go to
    ``TorchLearner``: epochs, batch_size, lr, precision, widths, ...).
    """
    if name in SKLEARN_LEARNERS:
        from tailscope.learners.sklearn import SklearnLearner

        learner = SklearnLearner(_sklearn_estimator(name, options))
    elif name in TORCH_MODELS:
        from tailscope.learners.torch_population import TorchLearner

        learner = TorchLearner(model=name, **options)
    else:
        raise ValueError(f"unknown learner {name!r}; choose one of "
                         f"{', '.join(SKLEARN_LEARNERS + TORCH_MODELS)}.")
    # Recorded in the study config so a reopened study can rebuild its learner.
    learner.source = {"name": name, "options": dict(options)}
    return learner


def learner_from_source(source: dict | None) -> Learner | None:
    """Rebuild a learner made by :func:`make_learner` from its recorded source, else None."""
    if not source:
        return None
    return make_learner(source["name"], **source.get("options", {}))


def learner_from_spec(spec: dict | None) -> Learner | None:
    """Rebuild a built-in torch learner from its stored spec (a study made in Python), else None.

    Only when the rebuilt learner's spec equals the stored one, so trials it adds are
    the same algorithm.
    """
    if not spec or spec.get("learner") != "torch_population" or spec.get("model") not in TORCH_MODELS:
        return None
    import inspect

    from tailscope.learners.torch_population import TorchLearner

    # the spec's entries that are TorchLearner arguments (the recipe; execution settings are not recorded)
    args = inspect.signature(TorchLearner).parameters.keys() - {"model"}
    try:
        learner = TorchLearner(spec["model"], **{k: v for k, v in spec.items() if k in args})
    except (KeyError, TypeError, ValueError):
        return None
    return learner if learner.spec() == spec else None



def _sklearn_estimator(name: str, options: dict):
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**{"max_iter": 300, **options})
    if name == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**{"n_estimators": 50, **options})
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(**{"n_neighbors": 3, **options})
