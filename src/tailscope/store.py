"""The trial store: one row per trial, written once, in a Zarr v3 group.

Layout (``<study>/trials.zarr``)::

    mask        (T, n)       bool     the subset the trial trained on
    seed        (T,)         int64    the learner seed of the trial
    train_pred  (T, n)       int16    predicted label of every training example
    train_prob  (T, n)       float32  probability of the true label
    test_pred   (T, n_test)  int16
    test_prob   (T, n_test)  float32
    done        (T,)         bool     set only after every other row of the trial is written
    y_train, y_test                   labels, so estimation needs no dataset
    attrs: config, config_hash, fingerprint, tailscope version, trials

Every array is chunked by ``block`` trials along its first axis, so a block of trials
lives in chunks that no other block touches: two writers never share a chunk.
Zarr's local store writes each chunk atomically (temporary file + rename), and the
``done`` chunk of a block is written last, so a block killed half-way never
counts as done.
"""

from __future__ import annotations

import hashlib
import json
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


class StoreError(RuntimeError):
    """A store that cannot be used as asked; the message says why and what to do."""


# Config keys that do not change what the trials are: a study can grow (trials) and its
# data can be reloaded from another path (source) without changing identity.
VOLATILE_KEYS = ("trials", "source")


def config_hash(config: dict) -> str:
    """Hash of the config without its volatile keys."""
    core = {k: v for k, v in config.items() if k not in VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if k in VOLATILE_KEYS and not prefix:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: stored {va!r}, requested {vb!r}")
    return out


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

    def array(self, name: str) -> zarr.Array:
        """A cached handle (looking an array up reads its metadata from storage each time)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, config: dict, y_train: np.ndarray, y_test: np.ndarray) -> TrialStore:
        """Create the store for ``config``, or reopen it if it exists with the same config.

        Growing ``config["trials"]`` extends the arrays; earlier trials are untouched.
        A store made with another config or dataset is refused before anything changes.
        """
        url = _store_url(path)
        existing = _try_open(url, mode="r")
        if existing is not None:
            store = cls(existing, url)
            store._check_same(config)
            if config["trials"] > store.trials:
                store = cls(zarr.open_group(url, mode="r+"), url)
                store._grow(int(config["trials"]))
            return store
        try:
            group = zarr.open_group(url, mode="w-")
        except FileExistsError:
            # Creation was interrupted before the attrs (written last) landed, so the
            # group holds no trial yet: start it again.
            group = zarr.open_group(url, mode="w")
        T, B = int(config["trials"]), int(config["block_size"])
        cap = _capacity(T, B)
        n, n_test = len(y_train), len(y_test)
        sizes = {"n": n, "n_test": n_test}
        group.create_array("mask", shape=(cap, n), chunks=(B, n), dtype="bool", fill_value=False)
        group.create_array("seed", shape=(cap,), chunks=(B,), dtype="int64", fill_value=-1)
        for name, (dim, dtype) in ROW_ARRAYS.items():
            group.create_array(name, shape=(cap, sizes[dim]), chunks=(B, sizes[dim]), dtype=dtype,
                               fill_value=0)
        group.create_array("done", shape=(cap,), chunks=(B,), dtype="bool", fill_value=False)
        group.create_array("y_train", data=np.asarray(y_train, dtype=np.int64))
        group.create_array("y_test", data=np.asarray(y_test, dtype=np.int64))
        # attrs last: a store without them is treated as not created (see _try_open).
        group.attrs.update({"config": config, "config_hash": config_hash(config),
                            "fingerprint": config["dataset"]["fingerprint"],
                            "tailscope_version": __version__, "trials": T})
        return cls(zarr.open_group(url, mode="r+"), url)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> TrialStore:
        url = _store_url(path)
        group = _try_open(url, mode=mode)
        if group is None:
            raise StoreError(f"no tailscope study at {path}; create one with `tailscope run` or ts.Study(...).run().")
        return cls(group, url)

    def _check_same(self, config: dict) -> None:
        if self.group.attrs.get("config_hash") == config_hash(config):
            return
        diffs = _diff(self.config, config)
        raise StoreError(
            f"the store at {self.path} was made by a different study config:\n  " + "\n  ".join(diffs)
            + "\nUse another output directory, or rerun with the stored settings; nothing was changed.")

    def _grow(self, trials: int) -> None:
        cap = _capacity(trials, self.block)
        for name in ("mask", "seed", "done", *ROW_ARRAYS):
            arr = self.array(name)
            if arr.shape[0] < cap:
                arr.resize((cap, *arr.shape[1:]))
        self.config["trials"] = trials
        self.group.attrs.update({"config": self.config, "trials": trials})

    # ----------------------------------------------------------------- facts
    @property
    def trials(self) -> int:
        return int(self.group.attrs["trials"])

    @property
    def n_blocks(self) -> int:
        return -(-self.trials // self.block)

    @property
    def y_train(self) -> np.ndarray:
        return self.array("y_train")[:]

    @property
    def y_test(self) -> np.ndarray:
        return self.array("y_test")[:]

    def done(self) -> np.ndarray:
        """Bool (trials,): which trials are completely written."""
        return self.array("done")[: self.trials]

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
    def write(self, trials: np.ndarray, masks: np.ndarray, seeds: np.ndarray, preds: Predictions) -> None:
        """Write trials (all in one block), then mark them done."""
        trials = np.asarray(trials)
        blocks = np.unique(trials // self.block)
        if len(blocks) != 1:
            raise ValueError(f"write() takes trials of one block, got blocks {blocks.tolist()}.")
        preds.check(len(trials), masks.shape[1], preds.test_pred.shape[1], 2**15)
        sel = _as_selection(trials)
        self.array("mask")[sel] = masks
        self.array("seed")[sel] = seeds
        for name in ROW_ARRAYS:
            self.array(name)[sel] = getattr(preds, name)
        self.array("done")[sel] = True

    # ----------------------------------------------------------------- reading
    def read_block(self, b: int, fields: tuple[str, ...] | None = None) -> Block | None:
        """The done trials of block ``b`` (None if none are done).

        ``fields`` limits which prediction arrays are read (the others come back empty),
        so a pass that needs only test predictions does not decompress the rest.
        """
        t = self.block_trials(b)
        done = self.array("done")[t[0]: t[-1] + 1]
        if not done.any():
            return None
        rows = slice(t[0], t[-1] + 1)
        keep = np.flatnonzero(done)
        wanted = ("mask", "seed", *(ROW_ARRAYS if fields is None else fields))
        arrays = {name: self.array(name)[rows][keep] if name in wanted else np.zeros((len(keep), 0))
                  for name in ("mask", "seed", *ROW_ARRAYS)}
        return Block(trials=t[keep], mask=arrays.pop("mask"), seed=arrays.pop("seed"),
                     preds=Predictions(**arrays))

    def iter_blocks(self, fields: tuple[str, ...] | None = None) -> Iterator[Block]:
        """Done trials block by block: memory stays at one block."""
        for b in range(self.n_blocks):
            blk = self.read_block(b, fields)
            if blk is not None:
                yield blk


def _capacity(trials: int, block: int) -> int:
    return max(block, -(-trials // block) * block)


def _as_selection(trials: np.ndarray):
    if len(trials) and np.all(np.diff(trials) == 1):
        return slice(int(trials[0]), int(trials[-1]) + 1)
    return (trials,)  # orthogonal selection via integer array


def _store_url(path: str | Path) -> str:
    s = str(path)
    if "://" in s:
        return s.rstrip("/") + "/trials.zarr"
    return str(Path(s).expanduser() / "trials.zarr")


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
