"""Any scikit-learn classifier as a Learner: one clone per trial, every random_state seeded."""

from __future__ import annotations

import hashlib
import re
import warnings
import zlib

import numpy as np

from tailscope.data.dataset import DataError, Dataset
from tailscope.learners.base import Learner, LearnerError, Predictions, true_label_prob


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


class SklearnLearner(Learner):
    """Train a clone of ``estimator`` per trial.

    Parameters
    ----------
    estimator : sklearn classifier
        Cloned for every trial. Must be a classifier (``sklearn.base.is_classifier``;
        for a Pipeline, its final step): regressors and clusterers are refused. Every
        ``random_state`` parameter, nested ones included (a Pipeline's steps, a
        meta-estimator's base estimator), is set from the trial seed; see
        :func:`seed_params`. Inputs are flattened to (N, D) and cast to float32, or to
        float64 where float32 would blur them (see :func:`input_dtype`).
    scale : float or None
        Divide inputs by this number first (None: ``data.meta["pixel_max"]`` for
        integer images, else 1).
    """

    preferred_block = 8

    def __init__(self, estimator, scale: float | None = None):
        if isinstance(estimator, type):
            raise TypeError(f"pass an instance of {estimator.__name__} (e.g. {estimator.__name__}()), "
                            "not the class itself.")
        # predict is not checked here: some classifiers (StackingClassifier) only get it once fitted
        if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
            raise TypeError(f"{type(estimator).__name__} is not a scikit-learn classifier; "
                            "pass e.g. LogisticRegression() or RandomForestClassifier().")
        check_classifier(estimator)
        _check_clonable(estimator)
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float | np.number)
                                  or not np.isfinite(scale) or scale <= 0):
            raise ValueError(f"scale must be a positive number (inputs are divided by it), got {scale!r}.")
        self.estimator = estimator
        self.scale = scale

    def spec(self) -> dict:
        params = {k: param_text(v) for k, v in sorted(self.estimator.get_params(deep=True).items())}
        # nested random_states are seeded per trial since this was recorded (older stores: unseeded)
        nested = any(k.endswith("__random_state") for k in params)
        # hard predictions are predict()'s since this was recorded (older stores: argmax of predict_proba)
        hard = {"hard": "predict"} if hasattr(self.estimator, "predict_proba") else {}
        return {"kind": "sklearn", "estimator": type(self.estimator).__module__ + "." +
                type(self.estimator).__qualname__, "params": params, "scale": self.scale,
                **({"seeding": "nested"} if nested else {}), **hard}

    def _inputs(self, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
        scale = self.scale
        if scale is None:
            integer = np.issubdtype(data.x_train.dtype, np.integer)
            scale = float(data.meta.get("pixel_max", 255)) if integer and data.is_image else 1.0
        dtype = input_dtype(data.x_train)
        return (_flat(data.x_train).astype(dtype) / scale, _flat(data.x_test).astype(dtype) / scale)

    def check_data(self, data: Dataset) -> None:
        """Missing values (NaN inputs) are tried on a small sample before a study writes anything:
        estimators that handle them (HistGradientBoosting, forests, a Pipeline with an imputer) pass,
        the others are refused with scikit-learn's reason."""
        if not any(data.missing_rows):
            return
        reason = self._missing_value_failure(data)
        if reason is not None:
            raise DataError(
                f"{type(self.estimator).__name__} cannot take the missing values (NaN) in {data.name} "
                f"({reason}). Put an imputer first (make_pipeline(SimpleImputer(), "
                f"{type(self.estimator).__name__}(...))), use an estimator that handles NaN "
                "(HistGradientBoostingClassifier; on the command line, -l forest), or impute the data before "
                "building it.")

    def _missing_value_failure(self, data: Dataset) -> str | None:
        """scikit-learn's complaint about NaN when fitting and predicting on a sample, else None.

        Failures for other reasons are left to the trials, which report them with their context.
        """
        import warnings

        from sklearn.base import clone

        xtr, xte = self._inputs(data)
        rng = np.random.default_rng(0)
        nan_tr = np.flatnonzero(np.isnan(xtr).any(axis=1))
        rows = [rng.permutation(nan_tr)[:50]]
        for c in range(data.n_classes):  # every class, a few rows each
            rows.append(rng.permutation(np.flatnonzero(data.y_train == c))[:max(5, 200 // data.n_classes)])
        rows = np.unique(np.concatenate(rows))
        est = clone(self.estimator)
        est.set_params(**seed_params(est, 0), **class_keyed_params(est, data.classes))
        nan_te = np.flatnonzero(np.isnan(xte).any(axis=1))[:20]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(xtr[rows], data.y_train[rows])
                est.predict(np.concatenate([xtr[nan_tr[:20]], xte[nan_te]]))
        except Exception as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return f"{type(e).__name__}: {text}" if "nan" in str(e).lower() else None
        return None

    def fit_predict(self, data: Dataset, masks: np.ndarray, seeds: np.ndarray) -> Predictions:
        from sklearn.base import clone

        xtr, xte = self._inputs(data)
        parts = []
        for k, (mask, seed) in enumerate(zip(masks, seeds, strict=True)):
            est = clone(self.estimator)
            est.set_params(**seed_params(est, int(seed)), **class_keyed_params(est, data.classes))
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    est.fit(xtr[mask], data.y_train[mask])
            except MemoryError:
                raise
            except Exception as e:
                raise LearnerError(_fit_failure(est, data, mask, int(seed), k, len(masks), e)) from e
            _say_once(caught, type(est).__name__)
            try:
                part = self._predict(est, xtr, data.y_train) + self._predict(est, xte, data.y_test)
            except MemoryError:
                raise
            except Exception as e:
                raise LearnerError(f"predicting with {type(est).__name__} failed on the trial with seed {seed} "
                                   f"(row {k} of {len(masks)} in this block): {type(e).__name__}: {e}") from e
            if not (np.isfinite(part[1]).all() and np.isfinite(part[3]).all()):
                raise LearnerError(
                    f"{type(est).__name__}.predict_proba returned NaN or inf on the trial with seed {seed}: the "
                    "estimator is numerically unstable on these inputs (e.g. a kernel that underflows). Scale "
                    "the inputs (a Pipeline with StandardScaler, or scale=), adjust its parameters (e.g. "
                    "gamma), or use another estimator.")
            parts.append(part)
        return Predictions(*(np.stack(a) for a in zip(*parts, strict=True)))

    @staticmethod
    def _predict(est, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the hard prediction is the estimator's own decision: predict() may differ from the
        # argmax of predict_proba (SVC's Platt scaling, a tuned decision threshold)
        if not hasattr(est, "predict_proba"):
            pred = est.predict(x)
            return pred, (pred == y).astype(np.float32)
        proba = est.predict_proba(x)
        classes = np.asarray(est.classes_)  # the columns; lacks the classes its subset lacked
        # where predict() is by definition the first argmax of predict_proba, skip a second pass
        pred = classes[proba.argmax(axis=1)] if _predict_is_argmax(est) else est.predict(x)
        return pred, true_label_prob(proba, classes, y)


def _predict_is_argmax(est) -> bool:
    """Whether ``est.predict`` is ``classes_[argmax(predict_proba)]`` by its definition in scikit-learn
    (exact types only: a subclass may redefine predict). Trees and forests take the argmax of the
    same probabilities; k-NN with uniform weights takes the vote's mode, the smallest class among ties,
    as argmax does."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    kind = type(est)
    if kind is KNeighborsClassifier:
        return est.weights == "uniform"
    return kind in (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier, ExtraTreeClassifier)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def param_text(value) -> str:
    """A parameter as recorded in the study config: its repr, made the same in every process.

    ``repr`` is kept wherever it is stable (so configs recorded before stay equal). Functions
    are named by module and qualified name (their repr holds a memory address), other memory
    addresses are dropped, and arrays numpy abbreviates (``...``) are recorded by a digest
    of their bytes, so two different large arrays never look alike.
    """
    text = repr(value)
    if isinstance(value, np.ndarray) and "..." in text:
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return f"array(shape={value.shape}, dtype={value.dtype}, sha256={digest})"
    if " at 0x" not in text:
        return text
    if callable(value) and hasattr(value, "__qualname__") and not hasattr(value, "get_params"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return _ADDRESS.sub("", text)


def input_dtype(x: np.ndarray) -> type:
    """float32 (half the memory, what the torch learners use), unless it would blur the inputs.

    float32 keeps 24 bits: a column of timestamps or large ids whose values differ by less
    than that precision would collapse to a few distinct values, silently changing what the
    estimator sees, so such data stays float64 (as scikit-learn itself computes).
    """
    flat = _flat(x)
    if not np.issubdtype(flat.dtype, np.number) or flat.dtype.itemsize <= 2 or flat.dtype == np.float32:
        return np.float32
    # (fmax/fmin skip missing values, NaN)
    top = np.fmax.reduce(np.abs(flat), axis=0).astype(np.float64)
    spread = (np.fmax.reduce(flat, axis=0) - np.fmin.reduce(flat, axis=0)).astype(np.float64)
    # float32 steps near the top of a column: 2**-23 of its magnitude; blurring if that is not small
    # against the column's spread
    return np.float64 if np.any((spread > 0) & (top * 2.0**-23 > 1e-4 * spread)) else np.float32


def class_keyed_params(estimator, classes: list[str]) -> dict[str, dict]:
    """``class_weight`` dicts keyed by class names, re-keyed by the class ids the estimator is fit on.

    tailscope encodes labels as ids 0..C-1 (``classes[k]`` is class k's name), so a weight
    given as ``{"cat": 5.0}`` would otherwise name a class the estimator never sees.
    """
    index = {name: k for k, name in enumerate(classes)}
    out = {}
    for name, value in estimator.get_params(deep=True).items():
        if (name == "class_weight" or name.endswith("__class_weight")) and isinstance(value, dict) and value \
                and all(isinstance(c, str) and c in index for c in value):
            out[name] = {index[c]: w for c, w in value.items()}
    return out


def seed_params(estimator, seed: int) -> dict[str, int]:
    """The ``set_params`` arguments that seed every ``random_state`` of ``estimator`` for a trial.

    A top-level ``random_state`` gets the trial seed itself (so a plain estimator is
    seeded as ``random_state=seed``). Every nested one (``step__random_state`` in a
    Pipeline, ``estimator__random_state`` in a meta-estimator) gets its own seed,
    derived from the trial seed and the parameter's name: distinct steps draw
    independent streams, and the values depend on nothing else (not on parameter
    order nor on Python's hash seed), so a rerun or resumed study reproduces them.
    """
    out = {}
    for name in estimator.get_params(deep=True):
        if name == "random_state":
            out[name] = int(seed)
        elif name.endswith("__random_state"):
            ss = np.random.SeedSequence([int(seed), zlib.crc32(name.encode())])
            out[name] = int(ss.generate_state(1)[0]) % (2**31 - 1)
    return out


def check_classifier(estimator) -> None:
    """Raise TypeError unless ``estimator`` is a classifier (a Pipeline: its final step).

    A regressor's float outputs or a clusterer's cluster ids would otherwise be read
    as class labels and give plausible-looking but meaningless scores.
    """
    from sklearn.base import is_classifier

    try:
        if is_classifier(estimator):
            return
    except Exception:  # objects without sklearn tags (no BaseEstimator in their bases)
        if getattr(estimator, "_estimator_type", None) == "classifier":
            return
    final, what = estimator, type(estimator).__name__
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps and isinstance(steps[-1], tuple):
        final = steps[-1][-1]
        what = f"the final step of this {what}, {type(final).__name__},"
    kind = _estimator_type(final)
    kind = f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind.replace('_', ' ')}, not a classifier" if kind else \
        "not a classifier"
    raise TypeError(
        f"{what} is {kind}: tailscope needs predicted class labels, and other outputs would be "
        "read as labels. Pass a classifier (e.g. LogisticRegression(), RandomForestClassifier(), "
        "or a Pipeline ending in one); a custom classifier must inherit "
        "sklearn.base.ClassifierMixin (before BaseEstimator), or wrap your own function in "
        "ts.CallableLearner.")


def _estimator_type(est) -> str | None:
    try:
        from sklearn.utils import get_tags

        return get_tags(est).estimator_type
    except Exception:
        return getattr(est, "_estimator_type", None)


def _fit_failure(est, data: Dataset, mask: np.ndarray, seed: int, row: int, rows: int,
                 err: Exception) -> str:
    """The message for a fit that raised: which trial, what its subset held, how to fix it."""
    y = data.y_train[mask]
    held = np.unique(y)
    lacked = np.setdiff1d(np.arange(data.n_classes), held)
    msg = (f"fitting {type(est).__name__} failed on the trial with seed {seed} (row {row} of the "
           f"{rows} trials in this block; {int(mask.sum())} training examples): "
           f"{type(err).__name__}: {str(err).rstrip()}")
    if not msg.endswith((".", "!", "?")):
        msg += "."
    in_subset = np.bincount(y, minlength=data.n_classes)
    few = np.flatnonzero((in_subset > 0) & (in_subset < 3))
    if len(lacked):
        counts = np.bincount(data.y_train, minlength=data.n_classes)
        rare = int(np.argmin(counts))
        msg += (f" Its random training subset held only classes {_names(data, held)} and lacked "
                f"{_names(data, lacked)} (the smallest class, {_name(data, rare)}, has "
                f"{int(counts[rare])} training example{'s' if counts[rare] != 1 else ''}, so random subsets "
                "can miss it). If that is the cause, raise the subset ratio (--ratio / ratio=), merge or drop "
                "rare classes, or use an estimator that tolerates a missing class (e.g. "
                "RandomForestClassifier, KNeighborsClassifier, or a torch learner such as 'mlp').")
    if len(few):  # estimators with internal cross-validation or per-class statistics need several
        msg += (f" Classes {_names(data, few)} had only 1-2 examples in this subset: if the estimator needs "
                "several per class (internal cross-validation cv=k, per-class covariances), lower its cv, or "
                "merge or drop those classes.")
    return msg


def _name(data: Dataset, i: int) -> str:
    """``2``, or ``2 ('cat')`` where the class name differs from its id."""
    name = str(data.classes[i]) if i < len(data.classes) else str(i)
    return str(i) if name == str(i) else f"{i} ({name!r})"


def _names(data: Dataset, ids, limit: int = 20) -> str:
    """``[0, 2 ('cat')]``: class ids with their names, at most ``limit`` of them."""
    ids = [int(i) for i in ids]
    more = f", ... ({len(ids) - limit} more)" if len(ids) > limit else ""
    return "[" + ", ".join(_name(data, i) for i in ids[:limit]) + more + "]"


def _check_clonable(estimator) -> None:
    """Every trial trains a clone: an estimator that sklearn.base.clone cannot copy is refused here,
    with the convention it breaks, rather than in the middle of a run."""
    from sklearn.base import clone

    try:
        clone(estimator)
    except Exception as e:
        raise TypeError(
            f"{type(estimator).__name__} cannot be copied with sklearn.base.clone ({type(e).__name__}: {e}), and "
            "every trial trains a copy. scikit-learn's convention: __init__ stores each argument under its own "
            "name (self.c = c) and does nothing else; fitting happens in fit.") from None


def _say_once(caught: list, name: str) -> None:
    """scikit-learn's warnings of a fit, each said once per process: the same convergence warning from
    every trial of a study would bury everything else."""
    from tailscope.store import warn_once

    for w in caught:
        text = str(w.message).strip()
        warn_once(f"sklearn-{name}-{w.category.__name__}-{text[:200]}",
                  f"{name}: {text} (said once; the same warning may come from other trials)", w.category)
