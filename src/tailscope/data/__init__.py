"""Datasets: built-in sets and loaders for user files, all returning :class:`Dataset`."""

from __future__ import annotations

from tailscope.data.builtin import BUILTIN
from tailscope.data.dataset import DataError, Dataset, stratified_split
from tailscope.data.loaders import LOADERS, from_arrays, from_huggingface, from_torch
from tailscope.data.preprocess import preprocess

__all__ = ["DataError", "Dataset", "from_arrays", "from_huggingface", "from_torch", "load_dataset",
           "preprocess", "stratified_split"]


def load_dataset(name_or_path: str | Dataset, **options) -> Dataset:
    """Load a dataset by name (``"digits"``) or ``"PREFIX:PATH"`` (``"npz:data.npz"``).

    A :class:`Dataset` passes through unchanged. Options go to the loader
    (e.g. ``test_fraction`` and ``split_seed`` for npz files with only x/y).
    """
    if isinstance(name_or_path, Dataset):
        return name_or_path
    spec = str(name_or_path)
    data = _dispatch(spec, options)
    # Recorded so that a study can reload its data later (tailscope estimate/report).
    data.meta.setdefault("spec", spec)
    data.meta.setdefault("spec_options", dict(options))
    return data


def _dispatch(spec: str, options: dict) -> Dataset:
    if spec in BUILTIN:
        return BUILTIN[spec](**options)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in LOADERS:
        return LOADERS[prefix](rest, **options)
    if spec.endswith(".npz"):
        return LOADERS["npz"](spec, **options)
    known = sorted(BUILTIN) + [f"{p}:PATH" for p in sorted(LOADERS)]
    raise DataError(f"unknown dataset {spec!r}; use one of {', '.join(known)}.")
