"""What every analysis returns and how it is saved, so the report can show it."""

from __future__ import annotations

import json
import tempfile
import warnings
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

    def save(self, study_dir: str | Path) -> Path | str:
        """Write result.json, reading.md and figure.png under ``<study_dir>/analyses/<name>/``.

        Returns the folder: a Path, or a URL string for a study on an fsspec URL (the
        files are written locally first, then copied there).
        """
        from tailscope.store import child_location, put_dir

        dest = child_location(study_dir, ANALYSES_DIR, self.name)
        done = _done_trials(study_dir)
        if isinstance(dest, str):
            with tempfile.TemporaryDirectory() as tmp:
                put_dir(self._write(Path(tmp), done), dest)
            return dest
        return self._write(dest, done)

    def _write(self, out: Path, study_done_trials: int | None = None) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        # the study's done trials when this was computed: the report flags results that predate more trials
        payload = {"name": self.name, "title": self.title, "summary": _jsonable(self.summary),
                   "data": _jsonable(self.data), "study_done_trials": study_done_trials}
        (out / "result.json").write_text(json.dumps(payload, indent=1))
        (out / "reading.md").write_text(self.reading.strip() + "\n")
        if self.figure is not None:
            self.figure.savefig(out / "figure.png", dpi=110, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(self.figure)
        return out


def _done_trials(study_dir) -> int | None:
    """Done trials of the study at ``study_dir`` (None if it has no readable store)."""
    from tailscope.store import StoreError, TrialStore

    try:
        return int(TrialStore.open(study_dir).done().sum())
    except (StoreError, OSError):
        return None


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


def mask_seeds(seed: int, n: int) -> np.ndarray:
    """The model seeds :func:`train_on_masks` gives its ``n`` mask rows (row k's does not depend on n)."""
    return np.random.default_rng([seed, 0xA11]).integers(0, 2**31 - 1, n)


def train_on_masks(learner: Learner, data: Dataset, masks: np.ndarray, seed: int,
                   block: int | None = None) -> Predictions:
    """Train one model per mask row with seeds derived from ``seed``, in learner-sized blocks."""
    masks = np.asarray(masks, dtype=bool)
    seeds = mask_seeds(seed, len(masks))
    block = block or learner.preferred_block
    parts = [learner.fit_predict(data, masks[a:a + block], seeds[a:a + block])
             for a in range(0, len(masks), block)]
    return Predictions.concat(parts)


def accuracy(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-model accuracy: ``pred`` is (K, N), ``y`` is (N,)."""
    return (pred == y).mean(axis=1)


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its Student-t confidence interval (n - 1 degrees of freedom).

    With few values (R = 8 models: t = 2.36, not 1.96) the normal quantile would cover
    less than ``level``. The half-width is NaN for fewer than 2 values.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    q = stats.t.ppf(0.5 + level / 2, len(v) - 1)
    return float(v.mean()), float(q * v.std(ddof=1) / np.sqrt(len(v)))


def welch_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Difference of means ``mean(a) - mean(b)`` of two independent samples, Welch's t.

    Returns a dict: ``diff``, ``ci`` (half-width of the ``level`` confidence interval,
    Student t at the Welch-Satterthwaite degrees of freedom), ``df``, ``p`` (two-sided
    p-value of diff = 0; ``p < 1 - level`` exactly when the interval excludes 0) and
    ``no_spread``. ``ci``, ``df`` and ``p`` are NaN when either side has fewer than 2
    values, and when neither side varies (``no_spread`` True): identical repeats (a
    deterministic learner, or too few repeats to see any spread) say nothing about the
    noise, so no interval or test can be drawn from them.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nan = float("nan")
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else nan
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "ci": nan, "df": nan, "p": nan, "no_spread": False}
    # a side whose values are all equal has no variance (var() can leave ~1e-33 of rounding noise)
    va = a.var(ddof=1) / len(a) if np.ptp(a) > 0 else 0.0
    vb = b.var(ddof=1) / len(b) if np.ptp(b) > 0 else 0.0
    se2 = va + vb
    if se2 <= 0:
        return {"diff": diff, "ci": nan, "df": nan, "p": nan, "no_spread": True}
    df = float(se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    se = float(np.sqrt(se2))
    return {"diff": diff, "ci": float(stats.t.ppf(0.5 + level / 2, df) * se), "df": df,
            "p": float(2 * stats.t.sf(abs(diff) / se, df)), "no_spread": False}


def identical_repeats(preds: Predictions) -> bool:
    """Whether every model of ``preds`` predicted exactly what the first did (train and test):
    models trained on one set with different seeds that agree everywhere come from a
    deterministic learner, so repeating them measures no noise."""
    return len(preds.train_pred) > 1 and bool((preds.train_pred == preds.train_pred[0]).all()
                                               and (preds.test_pred == preds.test_pred[0]).all())


# --------------------------------------------------------------------------- checks of settings


def check_unit(value, name: str, flag: str | None = None) -> float:
    """``value`` as a float in (0, 1] (a mem or influence threshold), else a ValueError naming it.

    Memorization and influence are differences of two accuracies, so a cut above 1 selects
    nothing, and one at or below 0 (or NaN) selects noise or nothing.
    """
    label = f"{name} ({flag})" if flag else name
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number in (0, 1], got {value!r}.") from None
    if not (np.isfinite(v) and 0 < v <= 1):
        raise ValueError(f"{label} must lie in (0, 1] (a difference of two accuracies), got {value!r}.")
    return v


def check_count(value, name: str, minimum: int, flag: str | None = None) -> int:
    """``value`` as an int >= ``minimum``, else a ValueError naming it."""
    label = f"{name} ({flag})" if flag else name
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_trainable(learner: Learner) -> None:
    """Raise the learner's own error now if it is a stand-in that cannot train (a study made in
    Python whose learner was not passed), before a sub-study's store is created for it."""
    from tailscope.study import _StoredLearner

    if isinstance(learner, _StoredLearner):
        raise learner.error()  # says how to pass one


def with_learner(study, learner: Learner | None):
    """``study`` training with ``learner`` instead of its own (a shallow copy; the caller's
    Study is left as it is), or ``study`` itself when ``learner`` is None."""
    import copy

    if learner is None:
        return study
    if not isinstance(learner, Learner):
        raise TypeError(f"learner must be a tailscope Learner, got {type(learner).__name__}.")
    out = copy.copy(study)
    out.learner = learner
    return out


# --------------------------------------------------------------------------- shared by the paper analyses


def as_study(study, learner: Learner | None = None):
    """A :class:`~tailscope.study.Study` from a Study or a study directory (reopened, learner rebuilt)."""
    from tailscope.study import Study

    if isinstance(study, Study):
        return study
    return Study.open(study, learner=learner)


def study_scores(study, infl_threshold: float | None = None):
    """The scores of ``study`` with every pair an analysis needs.

    An analysis reads same-class pairs at ``infl_threshold`` (default and at most the
    paper's 0.15). Saved scores (``<study>/scores``) are used when they cover every
    done trial and kept at least those pairs; else the scores are estimated: saved when
    there were none, they were out of date with the default selection, or this is the
    default selection; otherwise (the user's own saved options) estimated in memory with
    a warning, never overwriting them.
    """
    from tailscope.estimate import EstimateOptions
    from tailscope.scores import Scores

    default = EstimateOptions()
    need = min(float(default.infl_threshold if infl_threshold is None else infl_threshold),
               float(default.infl_threshold))
    done = int(study.store.done().sum())
    if done < study.store.trials:  # (its standard errors say how much less it resolves)
        warnings.warn(f"the study at {study.path} has {done} of its {study.store.trials} planned trials done; the "
                      "analysis uses those. Finish the run first for the numbers of the full study.", stacklevel=3)
    try:
        saved = Scores.load(study.scores_dir)
    except (FileNotFoundError, OSError, KeyError, ValueError):
        saved = None
    cut = saved is not None and saved.options.get("pairs_found", 0) > saved.options.get("max_pairs", float("inf"))
    if saved is not None and saved.trials == done and _keeps(saved.options, need):
        if not cut:
            return saved
        if saved.options["max_pairs"] >= default.max_pairs:
            # estimating again with the default cap would cut them alike: use them, and say so
            warnings.warn(f"the saved scores of {study.path} keep only the {len(saved.pairs):,} largest of "
                          f"{saved.options['pairs_found']:,} influence pairs (max_pairs); the analysis uses "
                          "those. Re-estimate with a larger max_pairs for all of them.", stacklevel=3)
            return saved
        return _estimate(study, save=False, infl_threshold=need)  # the user's smaller cap: theirs to keep
    users_own = saved is not None and saved.options and not (
        saved.options.get("infl_threshold") == float(default.infl_threshold)
        and saved.options.get("same_class") == default.same_class)
    if users_own or need < float(default.infl_threshold):
        if users_own:
            warnings.warn(f"the saved scores of {study.path} were estimated with "
                          f"infl_threshold={saved.options.get('infl_threshold')}, "
                          f"same_class={saved.options.get('same_class')}; the analysis re-estimates with "
                          f"infl_threshold={need:g}, same class, without overwriting them.", stacklevel=3)
        return _estimate(study, save=False, infl_threshold=need)
    return _estimate(study, save=True)


def _estimate(study, **options):
    """``study.estimate``, without its warning about unfinished studies (said above, for the analysis)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"estimated from \d+ of the \d+ planned trials")
        return study.estimate(**options)


def _keeps(options: dict, infl_threshold: float) -> bool:
    """Whether scores estimated with ``options`` kept every same-class pair at ``infl_threshold``."""
    kept = options.get("infl_threshold")
    return kept is not None and options.get("same_class") is not None and float(kept) <= infl_threshold + 1e-12


def open_study_scores(study, scores=None, learner: Learner | None = None, infl_threshold: float | None = None):
    """``(study, scores)`` from a Study or a study directory: :func:`as_study`, then the given
    ``scores`` or :func:`study_scores` (read if they cover every done trial, else estimated)."""
    study = as_study(study, learner)
    return study, scores if scores is not None else study_scores(study, infl_threshold)


def scaled_inputs(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and test inputs as float32 rows (N, D) on the scale distances are measured in.

    Integer/bool inputs are divided by ``data.meta.get("pixel_max", 255)``. Images keep
    that common scale (per-pixel standardisation would blow up near-constant border
    pixels); non-image features are standardised per feature with the training mean and
    standard deviation (features constant on the training set are only centred).
    Missing values (NaN) count as the training mean of their feature.
    """
    def scale(x):
        x = np.asarray(x)
        if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
            return x.reshape(len(x), -1).astype(np.float32) / np.float32(data.meta.get("pixel_max", 255))
        return x.reshape(len(x), -1).astype(np.float32)

    xtr, xte = scale(data.x_train), scale(data.x_test)
    if any(data.missing_rows):
        xtr, xte = _fill_missing(xtr, xte)
    if not data.is_image:
        mean = xtr.mean(0, dtype=np.float64)
        std = xtr.std(0, dtype=np.float64)
        std = np.where(std > 1e-8, std, 1.0)
        xtr = ((xtr - mean) / std).astype(np.float32)
        xte = ((xte - mean) / std).astype(np.float32)
    return xtr, xte


def _fill_missing(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN replaced by the feature's training mean (0 where a feature is missing everywhere)."""
    seen = ~np.isnan(xtr)
    mean = np.where(seen, xtr, 0).sum(0, dtype=np.float64) / np.maximum(seen.sum(0), 1)
    fill = mean.astype(np.float32)
    return (np.where(np.isnan(xtr), fill, xtr), np.where(np.isnan(xte), fill, xte))


def child_study(parent, subdir: str, *, data: Dataset | None = None, learner: Learner | None = None,
                trials: int | None = None, ratio: float | None = None, seed: int | None = None):
    """A study next to ``parent``'s analyses (``<parent>/analyses/<subdir>``), same config unless overridden.

    Re-running with the same arguments resumes it (the trial store checks the config).
    """
    from tailscope.store import child_location
    from tailscope.study import Study

    same_learner = learner is None
    study = Study(data if data is not None else parent.data, learner if learner is not None else parent.learner,
                  trials=int(trials or parent.trials),
                  ratio=float(ratio if ratio is not None else parent.design.ratio), design=parent.design.kind,
                  seed=int(parent.design.seed if seed is None else seed),
                  path=child_location(parent.path, ANALYSES_DIR, subdir),
                  block_size=parent.block_size if same_learner else None, design_block=parent.design.block)
    return study


def set_aside(path) -> str:
    """Make room at ``path`` (local or fsspec URL) without losing trained trials.

    A folder whose trial store holds done trials is moved to ``<parent>/.replaced/<name>-<time>``
    (returned, so the caller can say where); one with none is deleted ("" returned).
    """
    import time

    import fsspec

    from tailscope.store import StoreError, TrialStore, study_location

    fs, root = fsspec.core.url_to_fs(study_location(path))
    if not fs.exists(root):
        return ""
    try:
        keep = bool(TrialStore.open(path).done().any())
    except StoreError:
        keep = False
    if not keep:
        fs.rm(root, recursive=True)
        return ""
    parent, name = str(study_location(path)).rstrip("/").rsplit("/", 1)
    dest = f"{parent}/.replaced/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    fs.makedirs(fsspec.core.url_to_fs(dest)[1].rsplit("/", 1)[0], exist_ok=True)
    fs.mv(root, fsspec.core.url_to_fs(dest)[1], recursive=True)
    return dest


def replaced_note(moved: str) -> str:
    return f" (its trained trials were moved to {moved})" if moved else ""


def settled_child_study(parent, subdir: str, *, what: str = "sub-study", **kwargs):
    """:func:`~tailscope.analyses.base.child_study`, checked against the store already in its folder.

    A store made with the same config (data, learner, ratio, design, seed, block size) is
    reused, and grown if more trials are asked for. One made with another config belongs
    to an earlier run of the analysis with other settings: it is set aside (moved under
    ``.replaced/`` if it holds trained trials, see :func:`set_aside`), with a warning that
    names the differences, and the study starts afresh. Trial counts are
    not part of the config; use :func:`scores_of_first` to score exactly the trials asked for.
    """
    from tailscope.store import StoreError, TrialStore, config_diff

    child = child_study(parent, subdir, **kwargs)
    try:
        existing = TrialStore.open(child.path)
    except StoreError:  # none yet
        return child
    wanted = json.loads(json.dumps(child.config, default=str))
    if not existing.holds(wanted):
        diffs = config_diff(existing.config, wanted)
        moved = set_aside(child.path)
        warnings.warn(f"the {what} at {child.path} was made with other settings ("
                      + "; ".join(diffs) + "); it is replaced by a new one with the settings asked for"
                      + replaced_note(moved) + ".", stacklevel=3)
        child = child_study(parent, subdir, **kwargs)
    return child


def scores_of_first(child, trials: int, progress: bool = False, infl_threshold: float | None = None):
    """Scores of the first ``trials`` trials of ``child``, training what is missing.

    Trial k depends only on the study config and k, so the first t trials of a study
    grown to more are exactly a t-trial study: a rerun with fewer trials reuses them
    (estimated in memory; the child's saved scores are left alone) instead of
    reporting the larger study's numbers. Pairs are kept from ``infl_threshold`` when
    it is below the paper's 0.15 (then estimated in memory too).
    """
    from tailscope.estimate import EstimateOptions, estimate

    trials = int(trials)
    child.learner.check_data(child.data)  # a learner that cannot take the data: refused before a store exists
    if not _has_first(child.path, trials):  # training ahead: a learner that cannot train is refused first
        check_trainable(child.learner)
    store = child.store
    if store.trials <= trials:
        if not store.done()[:trials].all():
            child.run(progress=progress)
    elif not store.done()[:trials].all():  # a larger study: train only what the first trials lack
        from tailscope.runner import Job, run_blocks

        blocks = {b: t[t < trials] for b, t in store.missing().items() if b * store.block < trials}
        job = Job(store_path=child.path, data=child.data, learner=child.learner, design=child.design,
                  config_hash=store.group.attrs.get("config_hash"))
        run_blocks(job, {b: t for b, t in blocks.items() if len(t)}, progress=progress)
    low = infl_threshold is not None and infl_threshold < EstimateOptions().infl_threshold
    options = EstimateOptions(infl_threshold=float(infl_threshold)) if low else None
    if store.trials == trials and not low:
        return child.estimate(save=True)
    return estimate(store, options, first_trials=trials)


def _has_first(path, trials: int) -> bool:
    """Whether the store at ``path`` exists and its first ``trials`` trials are done (read only)."""
    from tailscope.store import StoreError, TrialStore

    try:
        done = TrialStore.open(path).done()
    except StoreError:
        return False
    return len(done) >= trials and bool(done[:trials].all())


# --------------------------------------------------------------------------- influence pairs and their noise

#: at or above this estimated share of noise among the high-influence pairs, the
#: pairs are mostly noise and the analyses built on them draw no conclusion
NOISE_SHARE_LIMIT = 0.5


class StoredStudy:
    """A study read from its trial store alone: enough for analyses that only read scores.

    It has what :func:`study_scores` uses (``path``, ``store``, ``scores_dir``,
    ``estimate``) and neither data nor learner, so a study whose dataset cannot be reloaded
    (made from in-memory arrays, file moved) can still be analysed from its scores.
    """

    def __init__(self, path):
        from tailscope.store import TrialStore, is_remote, study_location

        loc = study_location(path)
        self.path = loc if is_remote(loc) else str(Path(loc).absolute())
        self.store = TrialStore.open(self.path)

    @property
    def scores_dir(self):
        from tailscope.scores import scores_location

        return scores_location(self.path)

    def estimate(self, save: bool = True, **kwargs):
        from tailscope.estimate import EstimateOptions, estimate

        scores = estimate(self.store, EstimateOptions(**kwargs))
        if save:
            scores.save(self.scores_dir)
        return scores


def open_scores_only(study, scores=None, infl_threshold: float | None = None):
    """``(study, scores)`` like :func:`open_study_scores`, but a study directory is read from its
    store alone (:class:`StoredStudy`): its data is neither loaded nor needed."""
    from tailscope.study import Study

    if not isinstance(study, Study | StoredStudy):
        study = StoredStudy(study)
    return study, scores if scores is not None else study_scores(study, infl_threshold)


def pairs_noise_share(scores, threshold: float, study=None) -> float | None:
    """Estimated share of noise among the same-class pairs with infl >= ``threshold``.

    The expected number of pairs that would reach the threshold with no influence at all,
    over the pairs found (see ``Scores.pairs_false_share_est``). The scores' own estimate is
    used when they were made at this threshold with same-class pairs and hold the null
    count; otherwise, given the ``study`` the scores came from, it is estimated in memory
    from the same trials (one pass over the store). Without the study, scores made before
    the null count give their mirror estimate. None when nothing can be had, or no pair
    was found.
    """
    kept = scores.infl_threshold
    same = kept is not None and abs(kept - threshold) <= 1e-12 and scores.options.get("same_class") is True
    if same and (scores.n_pairs_null is not None or study is None):
        return scores.pairs_false_share_est
    if study is None:
        return None
    from tailscope.estimate import EstimateOptions, estimate

    store = study.store
    done = int(store.done().sum())
    if done < scores.trials or scores.trials < 2:
        return None
    first = None if done == scores.trials else int(scores.trials)
    return estimate(store, EstimateOptions(infl_threshold=float(threshold)), first_trials=first).pairs_false_share_est


def noise_sentence(share: float | None, trials: int, n_pairs: int) -> str:
    """What the estimated noise share says about the pairs, for a reading (empty without pairs)."""
    if not n_pairs:
        return ""
    if share is None:
        return ("How many of these pairs are noise was not estimated (the scores predate the noise count); "
                "re-estimate the study to know. ")
    pct = f"{100 * share:.0f}%"
    if share >= NOISE_SHARE_LIMIT:
        return (f"But about {pct} of these pairs are estimated to be noise at {trials} trials (the number of pairs "
                "that would reach the threshold by chance if no training example influenced any test example, over "
                "those found), so they are mostly noise and no conclusion is drawn from them here: run more "
                "trials. ")
    return (f"About {pct} of these pairs are estimated to be noise at {trials} trials (pairs expected by chance "
            "with no influence at all, over those found). ")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation over entries finite in both (nan when fewer than 3 or constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over entries finite in both (nan when fewer than 3 or constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def jaccard(a, b) -> float:
    """|A & B| / |A | B| of two collections (nan when both are empty)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if (a or b) else float("nan")


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 4.0):
    """A matplotlib Figure (not registered with pyplot) and its axes, one per column."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, (list(np.atleast_1d(axes)) if ncols > 1 else axes)


def fmt(x, digits: int = 3) -> str:
    """A number for a reading paragraph ("n/a" for None or nan)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def fmt_p(p: float, level: float = 0.05) -> str:
    """A p-value for a reading: 3 decimals, "p < 0.001" below that, and never printed as the
    level it falls below (0.0496 reads "p < 0.05", not "p = 0.050" beside a verdict at 0.05)."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    if p < 1e-3:
        return "p < 0.001"
    text = f"{p:.3f}"
    if p < level <= float(text):
        return f"p < {level:g}"
    return f"p = {text}"
