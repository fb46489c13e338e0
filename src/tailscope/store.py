"""The trial store: one row per trial, written once, in a Zarr v3 group.

Layout (``<study>/trials.zarr``)::

    mask        (T, n)       bool     the subset the trial trained on
    seed        (T,)         int64    the learner seed of the trial
    train_pred  (T, n)       int16    predicted label of every training example
    train_prob  (T, n)       float32  probability of the true label
    test_pred   (T, n_test)  int16
    test_prob   (T, n_test)  float32
    digest      (T,)         int64    CRC-32 of the trial's index, seed, mask and predictions as
                                      written (-1: written by a version before digests)
    done        (T,)         bool     set only after every other row of the trial is written
    y_train, y_test                   labels, so estimation needs no dataset
    row_train, row_test               optional: each example's row in the user's data (a split
                                      tailscope made or read), carried into the scores
    attrs: config, config_hash, fingerprint, tailscope version, trials

The trial arrays are sized to whole blocks, so rows past the last trial (and rows of trials
not yet done) hold fill values: read them with ``iter_blocks`` (done trials only), or
filter with ``done()``.

Every array is chunked by ``block`` trials along its first axis, so a block of trials
lives in chunks that no other block touches: two writers never share a chunk.
Zarr's local store writes each chunk atomically (temporary file + rename), and the
``done`` chunk of a block is written last, so a block killed half-way never
counts as done.

Concurrency: any number of processes may write one store at once (different shards,
or the same blocks by mistake). Rows are indexed by trial and a trial's rows are a
pure function of the config, so a block written twice holds the same bytes and is
counted once (``done`` is a flag, not a counter). Creation never deletes arrays that
match the config, is serialized by a lock file on local filesystems, and is verified
after the attributes land. A block being trained has a small claim file
(``<study>/claims/block-NNNNNN.json``: host, pid, time) removed when it is done, so
``tailscope info`` can show blocks in flight; a claim left by a killed worker is stale
once its process is gone (same host) or it is older than ``CLAIM_STALE_S``.

A study path is a local directory, a ``file://`` URL (stored through the local store,
which writes atomically) or any fsspec URL (``s3://``, ``gs://``, ``memory://``) via
Zarr's FsspecStore; object stores write each chunk in one PUT, which is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import posixpath
import re
import socket
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from tailscope._version import __version__
from tailscope.learners.base import Predictions

ROW_ARRAYS = {
    "train_pred": ("n", "int16"),
    "train_prob": ("n", "float32"),
    "test_pred": ("n_test", "int16"),
    "test_prob": ("n_test", "float32"),
}


# Arrays with one chunk per block along the trial axis.
TRIAL_ARRAYS = ("mask", "seed", *ROW_ARRAYS, "done")
# Per-trial checksums (see row_digests); optional, as stores made before them lack the array.
DIGEST = "digest"
NO_DIGEST = -1
# store attribute: the digest array was made with the store, so every done block has a chunk of it
DIGESTS_FROM_START = "digests_from_start"

# OSErrors of the disk or its permissions: a write that failed for them damaged nothing
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

# A claim older than this (seconds) is stale even if its process cannot be checked.
CLAIM_STALE_S = 6 * 3600.0
# A creation lock older than this (seconds) was left by a killed process.
LOCK_STALE_S = 120.0
EMPTY_LOCK_STALE_S = 5.0  # a live creator writes its host and pid into the lock within microseconds


class StoreError(RuntimeError):
    """A store that cannot be used as asked; the message says why and what to do."""


# Config keys that do not change what the trials are: a study can grow (trials) and its
# data can be reloaded from another path (source) without changing identity.
VOLATILE_KEYS = ("trials", "source")
STORE_DIR = "trials.zarr"  # the store inside a study folder
ROW_NUMBERS = {"train": "row_train", "test": "row_test"}  # arrays of the examples' rows in the user's data


def config_hash(config: dict) -> str:
    """Hash of the config without its volatile keys."""
    core = {k: v for k, v in config.items() if k not in VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """One line per setting that differs (``learner.lr: stored 0.1, requested 0.05``); a learner
    of another kind or model is one line, not a line for each of its parameters."""
    out = []
    for k in sorted(set(a) | set(b)):
        if k in VOLATILE_KEYS and not prefix:
            continue
        va, vb = a.get(k), b.get(k)
        if k == "learner" and not prefix and isinstance(va, dict) and isinstance(vb, dict) and \
                learner_label(va) != learner_label(vb):
            out.append(f"learner: stored {learner_label(va)}, requested {learner_label(vb)}")
        elif isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: stored {va!r}, requested {vb!r}" + DIFF_NOTES.get(f"{prefix}{k}", ""))
    return out


# what a digest's difference means (the digests themselves say nothing to a reader)
DIFF_NOTES = {
    "dataset.fingerprint": " (the data differ: another or edited file, or other loader options such as split_seed "
                           "or drop; `tailscope info` shows the stored dataset source and options. Tables: a column "
                           "named Split in any case is read as the split since 2026-11-29; split_key=None keeps it "
                           "a feature)",
    "learner.model_source": " (the model factory's code changed)",
    "learner.model_structure": " (the model factory builds another network: its layers or parameter shapes "
                               "differ, e.g. a global width or default argument changed)",
}


def learner_label(spec: dict, sep: str = " ") -> str:
    """What a learner is, from its spec, as opposed to its settings: "torch_population mlp",
    "sklearn sklearn.linear_model...LogisticRegression", "callable const"."""
    kind = spec.get("learner") or spec.get("kind") or "learner"
    what = spec.get("model") or spec.get("estimator") or spec.get("name")
    return f"{kind}{sep}{what}" if what else str(kind)


@dataclass
class Block:
    """The done trials of one block, as read back from the store."""

    trials: np.ndarray
    mask: np.ndarray
    seed: np.ndarray
    preds: Predictions


class TrialStore:
    """Open with :meth:`create` (new or matching existing) or :meth:`open` (existing)."""

    def __init__(self, group: zarr.Group, path: str):
        self.group = group
        self.path = path
        self.config: dict = dict(group.attrs["config"])
        self.block: int = int(self.config["block_size"])
        self._arrays: dict[str, zarr.Array] = {}
        self._whole: set[tuple[int, str]] = set()  # (block, array) whose chunk file was seen to exist

    def array(self, name: str) -> zarr.Array:
        """A cached handle (looking an array up reads its metadata from storage each time)."""
        if name not in self._arrays:
            try:
                arr = self.group[name]
            except Exception as e:
                raise StoreError(f"array {name!r} of the store at {self.path} cannot be opened ({e}); "
                                 "its metadata is missing or damaged. Run `tailscope verify` on the "
                                 "study, or move it aside and start again.") from e
            # Store every written chunk even when it equals the fill value, so that a
            # missing chunk of a done block always means damage (see verify).
            self._arrays[name] = arr.with_config({"write_empty_chunks": True})
        return self._arrays[name]

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, config: dict, y_train: np.ndarray, y_test: np.ndarray,
               rows: dict | None = None) -> TrialStore:
        """Create the store for ``config``, or reopen it if it exists with the same config.

        Growing ``config["trials"]`` extends the arrays; earlier trials are untouched.
        A store made with another config or dataset is refused before anything changes.
        ``rows`` (``{"train": ..., "test": ...}``, optional) are the examples' rows in the
        user's data, kept beside the labels for the scores.
        """
        url = _store_url(path)
        existing = _try_open(url, mode="r")
        if existing is not None and not _needs_growth(existing, config) and _same_study(existing, config):
            return cls(existing, url)
        with _creation_lock(url):
            # Another process may have created or grown the store while we waited.
            existing = _try_open(url, mode="r")
            if existing is not None:
                store = cls(existing, url)
                if not _same_study(existing, config):
                    if not store._replaceable():
                        store._check_same(config)  # raises, naming the differences
                    warnings.warn(f"the store at {url} holds no done trial (an earlier run failed before "
                                  "finishing a block); its config is replaced by this one:\n  "
                                  + "\n  ".join(config_diff(store.config, config)), stacklevel=3)
                    _create_arrays(url, config, y_train, y_test, rows)
                    return cls(zarr.open_group(url, mode="r+"), url)
                if config["trials"] > store.trials:
                    store = cls(zarr.open_group(url, mode="r+"), url)
                    store._grow(int(config["trials"]))
                return store
            _create_arrays(url, config, y_train, y_test, rows)
        # Create-then-verify: the attributes that landed must be ours.
        group = _try_open(url, mode="r+")
        if group is None or group.attrs.get("config_hash") != config_hash(config):
            raise StoreError(f"another process created the store at {url} with a different config "
                             "at the same time; use another output directory.")
        return cls(group, url)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> TrialStore:
        url = _store_url(path)
        group = _try_open(url, mode=mode)
        if group is None:
            raise StoreError(f"no tailscope study at {path}; create one with `tailscope run` or ts.Study(...).run().")
        return cls(group, url)

    def _replaceable(self) -> bool:
        """No trial done and no block being trained now: a failed first run left nothing to keep."""
        try:
            if self.done().any():
                return False
        except StoreError:
            return False
        return all(c["stale"] for c in self.claims())

    def holds(self, config: dict) -> bool:
        """Whether this store holds ``config``'s study (also one recorded before a later config key)."""
        return _same_study(self.group, config)

    def check_study(self, config: dict) -> None:
        """Raise a StoreError naming the differences unless this store holds ``config``'s study."""
        if not self.holds(config):
            self._check_same(config)

    def _check_same(self, config: dict) -> None:
        if self.group.attrs.get("config_hash") == config_hash(config):
            return
        diffs = config_diff(self.config, config)
        raise StoreError(
            f"the store at {self.path} was made by a different study config:\n  " + "\n  ".join(diffs)
            + "\nUse another output directory, or rerun with the stored settings; nothing was changed.")

    def add_digests(self) -> None:
        """Give a store made before per-trial checksums its digest array (earlier rows: NO_DIGEST).

        Called before trials are written (Study.run), never by readers: opening an old store
        to estimate or report must not write to it (it may be read-only).
        """
        if self.has_digests:
            return
        with _creation_lock(self.path):
            group = zarr.open_group(self.path, mode="r+")
            if DIGEST not in group:
                done = group["done"]
                _ensure_array(group, DIGEST, (done.shape[0],), (self.block,), "int64", NO_DIGEST)

    def _grow(self, trials: int) -> None:
        cap = _capacity(trials, self.block)
        for name in ("mask", "seed", "done", *ROW_ARRAYS, *([DIGEST] if self.has_digests else [])):
            arr = self.array(name)
            if arr.shape[0] < cap:
                arr.resize((cap, *arr.shape[1:]))
        self.config["trials"] = trials
        self.group.attrs.update({"config": self.config, "trials": trials})

    # ----------------------------------------------------------------- facts
    @property
    def has_digests(self) -> bool:
        """Whether this store records per-trial checksums (stores made before them do not)."""
        if DIGEST in self._arrays:
            return True
        try:
            return DIGEST in self.group
        except Exception:
            return False

    @property
    def trials(self) -> int:
        return int(self.group.attrs["trials"])

    @property
    def n_blocks(self) -> int:
        return -(-self.trials // self.block)

    def rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each train and test example's row in the user's data, where recorded (None: not
        recorded, as in stores made before this, or unreadable)."""
        try:
            found = [np.asarray(self.group[name][:], dtype=np.int64) for name in ROW_NUMBERS.values()]
        except Exception:
            return None
        return (found[0], found[1]) if len(found[0]) == len(self.y_train) and len(found[1]) == len(self.y_test) \
            else None

    @property
    def y_train(self) -> np.ndarray:
        return self.labels("y_train")

    @property
    def y_test(self) -> np.ndarray:
        return self.labels("y_test")

    def labels(self, name: str) -> np.ndarray:
        """The stored labels ``y_train`` or ``y_test``, refused if a chunk file of them is gone
        (zarr would read those labels as 0 and every estimate would silently change)."""
        arr = self.array(name)
        n_chunks = -(-arr.shape[0] // arr.chunks[0]) if arr.shape[0] else 0
        gone = [c for c in range(n_chunks) if not chunk_exists(arr, c)]
        if gone:
            raise StoreError(f"the {name} labels of the store at {self.path} are missing chunk files "
                             f"({', '.join(chunk_key(arr, c) for c in gone[:3])}); the store is damaged and its "
                             "trials cannot be scored. Restore the study folder from a copy, or run the study "
                             "again in a new folder.")
        return arr[:]

    def done(self) -> np.ndarray:
        """Bool (trials,): which trials are completely written."""
        try:
            return self.array("done")[: self.trials]
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"the done flags of the store at {self.path} cannot be read ({type(e).__name__}: "
                             f"{e}); run `tailscope verify {self.root} --repair` to find the damaged "
                             "block and clear it, then rerun the study.") from e

    def done_of(self, trials: np.ndarray) -> np.ndarray:
        """Bool (len(trials),): which of ``trials`` are done (reads only their chunks)."""
        trials = np.asarray(trials, dtype=np.int64)
        if not len(trials):
            return np.zeros(0, bool)
        with self._chunk_errors(int(trials[0]) // self.block):
            return np.asarray(self.array("done").oindex[trials], dtype=bool)

    def block_trials(self, b: int) -> np.ndarray:
        return np.arange(b * self.block, min((b + 1) * self.block, self.trials))

    def missing(self) -> dict[int, np.ndarray]:
        """Block index -> trial indices of that block not yet done."""
        done = self.done()
        out = {}
        for b in range(self.n_blocks):
            t = self.block_trials(b)
            t = t[~done[t]]
            if len(t):
                out[b] = t
        return out

    # ----------------------------------------------------------------- writing
    def write(self, trials: np.ndarray, masks: np.ndarray, seeds: np.ndarray, preds: Predictions,
              config_hash: str | None = None) -> int:
        """Write trials (all in one block), then mark them done; returns how many were written.

        Trials already done (another writer got there first, or a retried task) are
        skipped, so a trial is counted once however many times it is trained. Rewriting
        them would be harmless too: their rows are a pure function of the config.
        ``config_hash`` is the config the rows were made for (default: the one this
        handle opened); the write is refused if the store holds another one now.
        """
        trials = np.asarray(trials)
        blocks = np.unique(trials // self.block)
        if len(blocks) != 1:
            raise ValueError(f"write() takes trials of one block, got blocks {blocks.tolist()}.")
        # the store's own sizes: rows of another shape or labels out of range never land
        classes = self.config.get("dataset", {}).get("classes")
        preds.check(len(trials), self.array("train_pred").shape[1], self.array("test_pred").shape[1],
                    len(classes) if classes else 2**15)
        b = int(blocks[0])
        self.check_identity(config_hash)
        with self._block_lock(b), self._chunk_errors(b):
            already = self.done_of(trials)
            if already.all():
                return 0
            if already.any():
                keep = ~already
                trials, masks, seeds = trials[keep], masks[keep], seeds[keep]
                preds = Predictions(*(getattr(preds, f)[keep] for f in
                                      ("train_pred", "train_prob", "test_pred", "test_prob")))
            sel = _as_selection(trials)
            self.array("mask")[sel] = masks
            self.array("seed")[sel] = seeds
            for name in ROW_ARRAYS:
                self.array(name)[sel] = getattr(preds, name)
            if self.has_digests:
                self.array(DIGEST)[sel] = row_digests(trials, seeds, masks, preds)
            self.array("done")[sel] = True  # last: a block killed before this never counts
        return len(trials)

    def check_identity(self, config_hash: str | None = None) -> None:
        """Refuse to go on if the store's config is not ``config_hash`` (default: as opened here).

        A store with no done trial may get a new config (see :meth:`create`); a process
        still running the old one must not land its rows in it.
        """
        expected = config_hash or self.group.attrs.get("config_hash")
        now = _try_open(self.path, mode="r")
        if now is not None and now.attrs.get("config_hash") != expected:
            raise StoreError(f"the store at {self.path} was given another config by another run while this "
                             "one was training; this run's trials are not written. Rerun with that config, "
                             "or use another output directory.")

    @contextlib.contextmanager
    def _block_lock(self, b: int):
        """Exclusive access to block ``b``'s chunks while its rows and done flags are written.

        Two runs of one study with different trial counts can both write the block that is
        partial for one of them: writing part of a chunk reads, changes and rewrites it, so
        without the lock one run's rows could be overwritten with fill values after its done
        flags were set. A local (or network) filesystem gets an OS file lock in the claims
        folder; object stores have none, so there every run of a study should ask for the
        same number of trials.
        """
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            fcntl = None
        if fcntl is None or is_remote(self.path):
            yield
            return
        folder = Path(self.root) / "claims"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f"block-{b:06d}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:  # no lock file possible here (read-only folder): the write itself will say why
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:  # a filesystem without flock (Lustre without -o flock, some FUSE/SMB mounts)
                warn_once("flock", f"the filesystem of {self.root} does not support file locks ({e.strerror}); "
                                    "blocks are written without them, so give every concurrent run of this study "
                                    "the same number of trials.")
            yield
        finally:
            os.close(fd)  # (closing releases the lock)

    @contextlib.contextmanager
    def _chunk_errors(self, b: int):
        """Turn a damaged chunk into a StoreError that names the block and the fix."""
        try:
            yield
        except StoreError:
            raise
        except OSError as e:
            if e.errno not in DISK_ERRNOS:
                raise self._damaged(b, e) from e
            t = self.block_trials(b)  # the disk or its permissions, not the store
            raise StoreError(f"block {b} (trials {t[0]}..{t[-1]}) of the store at {self.path} could not be "
                             f"read or written: {e.strerror} ({e.filename or self.path}). Nothing already stored "
                             "is lost: free space or fix permissions, then run the same command to resume.") from e
        except Exception as e:
            raise self._damaged(b, e) from e

    def _damaged(self, b: int, e: Exception) -> StoreError:
        t = self.block_trials(b)
        return StoreError(
                f"block {b} (trials {t[0]}..{t[-1]}) of the store at {self.path} cannot be read or "
                f"written: {type(e).__name__}: {e}. A chunk file is damaged; run `tailscope verify "
                f"{self.root} --repair`, then rerun the study to redo those trials.")

    # ----------------------------------------------------------------- claims
    @property
    def root(self) -> str:
        """The study directory or URL (the store lives in ``root/trials.zarr``)."""
        return self.path[: -len("/trials.zarr")] if self.path.endswith("/trials.zarr") else \
            str(Path(self.path).parent)

    def _claims_fs(self):
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.root)
        return fs, root.rstrip("/") + "/claims"

    def claim(self, b: int, **extra) -> str:
        """Record that block ``b`` is being trained here; returns a token for :meth:`release`."""
        token = uuid.uuid4().hex
        body = json.dumps({"block": int(b), "token": token, **_whoami(), **extra}).encode()
        fs, d = self._claims_fs()
        name = f"{d}/block-{int(b):06d}.json"
        local = local_path(self.root)
        try:
            if local is not None:  # atomic: temp file + rename
                os.makedirs(d, exist_ok=True)
                tmp = f"{name}.{token}.tmp"
                with open(tmp, "wb") as f:
                    f.write(body)
                os.replace(tmp, name)
            else:
                fs.pipe_file(name, body)  # one PUT: atomic on object stores
        except OSError:
            pass  # claims are advisory: never fail a block for them
        return token

    def release(self, b: int, token: str | None = None) -> None:
        """Remove the claim of block ``b`` (only ours, if ``token`` is given)."""
        fs, d = self._claims_fs()
        name = f"{d}/block-{int(b):06d}.json"
        try:
            if token is not None and json.loads(fs.cat_file(name)).get("token") != token:
                return
            fs.rm_file(name)
        except (OSError, ValueError):
            pass

    def claims(self) -> list[dict]:
        """Every claim file, each with ``stale`` set (process gone or older than CLAIM_STALE_S)."""
        fs, d = self._claims_fs()
        try:
            names = [n for n in fs.ls(d, detail=False) if str(n).endswith(".json")]
        except (FileNotFoundError, OSError):
            return []
        out, host, now = [], socket.gethostname(), time.time()
        for n in sorted(names):
            try:
                c = json.loads(fs.cat_file(n))
            except (OSError, ValueError):
                continue
            stale = now - float(c.get("time", 0)) > CLAIM_STALE_S
            if c.get("host") == host and not pid_alive(int(c.get("pid", -1))):
                stale = True
            c["stale"] = stale
            c["age_s"] = round(now - float(c.get("time", now)), 1)
            out.append(c)
        return out

    def block_status(self) -> dict:
        """Blocks done, missing, in flight (fresh claim) and stale claims, for ``tailscope info``."""
        done = self.done()
        full, partial, missing = [], [], []
        for b in range(self.n_blocks):
            d = done[self.block_trials(b)]
            (full if d.all() else partial if d.any() else missing).append(b)
        claims = [c for c in self.claims() if c.get("block", -1) not in full]
        return {"blocks": self.n_blocks, "done_blocks": len(full),
                "partial_blocks": partial, "missing_blocks": sorted(partial + missing),
                "in_flight_blocks": sorted({int(c["block"]) for c in claims if not c["stale"]}),
                "stale_claims": [{k: c.get(k) for k in ("block", "host", "pid", "age_s")}
                                 for c in claims if c["stale"]]}

    # ----------------------------------------------------------------- reading
    def read_block(self, b: int, fields: tuple[str, ...] | None = None,
                   done: np.ndarray | None = None) -> Block | None:
        """The done trials of block ``b`` (None if none are done).

        ``fields`` limits which prediction arrays are read (the others come back empty),
        so a pass that needs only test predictions does not decompress the rest.
        ``done`` (a snapshot of :meth:`done`) says which trials count instead of the
        flags stored now.
        """
        t = self.block_trials(b)
        if done is not None:
            t = t[t < len(done)]
            if not len(t):
                return None
        with self._chunk_errors(b):
            done = self.array("done")[t[0]: t[-1] + 1] if done is None else done[t[0]: t[-1] + 1]
            if not done.any():
                return None
            rows = slice(t[0], t[-1] + 1)
            keep = np.flatnonzero(done)
            wanted = ("mask", "seed", *(ROW_ARRAYS if fields is None else fields))
            self._require_chunks(b, wanted)
            arrays = {name: self.array(name)[rows][keep] if name in wanted else np.zeros((len(keep), 0))
                      for name in ("mask", "seed", *ROW_ARRAYS)}
        return Block(trials=t[keep], mask=arrays.pop("mask"), seed=arrays.pop("seed"),
                     preds=Predictions(**arrays))

    def _require_chunks(self, b: int, names: tuple[str, ...]) -> None:
        """Refuse a done block whose chunk file of any of ``names`` is gone.

        zarr reads a missing chunk as its fill value (zeros), which would enter the
        estimates as real predictions; every written chunk is stored (see :meth:`array`),
        so a missing one of a done block is damage.
        """
        # checked once per block and array per handle: estimates read every block once per tile pass
        todo = [name for name in names if (b, name) not in self._whole]
        gone = [name for name in todo if not chunk_exists(self.array(name), b)]
        self._whole.update((b, name) for name in todo if name not in gone)
        if gone:
            t = self.block_trials(b)
            raise StoreError(
                f"block {b} (trials {t[0]}..{t[-1]}) of the store at {self.path} is marked done but the "
                f"chunk files of {', '.join(gone)} are missing (deleted or never synced). Run "
                f"`tailscope verify {self.root} --repair` to clear those trials, then rerun the study "
                "to redo them.")

    def iter_blocks(self, fields: tuple[str, ...] | None = None, first_trials: int | None = None,
                    done: np.ndarray | None = None) -> Iterator[Block]:
        """Done trials block by block (only the blocks of the first ``first_trials``): memory stays at one block.

        ``done``: a snapshot of :meth:`done` taken once, so that several passes over the
        store read the same trials while other processes finish, grow or repair it.
        """
        total = self.trials if done is None else len(done)
        if first_trials is not None:
            total = min(total, int(first_trials))
        for b in range(-(-total // self.block)):
            blk = self.read_block(b, fields, done)
            if blk is not None:
                yield blk


# Config keys added by later versions: a store recorded without them is the same study
LATER_KEYS = (("learner", "model_source"), ("learner", "hard"), ("learner", "model_structure"))


def stable_spec(spec: dict) -> dict:
    """A learner spec without the keys later versions added (see LATER_KEYS): for digests and
    comparisons that must stay what they were when an analysis first stored its results."""
    later = {key for section, key in LATER_KEYS if section == "learner"}
    return {k: v for k, v in spec.items() if k not in later}


def _same_study(group: zarr.Group, config: dict) -> bool:
    """Whether the store ``group`` holds ``config``'s study (also when made before a config key was
    recorded, or with the same model factory run from a script as ``__main__``)."""
    if group.attrs.get("config_hash") == config_hash(config):
        return True
    stored = dict(group.attrs["config"])
    return _same_but_newer(stored, config) or _same_but_newer(stored, _as_stored_main(stored, config))


def _as_stored_main(stored: dict, config: dict) -> dict:
    """``config`` with its model factory named as the stored one when the two differ only by the module
    (``__main__.Net`` when the study's script ran, ``probe.Net`` when a notebook imports it) and their
    code and structure digests agree: the same network."""
    a, b = stored.get("learner") or {}, config.get("learner") or {}
    ma, mb = str(a.get("model", "")), str(b.get("model", ""))
    if ma == mb or "__main__" not in (ma.split(".", 1)[0], mb.split(".", 1)[0]):
        return config
    if ma.split(".", 1)[-1] != mb.split(".", 1)[-1] or not a.get("model_source") \
            or a.get("model_source") != b.get("model_source"):
        return config
    if a.get("model_structure") and b.get("model_structure") and a["model_structure"] != b["model_structure"]:
        return config
    return {**config, "learner": {**b, "model": ma}}


def _same_but_newer(stored: dict, config: dict) -> bool:
    """Whether ``config`` equals ``stored`` once keys it records but ``stored`` predates are dropped."""
    newer = json.loads(json.dumps(config, default=str))
    for section, key in LATER_KEYS:
        if key in newer.get(section, {}) and key not in stored.get(section, {}):
            del newer[section][key]
    return config_hash(newer) == config_hash(stored)


def chunk_key(arr: zarr.Array, b: int) -> str:
    """The store key of block ``b``'s chunk of a row array (one chunk per block)."""
    key = arr.metadata.encode_chunk_key((b,) + (0,) * (arr.ndim - 1))
    base = arr.store_path.path
    return f"{base}/{key}" if base else key


def chunk_exists(arr: zarr.Array, b: int) -> bool:
    """Whether block ``b``'s chunk file of ``arr`` exists (True where the store cannot tell)."""
    from zarr.core.sync import sync

    try:
        return bool(sync(arr.store.exists(chunk_key(arr, b))))
    except Exception:
        return True  # a store that cannot tell: rely on the reads


def _needs_growth(group: zarr.Group, config: dict) -> bool:
    return int(config.get("trials", 0)) > int(group.attrs.get("trials", 0))


def _create_arrays(url: str, config: dict, y_train: np.ndarray, y_test: np.ndarray,
                   rows: dict | None = None) -> None:
    """Create the arrays of a new store, then its attrs (last).

    Never deletes: ``mode="a"`` keeps whatever is there, an array that already exists
    with the right shape, chunks and dtype is kept (another process creating the same
    study at the same time writes identical metadata), and only an array left with
    other metadata by an interrupted creation is replaced -- and only if no trial of
    the store is done.
    """
    group = zarr.open_group(url, mode="a")
    if "done" in group:
        try:
            any_done = bool(np.asarray(group["done"][:]).any())
        except Exception:  # unreadable: treat as holding trials
            any_done = True
        if any_done:
            raise StoreError(f"the store at {url} holds done trials but its attributes are missing "
                             "(the group's zarr.json was damaged or replaced); refusing to overwrite it. "
                             "Restore zarr.json from a backup, or move the store aside.")
    T, B = int(config["trials"]), int(config["block_size"])
    cap = _capacity(T, B)
    n, n_test = len(y_train), len(y_test)
    sizes = {"n": n, "n_test": n_test}
    specs = {"mask": ((cap, n), (B, n), "bool", False), "seed": ((cap,), (B,), "int64", -1)}
    for name, (dim, dtype) in ROW_ARRAYS.items():
        specs[name] = ((cap, sizes[dim]), (B, sizes[dim]), dtype, 0)
    specs[DIGEST] = ((cap,), (B,), "int64", NO_DIGEST)
    specs["done"] = ((cap,), (B,), "bool", False)
    for name, (shape, chunks, dtype, fill) in specs.items():
        _ensure_array(group, name, shape, chunks, dtype, fill)
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        y = np.asarray(y, dtype=np.int64)
        arr = _ensure_array(group, name, y.shape, y.shape, "int64", 0)
        arr[...] = y  # identical bytes if another creator wrote them already
    for split, name in ROW_NUMBERS.items():
        r = None if rows is None else rows.get(split)
        n_split = n if split == "train" else n_test
        if r is not None and len(r) == n_split:
            arr = _ensure_array(group, name, (n_split,), (max(n_split, 1),), "int64", -1)
            arr[...] = np.asarray(r, dtype=np.int64)
        elif name in group:  # left by the study this store replaces: not this data's rows
            del group[name]
    # attrs last: a store without them is treated as not created (see _try_open).
    group.attrs.update({"config": config, "config_hash": config_hash(config),
                        "fingerprint": config["dataset"]["fingerprint"],
                        "tailscope_version": __version__, "trials": T, DIGESTS_FROM_START: True})


def _ensure_array(group: zarr.Group, name: str, shape, chunks, dtype, fill) -> zarr.Array:
    if name in group:
        try:
            arr = group[name]
            if (tuple(arr.shape) == tuple(shape) and tuple(arr.chunks) == tuple(chunks)
                    and np.dtype(arr.dtype) == np.dtype(dtype)):
                # every written chunk is stored, also one of zeros (a missing chunk means damage)
                return arr.with_config({"write_empty_chunks": True})
        except Exception:
            pass
    try:
        return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                                  overwrite=True, config={"write_empty_chunks": True})
    except Exception as e:
        raise StoreError(f"cannot create array {name!r} in the store at {group.store_path}: {e}") from e


