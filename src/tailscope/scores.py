"""Scores: the estimates of a study, with standard errors and counts, and their files."""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

MEMORIZATION_FILE = "memorization.parquet"
PAIRS_FILE = "influence_pairs.parquet"
TOPK_FILE = "influence_topk.npz"
SUMMARY_FILE = "summary.json"
PAPER_FILE = "paper_format.npz"


# Estimates are differences of ratios of counts: a value that is exactly a threshold (1/10)
# can come out one rounding step below it (0.09999999999999998). Thresholds compare with
# this slack so that ties are kept whatever the rounding.
TIE_TOL = 1e-9


def at_least(values, threshold: float):
    """``values >= threshold``, ties included despite rounding (NaN compares False)."""
    return np.asarray(values) >= threshold - TIE_TOL


@dataclass
class Scores:
    """Memorization per training example and influence per train/test pair.

    Per training example (length n): ``mem``, ``mem_se`` (0/1 correctness version),
    ``soft_mem``, ``soft_mem_se`` (true-label probability version), ``n_in``,
    ``n_out`` (trials with and without it), ``acc_in``/``acc_out`` (how often models
    with/without it classify it correctly), ``out_pred``/``out_pred_share`` (the most
    frequent prediction of models that did not train on it, and its share),
    ``max_infl``/``max_infl_test`` (its largest influence on a test example of its class).

    ``max_infl`` is NaN (``max_infl_test`` -1) for an example with no eligible test example.

    ``mem_ci_low``/``mem_ci_high`` (and ``soft_mem_ci_low``/``soft_mem_ci_high``) bound a
    95% confidence interval for mem: the Agresti-Caffo interval (:func:`mem_interval`),
    which, unlike ``mem +- 1.96 mem_se``, keeps its coverage when all of an example's
    outcomes agree (there ``mem_se`` is 0). NaN where the example was in every trial or
    in none. Scores saved before the intervals were recorded get the hard one computed
    from ``acc_in``/``acc_out`` on load and the soft one NaN.

    Per test example: ``topk_idx``/``topk_infl``/``topk_se`` (n_test, k), the most
    influential training examples, ties to the lower training index; slots no eligible
    training example can fill (k larger than the class) hold index -1 and NaN.
    ``pairs`` holds every kept high-influence pair.
    """

    y_train: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mem: np.ndarray
    mem_se: np.ndarray
    soft_mem: np.ndarray
    soft_mem_se: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    acc_in: np.ndarray
    acc_out: np.ndarray
    out_pred: np.ndarray
    out_pred_share: np.ndarray
    pairs: pd.DataFrame
    topk_idx: np.ndarray
    topk_infl: np.ndarray
    topk_se: np.ndarray
    max_infl: np.ndarray
    max_infl_test: np.ndarray
    trials: int
    ratio: float
    se_bound: float
    se_curve_trials: np.ndarray
    se_curve_median: np.ndarray
    trial_test_acc: np.ndarray
    trial_in_acc: np.ndarray
    trial_out_acc: np.ndarray
    config: dict = field(default_factory=dict)
    #: the estimation options that shaped ``pairs`` and the top-k (infl_threshold, same_class,
    #: top_k, max_pairs); empty for scores saved before they were recorded
    options: dict = field(default_factory=dict)
    mem_ci_low: np.ndarray | None = None
    mem_ci_high: np.ndarray | None = None
    soft_mem_ci_low: np.ndarray | None = None
    soft_mem_ci_high: np.ndarray | None = None
    #: the mirror of the kept pairs: eligible pairs (same class when kept pairs are) with influence
    #: at or below -infl_threshold; None when not recorded (older scores, a threshold <= 0)
    n_pairs_negative: int | None = None
    #: how many eligible pairs would reach infl_threshold with no influence at all (the expected
    #: number of noise pairs, see estimate.null_expected_pairs); None when not recorded (older scores)
    n_pairs_null: float | None = None
    #: each train / test example's row in the user's data (file or arrays) where the study recorded
    #: it (a split tailscope made or read); None otherwise
    train_row: np.ndarray | None = None
    test_row: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mem_ci_low is None or self.mem_ci_high is None:  # scores saved before intervals existed
            self.mem_ci_low, self.mem_ci_high = mem_interval(self.acc_in, self.n_in, self.acc_out, self.n_out)
        if self.soft_mem_ci_low is None or self.soft_mem_ci_high is None:  # their soft means were not kept
            self.soft_mem_ci_low = np.full(len(self.mem), np.nan)
            self.soft_mem_ci_high = np.full(len(self.mem), np.nan)
        self.pairs = with_label_names(self.pairs, self.classes)
        if self.train_row is not None and self.test_row is not None and "tr_row" not in self.pairs:
            self.pairs = self.pairs.assign(tr_row=self.train_row[self.pairs["tr_idx"].to_numpy(np.int64)],
                                           tt_row=self.test_row[self.pairs["tt_idx"].to_numpy(np.int64)])

    def __repr__(self) -> str:  # (the arrays would print thousands of numbers)
        t = self.infl_threshold
        pairs = f"{len(self.pairs)} pairs" + ("" if t is None else f" at infl >= {t:g}")
        return (f"Scores({self.trials} trials, q={self.ratio:g}: {len(self.mem)} train, {len(self.y_test)} test; "
                f"{int(np.sum(at_least(self.mem, 0.25)))} with mem >= 0.25; {pairs})")

    @property
    def pairs_false_share_est(self) -> float | None:
        """Estimated share of the pairs found that are noise: min(1, expected noise pairs / found).

        The expected number of noise pairs is ``n_pairs_null``: how many eligible pairs would
        reach the threshold if no training example influenced any test example (an exact
        hypergeometric null given each test example's number of correct trials; see
        :func:`tailscope.estimate.null_expected_pairs`). Scores made before it was recorded
        fall back to the mirror count (pairs at or below -threshold), which underestimates the
        noise when test examples are almost always right. None when neither was recorded or
        no pair was found.
        """
        found = self.options.get("pairs_found")
        noise = self.n_pairs_null if self.n_pairs_null is not None else self.n_pairs_negative
        if noise is None or not found:
            return None
        return min(1.0, noise / found)

    def class_names(self, labels) -> np.ndarray:
        """The class names of integer ``labels`` (an id outside ``classes`` as its digits)."""
        raw = np.asarray(labels)
        if raw.dtype.kind not in "iu" and (raw.dtype.kind != "f" or (raw != np.round(raw)).any()):
            raise ValueError(f"labels must be integer class ids, got {raw.dtype} values such as {raw.ravel()[:3]}.")
        labels = raw.astype(np.int64)
        return _names(labels, self.classes)

    # ------------------------------------------------------------- views
    def memorization_frame(self) -> pd.DataFrame:
        """One row per training example (the contents of memorization.parquet)."""
        return pd.DataFrame({
            "index": np.arange(len(self.mem)), "label": self.y_train, "mem": self.mem, "se": self.mem_se,
            "n_in": self.n_in, "n_out": self.n_out, "acc_in": self.acc_in, "acc_out": self.acc_out,
            "soft_mem": self.soft_mem, "soft_se": self.soft_mem_se, "out_pred": self.out_pred,
            "out_pred_share": self.out_pred_share, "max_infl": self.max_infl,
            "max_infl_test": self.max_infl_test,
            "mem_ci_low": self.mem_ci_low, "mem_ci_high": self.mem_ci_high,
            "soft_mem_ci_low": self.soft_mem_ci_low, "soft_mem_ci_high": self.soft_mem_ci_high,
            "label_name": self.class_names(self.y_train),
            # examples never held out have no held-out prediction: no name (out_pred is 0 there)
            "out_pred_name": np.where(np.asarray(self.n_out) > 0, self.class_names(self.out_pred), None),
            **({} if self.train_row is None else {"row": self.train_row}),
        })

    def influence_pairs(self, threshold: float | None = None, same_class: bool = True) -> pd.DataFrame:
        """Kept pairs with influence >= ``threshold`` (default: the threshold used when estimating).

        Only pairs kept when estimating are here: a ``threshold`` below the estimate's
        ``infl_threshold``, or ``same_class=False`` on scores estimated with
        ``same_class=True``, would silently miss pairs, so it raises a ValueError
        that says how to re-estimate.
        """
        kept = self.infl_threshold
        threshold = None if threshold is None else _number(threshold, "threshold")
        if threshold is not None and kept is not None and threshold < kept - 1e-12:
            raise ValueError(f"these scores kept only pairs with infl >= {kept:g}; pairs at {threshold:g} were "
                             f"not kept. Re-estimate with infl_threshold={threshold:g} (`tailscope estimate DIR "
                             f"--threshold {threshold:g}` or study.estimate(infl_threshold={threshold:g})).")
        if not same_class and self.options.get("same_class") is True:
            raise ValueError("these scores kept only same-class pairs; re-estimate with same_class=False "
                             "(`tailscope estimate DIR --any-class`) to get pairs across classes.")
        df = self.pairs
        if threshold is not None:
            df = df[at_least(df["infl"], threshold)]
        found = int(self.options.get("pairs_found", len(self.pairs)))
        if found > len(self.pairs) and len(df) and df["infl"].min() <= self.pairs["infl"].min():
            warnings.warn(f"these scores kept only the {len(self.pairs):,} largest of {found:,} pairs (max_pairs); "
                          f"pairs below infl {self.pairs['infl'].min():.4g} are missing. Re-estimate with a "
                          "larger max_pairs for all of them.", stacklevel=2)
        if same_class:
            df = df[df["tr_label"] == df["tt_label"]]
        return df.reset_index(drop=True)

    def memorized(self, threshold: float = 0.25) -> np.ndarray:
        """Indices of training examples with mem >= threshold (paper: 0.25), most memorized first."""
        idx = np.flatnonzero(at_least(self.mem, _number(threshold, "threshold")))
        return idx[np.argsort(-self.mem[idx], kind="stable")]

    def summary(self) -> dict:
        """Headline numbers (JSON-able)."""
        finite = np.isfinite(self.mem_se)
        width = np.asarray(self.mem_ci_high, float) - np.asarray(self.mem_ci_low, float)
        return {
            "trials": int(self.trials), "ratio": self.ratio, "n_train": len(self.mem),
            "n_test": len(self.y_test),
            "mean_acc_in": float(np.nanmean(self.trial_in_acc)) if len(self.trial_in_acc) else None,
            "mean_acc_out": float(np.nanmean(self.trial_out_acc)) if len(self.trial_out_acc) else None,
            "mean_test_acc": float(np.mean(self.trial_test_acc)) if len(self.trial_test_acc) else None,
            "median_mem_se": float(np.median(self.mem_se[finite])) if finite.any() else None,
            "max_mem_se": float(np.max(self.mem_se[finite])) if finite.any() else None,
            "se_bound": self.se_bound,
            # among the examples with an estimate (held out by some trials and kept by others)
            "frac_mem_ge_0.25": float(np.mean(at_least(self.mem[np.isfinite(self.mem)], 0.25)))
            if np.isfinite(self.mem).any() else None,
            "n_mem_ge_0.25": int(np.sum(at_least(self.mem, 0.25))),
            "n_mem_estimated": int(np.isfinite(self.mem).sum()),
            # an SE of 0 (every trial agreed) is not certainty: the 95% interval says how wide it is
            "n_mem_se_zero": int(np.sum(self.mem_se[finite] == 0)),
            # estimated from a single trial on one side (n_in or n_out 1): an estimate without an SE, left out
            # of the SE statistics above; their 95% intervals are finite (and wide)
            "n_mem_se_undefined": int(np.sum(np.isfinite(self.mem) & ~finite)),
            "median_mem_ci_width": float(np.median(width[np.isfinite(width)])) if np.isfinite(width).any() else None,
            "n_pairs": len(self.pairs),
            **({"n_pairs_found": int(self.options["pairs_found"])} if "pairs_found" in self.options else {}),
            "min_n_in": int(self.n_in.min()), "min_n_out": int(self.n_out.min()),
        } | ({"infl_threshold": self.infl_threshold} if self.infl_threshold is not None else {}) | (
            {"n_pairs_negative": int(self.n_pairs_negative)} if self.n_pairs_negative is not None else {}) | (
            {"n_pairs_null_expected": float(self.n_pairs_null)} if self.n_pairs_null is not None else {}) | (
            {"pairs_false_share_est": self.pairs_false_share_est}
            if self.pairs_false_share_est is not None or self.n_pairs_negative is not None else {})

    @property
    def infl_threshold(self) -> float | None:
        """The influence threshold the kept pairs were selected with (None if not recorded)."""
        t = self.options.get("infl_threshold")
        return None if t is None else float(t)

    # ------------------------------------------------------------- files
    def save(self, directory: str | Path, storage_options: dict | None = None) -> Path | str:
        """Write memorization.parquet, influence_pairs.parquet, top-k, summary and the paper's format.

        ``directory`` is a local folder, a ``file://`` URL or any fsspec URL (``s3://``,
        ``memory://``, ...; ``storage_options`` go to fsspec). Returns the local folder as
        a Path, or the URL.

        The files are written into a temporary subfolder, then moved into place with
        ``summary.json`` removed first and moved in last: a save killed at any moment
        leaves either the previous scores or none (which :meth:`load` reports as
        missing), never old and new files mixed. Other files in the folder (e.g. a full
        influence matrix) are left alone.
        """
        import uuid

        from tailscope.store import STORE_DIR, owner_tag

        if str(directory).rstrip("/").rsplit("/", 1)[-1] == STORE_DIR:
            raise ValueError(f"{directory} is a study's trial store; scores go beside it, in the study's scores/ "
                             "folder (study.estimate() and `tailscope estimate` write there).")
        loc = _Location(directory, storage_options)
        if loc.fs.isfile(loc.path):
            raise ValueError(f"{directory} is a file; scores are saved into a folder (new or existing).")
        loc.makedirs()
        loc.remove_temporaries()  # of saves killed earlier
        write_id = uuid.uuid4().hex[:12]  # in every file: load refuses files of two saves
        tmp = _Location(loc.join(f"{_TMP_PREFIX}{owner_tag()}-{write_id}"), storage_options)
        tmp.makedirs()
        try:
            self._write_files(tmp, write_id, storage_options)
        except BaseException:  # interrupted or failed here: nothing of ours is left behind
            with contextlib.suppress(Exception):
                tmp.fs.rm(tmp.path, recursive=True)
            raise
        if loc.isfile(SUMMARY_FILE):
            loc.fs.rm(f"{loc.path}/{SUMMARY_FILE}")
        for name in (MEMORIZATION_FILE, PAIRS_FILE, TOPK_FILE, PAPER_FILE, SUMMARY_FILE):
            loc.fs.mv(f"{tmp.path}/{name}", f"{loc.path}/{name}")
        with contextlib.suppress(FileNotFoundError):  # object stores drop an emptied prefix by themselves
            loc.fs.rm(tmp.path, recursive=True)
        return loc.root

    def _write_files(self, tmp: _Location, write_id: str, storage_options: dict | None) -> None:
        """Every file of a save into ``tmp``, each marked with ``write_id``."""
        for name, frame in ((MEMORIZATION_FILE, self.memorization_frame()), (PAIRS_FILE, self.pairs.copy())):
            frame.attrs["write_id"] = write_id
            with tmp.open(name, "wb") as f:
                frame.to_parquet(f, index=False)
        arrays = {f.name: getattr(self, f.name) for f in fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        with tmp.open(TOPK_FILE, "wb") as f:
            np.savez_compressed(f, **arrays, write_id=np.array(write_id))
        meta = {"summary": self.summary(), "classes": self.classes, "trials": self.trials,
                "ratio": self.ratio, "se_bound": self.se_bound, "config": self.config, "options": self.options,
                "write_id": write_id}
        with tmp.open(SUMMARY_FILE, "wb") as f:
            f.write(json.dumps(meta, indent=2, default=str).encode())
        self.export_paper_format(tmp.join(PAPER_FILE), storage_options)

    def export_paper_format(self, path: str | Path, storage_options: dict | None = None) -> None:
        """The paper's published layout: tr_idx, tt_idx, infl and mem, one entry per kept pair (mem of the
        pair's training example), plus tr_mem: mem of every training example."""
        import fsspec

        if Path(str(path)).is_dir():
            raise ValueError(f"{path} is a folder; give the file to write, e.g. {Path(str(path)) / PAPER_FILE}.")
        tr = self.pairs["tr_idx"].to_numpy()
        with fsspec.open(_url(path), "wb", **(storage_options or {})) as f:
            # as the paper's files: one entry per pair, mem that of the pair's training example;
            # tr_mem holds every training example's (as in their influence-matrix file)
            np.savez(f, tr_idx=tr, tt_idx=self.pairs["tt_idx"].to_numpy(), infl=self.pairs["infl"].to_numpy(),
                     mem=self.mem[tr], tr_mem=self.mem)

    @classmethod
    def load(cls, directory: str | Path, storage_options: dict | None = None) -> Scores:
        """Read scores written by :meth:`save` from a local folder or an fsspec URL.

        Raises FileNotFoundError when there are none, and :class:`ScoresUnreadable` (a
        FileNotFoundError too, so callers that re-estimate on missing scores also do on
        damaged ones) when the files cannot be read or do not fit together.
        """
        loc = _Location(directory, storage_options)
        if not loc.isfile(SUMMARY_FILE):
            raise FileNotFoundError(f"no scores in {loc.root}; run `tailscope estimate` first.")
        try:
            with loc.open(SUMMARY_FILE, "rb") as f:
                meta = json.loads(f.read().decode())
            with loc.open(TOPK_FILE, "rb") as f, np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            with loc.open(PAIRS_FILE, "rb") as f:
                pairs = pd.read_parquet(f)
            with loc.open(MEMORIZATION_FILE, "rb") as f:
                mem_id = pd.read_parquet(f, columns=["index"]).attrs.get("write_id")
            npz_id = arrays.pop("write_id", None)
            found = (meta.get("write_id"), None if npz_id is None else str(npz_id), pairs.attrs.get("write_id"), mem_id)
            ids = {i for i in found if i is not None}  # files of older versions carry none
            if len(ids) > 1:
                raise ScoresUnreadable(f"the scores in {loc.root} mix files of two saves (e.g. two estimates "
                                       "saved at once); rerun `tailscope estimate` on the study to write them again.")
            recorded = meta.get("summary") or {}
            scores = cls(pairs=pairs, classes=meta["classes"], trials=meta["trials"], ratio=meta["ratio"],
                         se_bound=meta["se_bound"], config=meta["config"], options=meta.get("options", {}),
                         n_pairs_negative=recorded.get("n_pairs_negative"),
                         n_pairs_null=recorded.get("n_pairs_null_expected"), **arrays)
        except ScoresUnreadable:
            raise
        except Exception as e:  # truncated or missing files, a JSON cut short, files of another version
            raise ScoresUnreadable(f"the scores in {loc.root} cannot be read ({type(e).__name__}: {e}); rerun "
                                   f"`tailscope estimate` on the study to write them again.") from e
        # every trial either holds an example or not: counts that disagree are files of two estimates
        if not np.array_equal(scores.n_in + scores.n_out, np.full(len(scores.n_in), scores.trials)):
            raise ScoresUnreadable(f"the scores in {loc.root} mix files of different estimates (their trial "
                                   "counts disagree), e.g. after a save was interrupted; rerun "
                                   "`tailscope estimate` on the study to write them again.")
        return scores


def mem_interval(p_in, n_in, p_out, n_out, z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
    """Agresti-Caffo confidence interval for p_in - p_out (95% at the default ``z``).

    One success and one failure are added to each group: p~ = (n p + 1) / (n + 2), and the
    interval is (p~_in - p~_out) +- z sqrt(p~_in (1 - p~_in) / (n_in + 2) + p~_out (1 - p~_out)
    / (n_out + 2)), clipped to [-1, 1]. Unlike the plug-in SE it is never of width 0 when
    all outcomes agree, and its coverage stays near 95% for proportions near 0 or 1. For
    means of values in [0, 1] (soft scores) it is conservative: such a variable's variance
    is at most p (1 - p), and when the probabilities vary little it can be several times
    wider than soft +- 1.96 SE (which then covers well: read both). NaN where ``n_in`` or
    ``n_out`` is 0. The same interval is given for each kept influence pair
    (``infl_ci_low``, ``infl_ci_high``).
    """
    n_in, n_out = np.asarray(n_in, np.float64), np.asarray(n_out, np.float64)
    with np.errstate(invalid="ignore"):
        a = (np.asarray(p_in, np.float64) * n_in + 1) / (n_in + 2)
        b = (np.asarray(p_out, np.float64) * n_out + 1) / (n_out + 2)
        half = z * np.sqrt(a * (1 - a) / (n_in + 2) + b * (1 - b) / (n_out + 2))
    none = (n_in <= 0) | (n_out <= 0) | ~np.isfinite(half)
    lo = np.where(none, np.nan, np.clip(a - b - half, -1, 1))
    hi = np.where(none, np.nan, np.clip(a - b + half, -1, 1))
    return lo, hi


def _names(labels: np.ndarray, classes) -> np.ndarray:
    """Class names (object array) of integer labels; ids outside ``classes`` as their digits."""
    table = np.array([str(c) for c in classes], dtype=object)
    inside = (labels >= 0) & (labels < len(table))
    out = np.array([str(v) for v in labels], dtype=object) if not inside.all() else np.empty(len(labels), object)
    out[inside] = table[labels[inside]]
    return out


def with_label_names(pairs: pd.DataFrame, classes) -> pd.DataFrame:
    """``pairs`` with ``tr_label_name``/``tt_label_name`` beside its integer labels (added if missing)."""
    add = {f"{c}_name": _names(pairs[c].to_numpy(np.int64), classes) for c in ("tr_label", "tt_label")
           if c in pairs and f"{c}_name" not in pairs}
    if not add:
        return pairs
    out = pairs.assign(**add)
    out.attrs = dict(pairs.attrs)
    return out


def _age_s(fs, entry: dict) -> float:
    """Seconds since ``entry`` (an fsspec ls entry) was modified; 0 when the filesystem cannot say."""
    import time

    try:
        stamp = fs.modified(entry["name"])
    except Exception:  # folders on object stores, filesystems without modification times
        return 0.0
    return time.time() - stamp.timestamp()


class ScoresUnreadable(FileNotFoundError):
    """A scores folder whose files cannot be read or do not belong together."""


_TMP_PREFIX = ".saving-"


def scores_location(study_path: str | Path) -> Path | str:
    """Where a study's scores live: ``<study>/scores`` as a local Path, or a URL string."""
    from tailscope.store import child_location

    return child_location(study_path, "scores")


def _url(path: str | Path) -> str:
    """A local path or fsspec URL, with a URL that went through ``pathlib.Path`` repaired."""
    from tailscope.store import study_location

    return study_location(path)


class _Location:
    """A scores folder: a local directory (returned as a Path) or an fsspec URL (a str)."""

    def __init__(self, directory: str | Path, storage_options: dict | None = None):
        import fsspec

        from tailscope.store import local_path

        url = _url(directory)
        local = local_path(url)
        self.root: Path | str = local if local is not None else url
        self.fs, self.path = fsspec.core.url_to_fs(url, **(storage_options or {}))

    def join(self, name: str) -> str:
        return f"{self.root}/{name}" if isinstance(self.root, str) else str(self.root / name)

    def makedirs(self) -> None:
        self.fs.makedirs(self.path, exist_ok=True)

    def isfile(self, name: str) -> bool:
        return self.fs.isfile(f"{self.path}/{name}")

    def open(self, name: str, mode: str):
        return self.fs.open(f"{self.path}/{name}", mode)

    def remove_temporaries(self) -> None:
        """Delete temporary folders of saves that died: this host's dead processes, or older than a day."""
        from tailscope.store import left_by_dead_process

        try:
            entries = self.fs.ls(self.path, detail=True)
        except FileNotFoundError:  # an object-store prefix with nothing in it yet
            return
        for e in entries:
            name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith(_TMP_PREFIX):
                continue
            owner = name[len(_TMP_PREFIX):].rpartition("-")[0]  # ".saving-HOST-PID-WRITEID"
            if left_by_dead_process(owner) or _age_s(self.fs, e) > 86400:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(e["name"], recursive=True)


def _number(value, name: str) -> float:
    """``value`` as a float; a TypeError naming ``name`` for strings and other non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    if np.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN (which no value reaches).")
    return float(value)
