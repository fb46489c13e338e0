"""Datasets: built-in sets and loaders for user files, all returning :class:`Dataset`."""

from __future__ import annotations

import inspect

from tailscope.data.builtin import BUILTIN
from tailscope.data.dataset import DataError, Dataset, stratified_split
from tailscope.data.duplicates import ExactDuplicates, exact_duplicates
from tailscope.data.loaders import LOADERS, from_arrays, from_huggingface, from_torch
from tailscope.data.preprocess import preprocess
from tailscope.names import unknown_names

__all__ = ["DataError", "Dataset", "ExactDuplicates", "exact_duplicates", "from_arrays", "from_huggingface",
           "from_torch", "load_dataset", "preprocess", "stratified_split"]


TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


def load_dataset(name_or_path: str | Dataset, **options) -> Dataset:
    """Load a dataset by name (``"digits"``) or ``"PREFIX:PATH"`` (``"npz:data.npz"``).

    A :class:`Dataset` passes through unchanged. Options go to the loader
    (e.g. ``test_fraction`` and ``split_seed`` for npz files with only x/y).
    """
    if isinstance(name_or_path, Dataset):
        return name_or_path
    spec = str(name_or_path)
    fn, args = _loader(spec)
    try:
        inspect.signature(fn).bind(*args, **options)
    except TypeError:
        raise DataError(f"dataset {spec!r} does not take option(s) {unknown_names(options, list(inspect.signature(fn).parameters))}; "
                        f"its loader takes: {_loader_options(fn)}.") from None
    data = fn(*args, **options)
    # Recorded so that a study can reload its data later (tailscope estimate/report),
    # from any working directory: local paths are made absolute.
    data.meta.setdefault("spec", _absolute_spec(spec))
    data.meta.setdefault("spec_options", dict(options))
    return data


def _loader(spec: str) -> tuple:
    """The loader of ``spec`` and its positional arguments (the path, for ``PREFIX:PATH``)."""
    if spec in BUILTIN:
        return BUILTIN[spec], ()
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in LOADERS:
        return LOADERS[prefix], (rest,)
    if spec.endswith(".npz"):
        return LOADERS["npz"], (spec,)
    if spec.lower().endswith(TABLE_SUFFIXES):
        return LOADERS["csv"], (spec,)
    known = sorted(BUILTIN) + [f"{p}:PATH" for p in sorted(LOADERS)]
    raise DataError(f"unknown dataset {spec!r}; use one of {', '.join(known)}.")


def _loader_options(fn) -> str:
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)]
    return ", ".join(p.name for p in params) or "none"


def _absolute_spec(spec: str) -> str:
    """``npz:data.npz`` -> ``npz:/abs/dir/data.npz`` (URLs and built-in names unchanged)."""
    import os

    prefix, sep, rest = spec.partition(":")
    if sep and prefix in LOADERS and "://" not in rest:
        return f"{prefix}:{os.path.abspath(os.path.expanduser(rest))}"
    if not sep and spec.endswith(".npz"):
        return f"npz:{os.path.abspath(os.path.expanduser(spec))}"
    if not sep and spec.lower().endswith(TABLE_SUFFIXES):
        return f"csv:{os.path.abspath(os.path.expanduser(spec))}"
    return spec
