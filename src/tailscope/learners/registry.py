"""Learners by name, for the CLI and for rebuilding a stored study's learner."""

from __future__ import annotations

from tailscope.learners.base import Learner

SKLEARN_LEARNERS = ("logreg", "forest", "knn")
TORCH_MODELS = ("linear", "mlp", "cnn", "resnet")
SCALE_SENSITIVE = ("logreg", "knn")  # (forests split on thresholds; the torch learners standardise)
SPREAD_RATIO = 100


def make_learner(name: str, **options) -> Learner:
    """Build a learner from a short name.

    ``logreg``, ``forest``, ``knn``: scikit-learn estimators (options go to the estimator;
    ``standardize=True`` puts a StandardScaler before it, fitted within each trial).
    ``linear``, ``mlp``, ``cnn``, ``resnet``: the torch population trainer (options go to
    ``TorchLearner``: epochs, batch_size, lr, precision, widths, ...).
    """
    if name in SKLEARN_LEARNERS:
        from tailscope.learners.sklearn import SklearnLearner

        learner = SklearnLearner(_sklearn_estimator(name, options))
    elif name in TORCH_MODELS:
        from tailscope.learners.torch_population import TorchLearner

        if "standardize" in options:
            raise ValueError(f"{name} standardises its inputs itself (TorchLearner); drop the standardize option.")
        _check_option_names(name, options, TorchLearner)
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
    options = dict(options)
    standardize = options.pop("standardize", False)
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be true or false, got {standardize!r}.")
    estimator = _named_estimator(name, options)  # (unknown options: checked there, against the class)
    if not standardize:
        return estimator
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # a step of each trial's pipeline: fitted on the trial's subset, so held-out examples stay held out
    return make_pipeline(StandardScaler(), estimator)


def scale_warning(name: str, options: dict, data) -> str | None:
    """A warning when a scale-sensitive learner meets features of very different spreads, else None."""
    if name not in SCALE_SENSITIVE or options.get("standardize") or data.is_image:
        return None
    import numpy as np

    with np.errstate(invalid="ignore"):
        sd = np.nanstd(data.x_train.reshape(len(data.x_train), -1).astype(np.float64), axis=0)
    sd = sd[np.isfinite(sd) & (sd > 0)]
    if len(sd) < 2 or sd.max() < SPREAD_RATIO * sd.min():
        return None
    return (f"the features' spreads differ {sd.max() / sd.min():,.0f}-fold and {name} depends on their scale "
            f"(the widest features dominate); add --opt standardize=true to standardise them within each trial.")


def _check_option_names(name: str, options: dict, make, extra: tuple[str, ...] = ()) -> None:
    """A ValueError naming options ``make`` does not take, with the closest valid names."""
    import inspect

    from tailscope.names import unknown_names

    valid = [p for p in inspect.signature(make).parameters if p not in ("self", "model", "kwargs")] + list(extra)
    if set(options) - set(valid):
        raise ValueError(f"learner {name!r} has no option {unknown_names(options, valid)}; its options are: "
                         f"{', '.join(valid)}.")


def _named_estimator(name: str, options: dict):
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression as make
        defaults = {"max_iter": 300}
    elif name == "forest":
        from sklearn.ensemble import RandomForestClassifier as make
        defaults = {"n_estimators": 50}
    else:
        from sklearn.neighbors import KNeighborsClassifier as make
        defaults = {"n_neighbors": 3}
    _check_option_names(name, options, make, extra=("standardize",))
    return make(**{**defaults, **options})
