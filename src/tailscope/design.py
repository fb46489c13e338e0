"""Subset designs: which training examples each trial trains on.

A trial's mask is a pure function of (seed, trial index, n, ratio, design), so any
worker can rebuild any trial, and a study grown later with more trials keeps its
earlier trials unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DESIGNS = ("uniform", "balanced")

# Distinct stream tags keep the design's random numbers apart from the learner's.
_MASK_STREAM = 0x6D61736B  # "mask"
_SEED_STREAM = 0x73656564  # "seed"


class DesignError(ValueError):
    """A subset design that cannot be built; the message says what to change."""


@dataclass(frozen=True)
class Design:
    """How trials subsample the training set.

    Parameters
    ----------
    n : int
        Training set size.
    ratio : float
        Subset fraction q in (0, 1); each trial trains on about m = round(q n) examples.
    kind : {"uniform", "balanced"}
        ``uniform`` (the paper's): every trial is a uniform random subset of exactly m.
        ``balanced``: trials come in blocks of ``block`` and within each block every
        example is in exactly round(q * block) trials (so in/out counts are equal
        across examples by construction); trial sizes are also exactly balanced
        (m or m+1) by swaps that keep the per-example counts.
    seed : int
        Master seed of the study.
    block : int
        Trials per balanced block (ignored by ``uniform``).
    """

    n: int
    ratio: float
    kind: str = "uniform"
    seed: int = 0
    block: int = 20

    def __post_init__(self) -> None:
        if self.kind not in DESIGNS:
            raise DesignError(f"unknown design {self.kind!r}; use one of {DESIGNS}.")
        if not (isinstance(self.ratio, float | int) and 0 < self.ratio < 1):
            raise DesignError(f"ratio must lie strictly between 0 and 1 (the paper uses 0.7), got {self.ratio}.")
        if self.n < 2:
            raise DesignError(f"need at least 2 training examples, got {self.n}.")
        m = self.subset_size
        if m < 1 or m > self.n - 1:
            raise DesignError(
                f"ratio {self.ratio} of n={self.n} gives subsets of {m}; every subset must leave out at "
                "least one example and keep at least one: choose a ratio between 1/n and 1 - 1/n."
            )
        if self.kind == "balanced":
            r = self.per_block_in
            if self.block < 2 or r < 1 or r > self.block - 1:
                raise DesignError(
                    f"balanced design with block={self.block} and ratio={self.ratio} puts each example in "
                    f"{r} of {self.block} trials; use a block of at least {math.ceil(2 / min(self.ratio, 1 - self.ratio))}."
                )
            if abs(r / self.block - self.ratio) > 0.005:
                raise DesignError(
                    f"balanced design with block={self.block} includes each example in {r}/{self.block} = "
                    f"{r / self.block:.3f} of trials, not ratio={self.ratio}; choose a block for which "
                    f"ratio * block is a whole number (e.g. {_suggest_block(self.ratio)})."
                )

    @property
    def subset_size(self) -> int:
        return int(round(self.ratio * self.n))

    @property
    def per_block_in(self) -> int:
        """Balanced design: trials per block that include each example."""
        return int(round(self.ratio * self.block))

    @property
    def effective_ratio(self) -> float:
        """The inclusion probability the design really uses (r/block for balanced, m/n for uniform)."""
        if self.kind == "balanced":
            return self.per_block_in / self.block
        return self.subset_size / self.n

    def spec(self) -> dict:
        d = asdict(self)
        if self.kind == "uniform":
            d.pop("block")
        return d

    def mask(self, trial: int) -> np.ndarray:
        """Boolean mask (n,) of the examples trial ``trial`` trains on."""
        return self.masks(np.array([trial]))[0]

    def masks(self, trials) -> np.ndarray:
        """Masks of several trials, shape (len(trials), n)."""
        trials = np.asarray(trials, dtype=np.int64)
        if self.kind == "uniform":
            return np.stack([self._uniform(int(t)) for t in trials]) if len(trials) else \
                np.zeros((0, self.n), bool)
        out = np.zeros((len(trials), self.n), dtype=bool)
        for b in np.unique(trials // self.block):
            sel = trials // self.block == b
            out[sel] = self._balanced_block(int(b))[trials[sel] % self.block]
        return out

    def trial_seeds(self, trials) -> np.ndarray:
        """The learner's seed for each trial: independent of the mask's random stream."""
        return np.array(
            [np.random.default_rng([self.seed, _SEED_STREAM, int(t)]).integers(0, 2**31 - 1)
             for t in np.asarray(trials)], dtype=np.int64)

    def _uniform(self, trial: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _MASK_STREAM, trial])
        mask = np.zeros(self.n, dtype=bool)
        mask[rng.choice(self.n, size=self.subset_size, replace=False)] = True
        return mask

    def _balanced_block(self, b: int) -> np.ndarray:
        """A (block, n) 0/1 matrix: column sums exactly r, row sums m or m+1."""
        rng = np.random.default_rng([self.seed, _MASK_STREAM, 1, b])
        B, n, r = self.block, self.n, self.per_block_in
        # Each example picks its r trials independently: random columns with sum r.
        keys = rng.random((B, n))
        ranks = np.argsort(np.argsort(keys, axis=0), axis=0)
        mat = ranks < r
        # Targets: n*r ones spread over B rows as evenly as possible (random which rows get +1).
        target = np.full(B, (n * r) // B)
        target[rng.permutation(B)[: (n * r) % B]] += 1
        _equalize_rows(mat, target, rng)
        return mat


def _suggest_block(ratio: float) -> int:
    return next((b for b in range(10, 1001) if abs(round(ratio * b) / b - ratio) <= 0.005), 1000)


def _equalize_rows(mat: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> None:
    """Move ones from rows above target to rows below it within columns (keeps column sums)."""
    sums = mat.sum(axis=1)
    while True:
        heavy = np.flatnonzero(sums > target)
        if not len(heavy):
            return
        light = np.flatnonzero(sums < target)
        h, lo = heavy[0], light[rng.integers(len(light))]
        cand = np.flatnonzero(mat[h] & ~mat[lo])
        move = min(sums[h] - target[h], target[lo] - sums[lo], len(cand))
        cols = rng.choice(cand, size=move, replace=False)
        mat[h, cols] = False
        mat[lo, cols] = True
        sums[h] -= move
        sums[lo] += move


def theoretical_se_bound(trials: int, ratio: float) -> float:
    """The paper's bound on the standard deviation of a subsampled estimate: 0.5 sqrt(1/(qt) + 1/((1-q)t))."""
    if isinstance(trials, bool) or not isinstance(trials, int | float | np.integer | np.floating) or not trials > 0:
        raise ValueError(f"trials must be a positive number, got {trials!r}.")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float | np.integer | np.floating) or not 0 < ratio < 1:
        raise ValueError(f"ratio must lie in (0, 1), got {ratio!r}.")
    return 0.5 * math.sqrt(1 / (ratio * trials) + 1 / ((1 - ratio) * trials))
