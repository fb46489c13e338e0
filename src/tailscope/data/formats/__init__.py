"""File-format readers behind ``load_dataset("PREFIX:PATH")``: idx, CIFAR batches, image folders, tables."""

from tailscope.data.formats.cifar import load_cifar, read_cifar_batch
from tailscope.data.formats.folder import load_folder
from tailscope.data.formats.idx import load_fashion_mnist, load_idx, read_idx
from tailscope.data.formats.safe_pickle import UnsafePickleError, safe_load, safe_loads
from tailscope.data.formats.table import load_table

__all__ = ["UnsafePickleError", "load_cifar", "load_fashion_mnist", "load_folder", "load_idx", "load_table",
           "read_cifar_batch", "read_idx", "safe_load", "safe_loads"]
