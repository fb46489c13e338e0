"""Check every done trial of a trial store, and optionally clear the ones that are bad.

A done trial is good when its chunks exist and decode, its mask is the design's
rebuild from the trial index, its seed is the design's seed for that trial, its
predicted labels lie in 0..C-1, its probabilities are finite and in [0, 1], and its
rows still match the checksum written with them (stores since per-trial digests; rows
written before them are checked without it).
``repair=True`` clears the done flags of bad trials (and deletes chunk files that
cannot be decoded, which hold no good data), so the next run redoes exactly those
trials; good rows are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailscope.design import Design
from tailscope.learners.base import Predictions
from tailscope.store import (
    DIGEST,
    DIGESTS_FROM_START,
    NO_DIGEST,
    ROW_ARRAYS,
    STORE_DIR,
    TRIAL_ARRAYS,
    StoreError,
    TrialStore,
    chunk_exists,
    chunk_key,
    row_digests,
)

PROB_TOL = 1e-4


@dataclass
class Problem:
    """One thing wrong with some trials (or, with ``trials`` empty, with the store itself)."""

    kind: str  # "unreadable chunk", "missing chunk", "mask", "seed", "nan", "prob range", "pred range",
    #            "blank", "digest", "store"
    array: str
    detail: str
    block: int | None = None
    trials: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        where = f"block {self.block} " if self.block is not None else ""
        who = f"trials {_ranges(self.trials)}: " if self.trials else ""
        return f"{where}{who}{self.array}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    """What :func:`verify_store` found.

    ``bad_trials`` are done trials that must be redone; ``store_problems`` are faults of
    the store as a whole (labels, array metadata) that clearing trials cannot fix.
    """

    path: str
    trials: int
    done: int
    checked: int
    problems: list[Problem] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    deleted_chunks: list[str] = field(default_factory=list)
    #: why ``repair`` changed nothing (damaged array metadata), else ""
    repair_refused: str = ""
    #: temporary files of writes killed midway (zarr's ``*.partial``, ``claims/*.tmp``), older than an
    #: hour: harmless litter, deleted by ``repair``
    stray_files: list[str] = field(default_factory=list)
    stray_deleted: bool = False

    @property
    def bad_trials(self) -> list[int]:
        return sorted({t for p in self.problems for t in p.trials})

    @property
    def store_problems(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "store"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"{self.path}: {self.checked} done trials checked of {self.trials}; "
                f"{len(self.bad_trials)} bad")
        lines = [head] + [f"  - {p}" for p in self.problems]
        if self.repaired:
            lines.append(f"  repaired: cleared the done flags of trials {_ranges(self.repaired)}; "
                         "rerun the study to redo them.")
        if self.deleted_chunks:
            lines.append(f"  deleted undecodable chunk files: {', '.join(self.deleted_chunks)}")
        if self.repair_refused:
            lines.append(f"  {self.repair_refused}")
        if self.stray_files:
            lines.append(f"  {len(self.stray_files)} temporary files of interrupted writes (harmless) "
                         + ("deleted" if self.stray_deleted else "found; --repair deletes them") + f": {', '.join(self.stray_files[:3])}"
                         + (" ..." if len(self.stray_files) > 3 else ""))
        if self.ok:
            lines.append("  every done trial is complete and consistent with the design.")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"path": self.path, "trials": self.trials, "done": self.done, "checked": self.checked,
                "ok": self.ok, "bad_trials": self.bad_trials, "repaired": self.repaired,
                "deleted_chunks": self.deleted_chunks, "repair_refused": self.repair_refused,
                "stray_files": self.stray_files,
                "problems": [{"kind": p.kind, "array": p.array, "block": p.block, "trials": p.trials,
                              "detail": p.detail} for p in self.problems]}


def verify_store(path: str | Path, repair: bool = False) -> VerifyReport:
    """Check every done trial of the study at ``path``; with ``repair``, clear the bad ones.

    Parameters
    ----------
    path : str or Path
        Study directory or URL (the store is ``path/trials.zarr``).
    repair : bool
        Clear the done flags of bad trials (and delete undecodable chunk files) so a
        rerun redoes them. Good trials are never changed.

    Returns
    -------
    VerifyReport

    Raises
    ------
    StoreError
        If the store cannot be opened at all (no study, damaged group metadata).
    """
    store = TrialStore.open(path, mode="r+" if repair else "r")
    cfg = store.config
    try:
        design = Design(**cfg["design"])
        n_classes = len(cfg["dataset"]["classes"])
        n, n_test = int(cfg["dataset"]["n_train"]), int(cfg["dataset"]["n_test"])
    except Exception as e:
        raise StoreError(f"the config stored at {store.path} is damaged ({e}); cannot verify.") from e
    report = VerifyReport(path=store.root, trials=store.trials, done=0, checked=0)
    problems = report.problems

    arrays = {}
    for name in (*TRIAL_ARRAYS, "y_train", "y_test"):
        try:
            arrays[name] = store.array(name)
        except StoreError as e:
            problems.append(Problem("store", name, f"array metadata unreadable: {e.__cause__ or e}"))
    if store.has_digests:
        try:
            arrays[DIGEST] = store.array(DIGEST)
        except StoreError as e:
            problems.append(Problem("store", DIGEST, f"array metadata unreadable: {e.__cause__ or e}"))
    if "done" not in arrays:
        return report
    _check_shapes(store, arrays, n, n_test, problems)
    for name, size in (("y_train", n), ("y_test", n_test)):
        if name in arrays:
            try:
                y = store.labels(name)  # (refuses missing chunks, which read as label 0)
                if len(y) != size or (len(y) and (y.min() < 0 or y.max() >= n_classes)):
                    problems.append(Problem("store", name, f"labels do not match the config "
                                            f"({len(y)} labels, expected {size} in 0..{n_classes - 1})"))
            except Exception as e:
                problems.append(Problem("store", name, f"unreadable: {type(e).__name__}: {e}"))

    bad: set[int] = set()
    to_delete: list[tuple[str, int]] = []
    for b in range(store.n_blocks):
        t = store.block_trials(b)
        rows = slice(int(t[0]), int(t[-1]) + 1)
        try:
            done = np.asarray(arrays["done"][rows], dtype=bool)
        except Exception as e:
            problems.append(Problem("unreadable chunk", "done", _short(e), b, t.tolist()))
            bad.update(t.tolist())
            to_delete.append(("done", b))
            continue
        tt = t[done]
        if not len(tt):
            continue
        report.done += len(tt)
        report.checked += len(tt)
        got, block_bad = {}, False
        for name in ("mask", "seed", *ROW_ARRAYS):
            if name not in arrays:  # its metadata is damaged: said above, and no trial is to blame
                continue
            arr = arrays[name]
            if not chunk_exists(arr, b):
                problems.append(Problem("missing chunk", name, "the chunk file of this block is gone "
                                        "(reads would silently return fill values)", b, tt.tolist()))
                block_bad = True
                continue
            try:
                got[name] = np.asarray(arr[rows])[done]
            except Exception as e:
                problems.append(Problem("unreadable chunk", name, _short(e), b, tt.tolist()))
                to_delete.append((name, b))
                block_bad = True
        if block_bad:
            bad.update(tt.tolist())
            continue
        bad.update(_check_rows(b, tt, got, design, n_classes, problems))
        bad.update(_check_digests(b, tt, rows, done, arrays.get(DIGEST), got, problems, to_delete,
                                  bool(store.group.attrs.get(DIGESTS_FROM_START))))

    unopened = [name for name in (*TRIAL_ARRAYS, "y_train", "y_test") if name not in arrays]
    if store.has_digests and DIGEST not in arrays:
        unopened.append(DIGEST)
    if repair and unopened:
        # clearing trials would not mend metadata, and every trial's chunks are still there
        report.repair_refused = (f"not repaired: the metadata of {', '.join(unopened)} "
                                 f"({', '.join(f'{STORE_DIR}/{a}/zarr.json' for a in unopened)}) is damaged, which "
                                 "no trial caused; restore those files from a copy (a new study with the same "
                                 "settings in another folder writes identical ones), then verify again. No done "
                                 "flag was cleared.")
        return report
    if repair and (bad or to_delete):
        # Done flags first, chunk files second: a repair killed in between leaves cleared
        # trials with chunks, never done trials without them.
        clear = sorted(bad)
        rewritten: set[int] = set()
        if clear:
            done_arr = arrays["done"]
            for b in sorted({t // store.block for t in clear}):
                t = store.block_trials(b)
                rows = slice(int(t[0]), int(t[-1]) + 1)
                with store._block_lock(b):  # a writer of this block must not put back the flags cleared here
                    try:
                        d = np.asarray(done_arr[rows], dtype=bool)
                    except Exception:  # undecodable flags: deleting them marks the block not done
                        key = _delete_chunk(done_arr, b)
                        if key:
                            report.deleted_chunks.append(key)
                        d = np.zeros(len(t), bool)
                    d[np.isin(t, clear)] = False
                    done_arr[rows] = d
                rewritten.add(b)
        for name, b in to_delete:
            if name == "done" and b in rewritten:
                continue  # just rewritten with the cleared flags
            key = _delete_chunk(arrays[name], b)
            if key:
                report.deleted_chunks.append(key)
        report.repaired = clear
    _stray_files(store, report, repair)
    return report


STRAY_AGE_S = 3600.0  # a temporary file this old belongs to no write still running


def _stray_files(store: TrialStore, report: VerifyReport, repair: bool) -> None:
    """Temporary files of killed writes in a local study folder (older than ``STRAY_AGE_S``)."""
    import time

    from tailscope.store import local_path

    root = local_path(store.root)
    if root is None:
        return
    now = time.time()
    found = [*(Path(root) / STORE_DIR).rglob("*.partial"), *(Path(root) / "claims").glob("*.tmp")]
    old = []
    for f in found:
        try:
            if now - f.stat().st_mtime > STRAY_AGE_S:
                old.append(f)
        except FileNotFoundError:
            continue
    report.stray_files = [str(f.relative_to(root)) for f in old]
    if repair and old:
        for f in old:
            f.unlink(missing_ok=True)
        report.stray_deleted = True


def _check_shapes(store: TrialStore, arrays: dict, n: int, n_test: int, problems: list) -> None:
    cap = -(-store.trials // store.block) * store.block
    want = {"mask": n, "train_pred": n, "train_prob": n, "test_pred": n_test, "test_prob": n_test}
    for name, arr in arrays.items():
        if name in ("y_train", "y_test"):
            continue
        if arr.shape[0] < cap or arr.chunks[0] != store.block:
            problems.append(Problem("store", name, f"shape {arr.shape} / chunks {arr.chunks} do not hold "
                                    f"{store.trials} trials in blocks of {store.block}"))
        if name in want and (arr.ndim != 2 or arr.shape[1] != want[name]):
            problems.append(Problem("store", name, f"shape {arr.shape}, expected (*, {want[name]})"))


def _check_rows(b: int, tt: np.ndarray, got: dict, design: Design, n_classes: int,
                problems: list) -> set[int]:
    bad: set[int] = set()

    def flag(kind: str, name: str, rows: np.ndarray, detail: str) -> None:
        if rows.any():
            ts = tt[rows].tolist()
            problems.append(Problem(kind, name, detail, b, ts))
            bad.update(ts)

    # (an array whose metadata cannot be opened is missing from ``got``: reported as a store problem)
    mask = got.get("mask")
    if mask is not None and mask.shape[1] == design.n:
        flag("mask", "mask", (mask != design.masks(tt)).any(axis=1),
             "differs from the design's subset for these trial indices")
    if "seed" in got:
        flag("seed", "seed", got["seed"] != design.trial_seeds(tt), "differs from the design's seed")
    for name in ("train_prob", "test_prob"):
        if name not in got:
            continue
        a = got[name]
        nan = ~np.isfinite(a).all(axis=1)
        flag("nan", name, nan, "NaN or infinite probabilities")
        with np.errstate(invalid="ignore"):
            out = ((a < -PROB_TOL) | (a > 1 + PROB_TOL)).any(axis=1) & ~nan
        flag("prob range", name, out, "probabilities outside [0, 1]")
    if all(name in got for name in ROW_ARRAYS):  # done, yet every row still holds the fill value 0
        blank = np.logical_and.reduce([(got[name] == 0).all(axis=1) for name in ROW_ARRAYS])
        flag("blank", "train_prob", blank, "marked done but its predictions are the fill value 0 everywhere "
             "(overwritten by another writer, or never written)")
    for name in ("train_pred", "test_pred"):
        if name not in got:
            continue
        a = got[name]
        flag("pred range", name, ((a < 0) | (a >= n_classes)).any(axis=1),
             f"predicted labels outside 0..{n_classes - 1}")
    return bad


def _check_digests(b: int, tt: np.ndarray, rows: slice, done: np.ndarray, arr, got: dict,
                   problems: list, to_delete: list, from_start: bool) -> set[int]:
    """Done trials whose rows no longer match the checksum written with them.

    Rows without a checksum (written before digests) are not checked here. In a store
    that had digests from its creation every done block has a digest chunk, so a missing
    one is damage. An undecodable digest chunk is reported and deleted by a repair (a
    partial rewrite of the block would have to read it first), and its trials are redone
    because nothing vouches for their rows.
    """
    if arr is None or not all(name in got for name in ("mask", "seed", *ROW_ARRAYS)):
        return set()
    if not chunk_exists(arr, b):
        if not from_start:  # a store made before digests: blocks of that time have none
            return set()
        problems.append(Problem("missing chunk", DIGEST, "the checksum chunk of this block is gone (this store "
                                "has had checksums from its creation)", b, tt.tolist()))
        return set(tt.tolist())
    try:
        stored = np.asarray(arr[rows])[done]
    except Exception as e:
        problems.append(Problem("unreadable chunk", DIGEST, _short(e), b, tt.tolist()))
        to_delete.append((DIGEST, b))
        return set(tt.tolist())
    has = stored != NO_DIGEST
    if not has.any():
        return set()
    preds = Predictions(**{name: got[name][has] for name in ROW_ARRAYS})
    now = row_digests(tt[has], got["seed"][has], got["mask"][has], preds)
    wrong = np.zeros(len(tt), bool)
    wrong[np.flatnonzero(has)] = now != stored[has]
    if not wrong.any():
        return set()
    ts = tt[wrong].tolist()
    problems.append(Problem("digest", DIGEST, "the trial's rows differ from the checksum written with them "
                            "(changed after writing: a chunk copied from another block or study, an edit, or "
                            "corruption on disk)", b, ts))
    return set(ts)


def _delete_chunk(arr, b: int) -> str | None:
    from zarr.core.sync import sync

    key = chunk_key(arr, b)
    try:
        sync(arr.store.delete(key))
    except Exception:
        return None
    return key


def _short(e: Exception) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) < 200 else s[:197] + "..."


def _ranges(ts) -> str:
    ts = sorted(int(t) for t in ts)
    out, start, prev = [], None, None
    for t in ts:
        if start is None:
            start = prev = t
        elif t == prev + 1:
            prev = t
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = t
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)