@contextlib.contextmanager
def _creation_lock(url: str, timeout: float = 300.0):
    """Serialize creation and growth of a local store across processes.

    A lock file ``trials.zarr.lock`` created with O_EXCL in the study folder (works on local
    disks and on NFS v3+); a lock whose process is gone (same host), older than
    ``LOCK_STALE_S``, or still empty after ``EMPTY_LOCK_STALE_S`` was left by a killed
    process and is broken. Waiting longer than a few seconds is said in a warning. Remote stores get no lock: concurrent creation with the same config writes
    identical bytes, and create-then-verify catches a different config.
    """
    local = local_path(url)
    if local is None:
        yield
        return
    lock = local / f"{STORE_DIR}.lock"  # inside the study folder: a read-only parent is no obstacle
    local.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                age = time.time() - lock.stat().st_mtime
                owner = json.loads(lock.read_text() or "{}")
            except FileNotFoundError:
                continue
            except ValueError:  # being written right now
                owner = {}
            dead = (owner.get("host") == socket.gethostname()
                    and not pid_alive(int(owner.get("pid", -1))))
            # empty for more than a few seconds: its creator was killed between creating and writing it
            unowned = not owner and age > EMPTY_LOCK_STALE_S
            if age > LOCK_STALE_S or dead or unowned:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            if time.monotonic() > deadline:
                raise StoreError(f"timed out waiting for the creation lock {lock}; if no other "
                                 "tailscope process is creating this study, delete that file.") from None
            if not said and age > 5:
                said = True
                who = f"{owner.get('host')} pid {owner.get('pid')}" if owner else "an unknown process"
                warnings.warn(f"waiting for the creation lock {lock}, held by {who} for {age:.0f} s (it is broken "
                              f"after {LOCK_STALE_S:.0f} s, or at once if that process is gone from this host).",
                              stacklevel=4)
            time.sleep(0.05)
            continue
        try:
            os.write(fd, json.dumps(_whoami()).encode())
        finally:
            os.close(fd)
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


