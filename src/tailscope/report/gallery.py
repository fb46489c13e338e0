"""Choosing the examples a report shows, and drawing them as small PNG thumbnails."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.scores import Scores, at_least

MEM_THRESHOLD = 0.25
NEAR_ZERO = 0.1  # |mem| below this reads "near 0" on the page
THUMB_PX = 64  # thumbnails are upscaled (nearest neighbour) to at least this many pixels a side
THUMB_MAX_PX = 128  # larger images are scaled down to this (a gallery card is about 130 px wide)
RANGE_SAMPLE_VALUES = 2_000_000  # pixels read (from evenly spaced training images) for a display range
RANGE_PERCENTILES = (0.5, 99.5)  # a few extreme pixels do not set the range


# ----------------------------------------------------------------- selection
def _uncertainty(scores: Scores) -> np.ndarray:
    """Width of each example's 95% interval of mem (inf without one): ties go to the narrower.

    The interval, not the SE: an SE of 0 (every trial agreed) is not certainty.
    """
    width = np.asarray(scores.mem_ci_high, float) - np.asarray(scores.mem_ci_low, float)
    return np.where(np.isfinite(width), width, np.inf)


def most_memorized(scores: Scores, cap: int = 48) -> tuple[np.ndarray, bool]:
    """Indices of the most memorized training examples, highest mem first.

    Returns (indices, above) where ``above`` says whether they all reach the paper's
    threshold; when no example does, the highest ``cap`` are returned instead.
    """
    mem = np.asarray(scores.mem, float)
    finite = np.flatnonzero(np.isfinite(mem))
    se = _uncertainty(scores)
    # highest mem first; ties: narrower 95% interval, then lower index
    order = finite[np.lexsort((finite, se[finite], -mem[finite]))]
    above = order[at_least(mem[order], MEM_THRESHOLD)]
    if len(above):
        return above[:cap], True
    return order[:cap], False


def not_fitted(scores: Scores, cap: int = 48) -> tuple[np.ndarray, int]:
    """Training examples most models get wrong even when they trained on them (acc_in < 1/2),
    fewest right first, then those whose held-out models agree most on another class.

    Returns (indices shown, how many there are). Memorization cannot flag them: training on
    them does not help, so mem is near 0, though they are often mislabeled.
    """
    acc_in = np.asarray(scores.acc_in, float)
    n_in = np.asarray(scores.n_in)
    other = np.where(np.asarray(scores.out_pred) != np.asarray(scores.y_train), np.asarray(scores.out_pred_share), 0)
    idx = np.flatnonzero((n_in > 0) & np.isfinite(acc_in) & (acc_in < 0.5))
    order = idx[np.lexsort((idx, -other[idx], acc_in[idx]))]
    return order[:cap], len(idx)


def typical_candidates(scores: Scores) -> np.ndarray:
    """Which training examples may be shown as typical: an estimate, not memorized (mem < 0.25),
    and learned: most models get them right, with or without them (mem near 0 also describes
    examples that no model gets right, which are anything but typical)."""
    mem = np.asarray(scores.mem, float)
    return np.isfinite(mem) & ~at_least(mem, MEM_THRESHOLD) & learned(scores)


def learned(scores: Scores) -> np.ndarray:
    """Which training examples most models classify correctly, both with and without them."""
    acc_in, acc_out = np.asarray(scores.acc_in, float), np.asarray(scores.acc_out, float)
    with np.errstate(invalid="ignore"):
        return (acc_in >= 0.5) & (acc_out >= 0.5)


def typical_examples(scores: Scores, classes: np.ndarray, per_class: int, cap: int = 48) -> np.ndarray:
    """For each class in ``classes``: examples whose mem is closest to 0, most certain first.

    Memorized examples (mem >= 0.25) are never offered as typical, even in a study where
    no example of a class comes closer to 0.
    """
    mem = np.asarray(scores.mem, float)
    se = _uncertainty(scores)
    candidate = typical_candidates(scores)
    out: list[np.ndarray] = []
    for c in classes:
        idx = np.flatnonzero((scores.y_train == c) & candidate)
        if not len(idx):
            continue
        # closest to zero, then models without it still get it right, then narrower interval, then index
        acc_out = np.where(np.isfinite(scores.acc_out[idx]), scores.acc_out[idx], -np.inf)
        order = np.lexsort((idx, se[idx], -acc_out, np.abs(mem[idx])))
        out.append(idx[order][:per_class])
    sel = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    return sel[:cap]


def top_pairs(scores: Scores, cap: int = 60):
    """The ``cap`` kept influence pairs with the largest influence (ties: smaller SE, indices)."""
    df = scores.pairs
    if not len(df):
        return df
    infl = df["infl"].to_numpy(float)
    se = np.where(np.isfinite(df["infl_se"].to_numpy(float)), df["infl_se"].to_numpy(float), np.inf)
    order = np.lexsort((df["tt_idx"].to_numpy(), df["tr_idx"].to_numpy(), se, -np.nan_to_num(infl, nan=-np.inf)))
    return df.iloc[order[:cap]].reset_index(drop=True)


# ----------------------------------------------------------------- images
def as_image(data: Dataset, x_row: np.ndarray) -> np.ndarray:
    """One example as an (H, W, C) array, whatever way the dataset stores it."""
    h, w, c = (tuple(data.image_shape) + (1,))[:3]
    a = np.asarray(x_row)
    if a.shape == (h, w, c):
        return a
    if a.shape == (h, w):
        return a[..., None]
    if a.shape == (c, h, w):
        return np.moveaxis(a, 0, -1)
    return a.reshape(h, w, c)


def display_max(data: Dataset) -> float | None:
    """The pixel value drawn as white: ``meta["pixel_max"]`` when the dataset records one, else
    for integer (or bool) images the largest training pixel when it lies in 1..255 (so 0..16
    digits are not drawn nearly black), else None (see :func:`display_range`).
    """
    top = data.meta.get("pixel_max")
    if top:
        return float(top)
    x = data.x_train
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool) or not x.size:
        return None
    cached = data.__dict__.get("_display_max")  # one pass over x_train per dataset
    if cached is None:
        cached = float(x.max()) if x.min() >= 0 else 0.0  # signed pixels: not a 0..max scale
        data.__dict__["_display_max"] = cached
    return cached if 0 < cached <= 255 else None


def display_range(data: Dataset) -> tuple[float, float]:
    """The pixel values drawn as black and white, one pair for the whole dataset.

    One range for every thumbnail, never one per image: a dark or low-contrast example
    (often a memorized one) must look dark, and thumbnails must be comparable. It is
    0..``pixel_max`` when the dataset records one (or 0..the largest pixel of 0..255 integer
    images, see :func:`display_max`); 0..1 for floats already in [0, 1]; else robust
    percentiles of the training set (standardized images: roughly the mean ± 2.5 SD).
    """
    top = display_max(data)
    if top is not None:
        return 0.0, top
    cached = data.__dict__.get("_display_range")  # computed once per dataset
    if cached is None:
        cached = _value_range(data.x_train)
        data.__dict__["_display_range"] = cached
    return cached


def _value_range(x: np.ndarray) -> tuple[float, float]:
    """A display range from evenly spaced rows, about RANGE_SAMPLE_VALUES pixels (NaN ignored)."""
    if not len(x) or x.dtype == bool:
        return 0.0, 1.0
    n_rows = min(len(x), max(1, RANGE_SAMPLE_VALUES // max(int(np.prod(x.shape[1:])), 1)))
    rows = np.unique(np.linspace(0, len(x) - 1, n_rows).round().astype(np.int64))
    seen = np.asarray(x[rows], dtype=np.float64).reshape(-1)
    seen = seen[np.isfinite(seen)]
    if not seen.size:
        return 0.0, 1.0
    low, high = float(seen.min()), float(seen.max())
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    p_low, p_high = (float(v) for v in np.percentile(seen, RANGE_PERCENTILES))
    lo = 0.0 if low >= 0 else p_low  # non-negative pixels: 0 stays black
    hi = p_high if p_high > lo else high
    return lo, (hi if hi > lo else lo + 1.0)


def to_uint8(data: Dataset, img: np.ndarray) -> np.ndarray:
    """Pixel values scaled to 0..255 by the dataset's display range (see :func:`display_range`).

    Missing pixels (NaN) are drawn black.
    """
    lo, hi = display_range(data)
    a = np.asarray(img, dtype=np.float64)
    a = np.where(np.isfinite(a), a, lo)
    return np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


def thumbnail(data: Dataset, x_row: np.ndarray, path: Path, px: int = THUMB_PX) -> Path:
    """Write one example as a PNG: small images upscaled (nearest neighbour), large ones shrunk."""
    from PIL import Image

    img = to_uint8(data, as_image(data, x_row))
    h, w, c = img.shape
    if c == 1:
        pil = Image.fromarray(img[..., 0], mode="L")
    elif c == 3:
        pil = Image.fromarray(img, mode="RGB")
    elif c == 4:
        pil = Image.fromarray(img, mode="RGBA")
    else:  # other channel counts: show the first channel
        pil = Image.fromarray(img[..., 0], mode="L")
    scale = max(1, math.ceil(px / max(h, w)))
    if scale > 1:  # crisp pixels: the browser would blur a small image it scales up
        pil = pil.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    elif max(h, w) > THUMB_MAX_PX:  # smooth: nearest neighbour would drop whole rows of a photo
        shrink = THUMB_MAX_PX / max(h, w)
        pil = pil.resize((max(1, round(w * shrink)), max(1, round(h * shrink))), Image.Resampling.LANCZOS)
    pil.save(path, optimize=True)
    return path


class Thumbnails:
    """Writes each needed example once, under ``img/``, and hands back its relative path."""

    def __init__(self, data: Dataset, out_dir: Path):
        self.data, self.dir = data, out_dir / "img"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: dict[str, str] = {}

    def __call__(self, split: str, index: int) -> str:
        key = f"{split}_{int(index)}"
        if key not in self.written:
            x = self.data.x_train if split == "train" else self.data.x_test
            thumbnail(self.data, x[int(index)], self.dir / f"{key}.png")
            self.written[key] = f"img/{key}.png"
        return self.written[key]
