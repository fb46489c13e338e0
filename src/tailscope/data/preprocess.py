"""Preprocessing of a Dataset: scaling, normalisation and flattening, fitted on the training split.

Statistics come from the training split only and are applied unchanged to the test split,
so nothing about the test set leaks into training. Work proceeds in row chunks: the only
full-size allocation is the float32 output (a 60,000 x 28 x 28 uint8 set never becomes
float64).
"""

from __future__ import annotations

import numpy as np

from tailscope.data.dataset import DataError, Dataset, carry_rows

__all__ = ["preprocess"]

_SCALES = (None, "unit")
_NORMALIZE = (None, "per_channel", "per_feature")


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _unit_divisor(data: Dataset, chunk: int) -> tuple[float, str]:
    x = data.x_train
    pixel_max = data.meta.get("pixel_max")
    if pixel_max:
        return float(pixel_max), "meta['pixel_max']"
    if x.dtype == bool:
        return 1.0, "bool"
    if np.issubdtype(x.dtype, np.unsignedinteger):
        return float(np.iinfo(x.dtype).max), f"{x.dtype} maximum"
    top = 0.0
    for a, b in _chunks(len(x), chunk):  # (fmax skips missing values)
        top = max(top, float(np.fmax.reduce(np.abs(x[a:b]), axis=None, initial=0)))
    return (top if top > 0 else 1.0), "training-set max |x|"


def _grouped(x: np.ndarray, normalize: str | None, n_channels: int | None) -> np.ndarray:
    """View rows as (n, F) for per-feature or (n, P, C) for per-channel statistics."""
    if normalize == "per_channel":
        return x.reshape(len(x), -1, n_channels)
    return x.reshape(len(x), -1)


def _fit(x: np.ndarray, divisor: float, normalize: str, n_channels: int | None, chunk: int):
    """Mean and std of the scaled training rows, per feature or per channel (two passes, float64).

    Missing values (NaN) are left out of both; a feature missing everywhere gets mean 0, std 1.
    """
    axes = (0, 1) if normalize == "per_channel" else (0,)
    count = total = None
    for a, b in _chunks(len(x), chunk):
        g = _grouped(x[a:b], normalize, n_channels).astype(np.float64) / divisor
        s, n = np.nansum(g, axis=axes), (~np.isnan(g)).sum(axis=axes)
        total, count = (s, n) if total is None else (total + s, count + n)
    count = np.maximum(count, 1)
    mean = total / count
    sq = np.zeros_like(mean)
    for a, b in _chunks(len(x), chunk):
        g = _grouped(x[a:b], normalize, n_channels).astype(np.float64) / divisor - mean
        sq += np.nansum(np.square(g), axis=axes)
    std = np.sqrt(sq / count)
    constant = std <= 1e-12 * np.maximum(np.abs(mean), 1.0)
    std = np.where(constant, 1.0, std)
    return mean, std, int(constant.sum())


def preprocess(data: Dataset, scale: str | None = None, normalize: str | None = None,
               flatten: bool = False, *, chunk_size: int = 4096) -> Dataset:
    """Return a float32 copy of ``data`` scaled, normalised and/or flattened.

    Parameters
    ----------
    data : Dataset
        The dataset; unchanged.
    scale : {None, "unit"}
        ``"unit"`` divides by the pixel maximum: ``meta["pixel_max"]`` when the loader
        recorded one (e.g. 16 for digits), else the dtype's maximum for unsigned integers
        (255 for uint8), else the training set's largest ``|x|``.
    normalize : {None, "per_channel", "per_feature"}
        Subtract the training mean and divide by the training standard deviation (after
        scaling), per image channel (needs ``image_shape``) or per input feature.
        Constant channels/features get std 1 (they become 0). Missing values (NaN, in data
        built with ``allow_missing=True``) are left out of the statistics and stay NaN.
    flatten : bool
        Reshape each example to one row ``(N, D)``; ``image_shape`` is kept so images
        can still be drawn (rows are in H, W, C order).
    chunk_size : int
        Rows processed at a time (bounds temporary memory).

    Returns
    -------
    Dataset
        float32 arrays; ``meta["preprocess"]`` gains a record of the options and the fitted
        statistics (divisor, mean, std), so the result is distinguishable from the input,
        and ``meta["pixel_max"]`` is removed (the values are no longer raw pixels).
    """
    if scale not in _SCALES:
        raise DataError(f"scale must be one of {_SCALES}, got {scale!r}.")
    if normalize not in _NORMALIZE:
        raise DataError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}.")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    n_channels = None
    if normalize == "per_channel":
        if data.image_shape is None:
            raise DataError(f"normalize='per_channel' needs images, but {data.name} has no image_shape; "
                            "use normalize='per_feature'.")
        n_channels = int(data.image_shape[-1])
        per_row = int(np.prod(data.x_train.shape[1:]))
        if per_row != int(np.prod(data.image_shape)):
            raise DataError(f"rows have {per_row} values but image_shape {data.image_shape} implies "
                            f"{int(np.prod(data.image_shape))}; fix image_shape or use 'per_feature'.")

    record: dict = {"scale": scale, "normalize": normalize, "flatten": bool(flatten), "fit_on": "train",
                    "input_dtype": str(data.x_train.dtype)}
    divisor = 1.0
    if scale == "unit":
        divisor, why = _unit_divisor(data, chunk_size)
        record.update(divisor=divisor, divisor_from=why)
    mean = std = None
    if normalize is not None:
        mean, std, n_const = _fit(data.x_train, divisor, normalize, n_channels, chunk_size)
        record.update(mean=[float(v) for v in mean], std=[float(v) for v in std], n_constant=n_const)
    inv = np.float32(1.0 / divisor)

    def transform(x: np.ndarray) -> np.ndarray:
        shape = (len(x), int(np.prod(x.shape[1:]))) if flatten else x.shape
        out = np.empty(shape, dtype=np.float32)
        for a, b in _chunks(len(x), chunk_size):
            dst = out[a:b].reshape(x[a:b].shape)
            if mean is None:
                np.multiply(x[a:b], inv, out=dst, casting="unsafe")
                continue
            # centred in float64 before the float32 cast: a feature with a large offset (timestamps)
            # would otherwise lose its spread
            g = _grouped(x[a:b].astype(np.float64) / divisor, normalize, n_channels)
            _grouped(dst, normalize, n_channels)[...] = (g - mean) / std
        return out

    meta = {k: v for k, v in data.meta.items() if k != "pixel_max"}
    if "pixel_max" in data.meta:
        record["input_pixel_max"] = data.meta["pixel_max"]
    meta["preprocess"] = [*data.meta.get("preprocess", []), record]
    return carry_rows(data, Dataset(transform(data.x_train), data.y_train, transform(data.x_test), data.y_test,
                                    list(data.classes), name=data.name, image_shape=data.image_shape, meta=meta))