_WARNED: set[str] = set()


def warn_once(key: str, message: str, category: type[Warning] = UserWarning) -> None:
    """A warning said once per process for ``key``."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, category, stacklevel=3)


def _whoami() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def owner_tag() -> str:
    """``host-pid`` of this process, in names of temporary files that a later run may clean up."""
    return f"{socket.gethostname()}-{os.getpid()}"


def left_by_dead_process(tag: str) -> bool:
    """Whether ``tag`` (an :func:`owner_tag`) names a process of this host that no longer runs."""
    host, _, pid = tag.rpartition("-")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (True when it cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return not ok or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


# ------------------------------------------------------------------ locations
_MANGLED_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)(.*)$")


def study_location(path: str | Path) -> str:
    """The study root as a local path or an fsspec URL.

    ``file://`` URLs become local paths (the local store writes chunks atomically,
    fsspec's local filesystem does not), and a URL that went through ``pathlib.Path``
    (``s3:/bucket/x``, as the CLI's Path options produce) gets its ``//`` back.
    """
    s = str(path)
    m = _MANGLED_URL.match(s)
    if m and "://" not in s:
        s = f"{m.group(1)}://{m.group(2)}" if m.group(1) != "file" else f"file:///{m.group(2)}"
    if s.startswith("file://"):
        s = s[len("file://"):]
    if "://" in s:
        return _without_store_dir(s.rstrip("/"))
    return _without_store_dir(str(Path(s).expanduser()))


def _without_store_dir(loc: str) -> str:
    """The study folder for a path to its ``trials.zarr`` (scores, reports and analyses go
    next to the store, never inside it)."""
    for sep in {"/", os.sep}:
        if loc.endswith(sep + STORE_DIR):
            return loc[: -len(sep + STORE_DIR)]
    return loc


def local_path(path: str | Path) -> Path | None:
    """The local directory of a study path or ``file://`` URL; None for remote URLs."""
    loc = study_location(path)
    return None if "://" in loc else Path(loc)


def is_remote(path: str | Path) -> bool:
    return local_path(path) is None


def child_location(path: str | Path, *parts: str) -> Path | str:
    """``path/part/...``: a local Path, or a URL string when ``path`` is an fsspec URL.

    (``Path(url) / part`` would turn ``s3://b/x`` into a local ``s3:/b/x`` folder.)
    """
    loc = study_location(path)
    return "/".join([loc, *parts]) if "://" in loc else Path(loc, *parts)


def put_dir(local_dir: str | Path, url: str) -> None:
    """Copy a local folder's contents to ``url`` (an fsspec URL), replacing files of the same names."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    for f in sorted(Path(local_dir).rglob("*")):
        if f.is_file():
            target = root + "/" + f.relative_to(local_dir).as_posix()
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            fs.put_file(str(f), target)


def get_dir(url: str, local_dir: str | Path) -> None:
    """Copy every file under ``url`` (an fsspec URL) into a local folder; nothing if it is absent."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        return
    root = root.rstrip("/")
    for f in fs.find(root):
        target = Path(local_dir, f[len(root):].lstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f, str(target))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file at a local path or fsspec URL, making its folder."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(study_location(path))
    fs.makedirs(posixpath.dirname(p), exist_ok=True)
    fs.pipe_file(p, data)


def read_bytes(path: str | Path) -> bytes | None:
    """The bytes of a file at a local path or fsspec URL; None if there is no such file."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(study_location(path))
    return fs.cat_file(p) if fs.isfile(p) else None


def _capacity(trials: int, block: int) -> int:
    return max(block, -(-trials // block) * block)


def row_digests(trials: np.ndarray, seeds: np.ndarray, masks: np.ndarray, preds: Predictions) -> np.ndarray:
    """CRC-32 (as int64) of each trial's index, seed, mask and predictions, in their stored dtypes.

    Written beside the rows, so verify can tell a row that was changed after it was
    written -- a chunk copied from another block or study, an edit, bits flipped on a
    disk -- from the trial that was trained, even when every value is still in range.
    """
    masks = np.asarray(masks, dtype=bool)
    rows = [np.asarray(getattr(preds, name), dtype=np.dtype(dtype).newbyteorder("<"))
            for name, (_, dtype) in ROW_ARRAYS.items()]
    out = np.empty(len(trials), dtype=np.int64)
    for k, t in enumerate(trials):
        h = zlib.crc32(np.array([t, seeds[k]], dtype="<i8").tobytes())
        h = zlib.crc32(np.packbits(masks[k]).tobytes(), h)
        for r in rows:
            h = zlib.crc32(np.ascontiguousarray(r[k]).tobytes(), h)
        out[k] = h
    return out


def _as_selection(trials: np.ndarray):
    if len(trials) and np.all(np.diff(trials) == 1):
        return slice(int(trials[0]), int(trials[-1]) + 1)
    return (trials,)  # orthogonal selection via integer array


def _store_url(path: str | Path) -> str:
    loc = study_location(path)
    return f"{loc}/{STORE_DIR}" if "://" in loc else str(Path(loc) / STORE_DIR)


def _try_open(url: str, mode: str) -> zarr.Group | None:
    """The study group at ``url``, or None if absent or never finished being created."""
    try:
        group = zarr.open_group(url, mode=mode)
    except (FileNotFoundError, zarr.errors.NodeNotFoundError):
        return None
    except Exception as e:  # a corrupt or foreign store
        raise StoreError(f"cannot read the store at {url}: {e}. Move it aside or use another "
                         "output directory.") from e
    if "config_hash" not in group.attrs:
        return None
    return group
