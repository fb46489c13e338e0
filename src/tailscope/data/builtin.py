"""Built-in datasets that ship with installed packages (no network)."""

from __future__ import annotations

import numpy as np

from tailscope.data.dataset import Dataset, stamp_rows, stratified_split

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16).

    Split once, stratified, with a fixed seed: 1,347 train / 450 test. Pixels are
    kept as uint8 (0..16); learners scale them.
    """
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    x = bunch.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    return stamp_rows(Dataset(
        x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
        classes=[str(c) for c in range(10)], name="digits", image_shape=(8, 8, 1),
        meta={"source": "sklearn.datasets.load_digits", "pixel_max": 16, "rows": {"train": tr, "test": te}}
    ))


def _fashion_mnist(**options) -> Dataset:
    from tailscope.data.formats.idx import load_fashion_mnist

    return load_fashion_mnist(**options)


BUILTIN = {"digits": load_digits, "fashion-mnist": _fashion_mnist}
