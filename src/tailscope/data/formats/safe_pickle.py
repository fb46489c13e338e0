"""A restricted unpickler for pickle-based dataset formats (the CIFAR python batches).

Only plain containers and scalars (dict, list, tuple, str, bytes, int, float, bool,
None) and numeric numpy arrays and scalars can come out of it. The pickle's global
lookups are answered with inert stand-ins, never with the real numpy callables:

- ``numpy[._core|.core].multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``
  (how numpy pickles arrays up to protocol 4), ``numpy[._core|.core].numeric._frombuffer``
  (protocol 5) and ``numpy[._core|.core].multiarray.scalar`` (numpy scalars) build
  records of (shape, dtype, raw bytes); after the pickle has been read, each record is
  checked (a plain numeric dtype, no fields, non-negative shape, exactly
  ``prod(shape) * itemsize`` bytes) and only then turned into an array with
  ``np.frombuffer``;
- ``_codecs.encode(text, "latin1")`` (how Python 3 writes bytes at protocol 2) is
  answered with a function that only does that encoding.

Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is
refused before anything is called, so a tampered file raises :class:`UnsafePickleError`
instead of running code. Persistent ids are refused too.
"""

from __future__ import annotations

import io
import math
import pickle
import re
from pathlib import Path

import numpy as np

from tailscope.data.dataset import DataError

__all__ = ["UnsafePickleError", "safe_load", "safe_loads"]

#: dtype specs an array may have: bool, signed/unsigned ints, floats (numpy's own pickles use these).
_DTYPE_SPEC = re.compile(r"^(b1|\?|[iu][1248]|f[248])$")
_BYTEORDERS = {"|", "<", ">", "="}


class UnsafePickleError(DataError):
    """A pickle asked for something the restricted unpickler does not allow."""


class _DtypeRecord:
    """Stand-in for ``numpy.dtype(spec, align, copy)``; becomes a real dtype only once checked."""

    __slots__ = ("spec", "byteorder")

    def __init__(self, spec, align=False, copy=False, *rest):
        if isinstance(spec, bytes):
            spec = spec.decode("ascii", "replace")
        if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
            raise UnsafePickleError(f"the pickle holds an array of dtype {spec!r}; only plain numeric "
                                    "dtypes (bool, int, uint, float) are allowed.")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state):
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5:
            raise UnsafePickleError(f"the pickle holds a malformed dtype state {state!r}.")
        byteorder = state[1]
        if isinstance(byteorder, bytes):
            byteorder = byteorder.decode("ascii", "replace")
        if byteorder not in _BYTEORDERS or any(s is not None for s in state[2:5]):
            raise UnsafePickleError("the pickle holds a structured or sub-array dtype; only plain "
                                    "numeric dtypes are allowed.")
        self.byteorder = byteorder

    def to_dtype(self) -> np.dtype:
        dt = np.dtype(self.spec)
        if self.byteorder in "<>":
            dt = dt.newbyteorder(self.byteorder)
        return dt


def _as_bytes(raw, what: str) -> bytes:
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, pickle.PickleBuffer):
        return bytes(raw.raw())
    if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
        return raw.encode("latin1")
    raise UnsafePickleError(f"the pickle gives {type(raw).__name__} as the raw data of {what}; expected bytes.")


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise UnsafePickleError(f"the pickle holds an array with invalid shape {shape!r}.")
    return tuple(shape)


def _check_dtype(dtype) -> np.dtype:
    if not isinstance(dtype, _DtypeRecord):
        raise UnsafePickleError(f"the pickle gives {type(dtype).__name__} where a numpy dtype belongs.")
    return dtype.to_dtype()


def _build_array(shape, dtype: np.dtype, raw: bytes, fortran: bool) -> np.ndarray:
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise UnsafePickleError(f"the pickle holds an array of shape {shape} and dtype {dtype} with "
                                f"{len(raw)} bytes of data; it needs exactly {need}.")
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(arr, dtype=dtype.newbyteorder("="), order="C")  # own, writable, native order


class _ArrayRecord:
    """Stand-in for ``numpy.ndarray`` made by ``_reconstruct``; filled by BUILD, checked later."""

    __slots__ = ("state",)

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_array(self) -> np.ndarray:
        st = self.state
        if not isinstance(st, tuple) or len(st) not in (4, 5):
            raise UnsafePickleError("the pickle holds an array without a valid state.")
        _, shape, dtype, fortran, raw = st if len(st) == 5 else (1, *st)
        if isinstance(raw, list):
            raise UnsafePickleError("the pickle holds an object array; only numeric arrays are allowed.")
        return _build_array(_check_shape(shape), _check_dtype(dtype), _as_bytes(raw, "an array"),
                            bool(fortran))


class _ScalarRecord:
    __slots__ = ("dtype", "raw")

    def __init__(self, dtype, raw=None):
        self.dtype, self.raw = dtype, raw

    def to_scalar(self):
        dt = _check_dtype(self.dtype)
        return _build_array((), dt, _as_bytes(self.raw, "a numpy scalar"), False)[()]


class _BufferRecord:
    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args

    def to_array(self) -> np.ndarray:
        if len(self.args) != 4:
            raise UnsafePickleError("the pickle calls numpy's _frombuffer with unexpected arguments.")
        buf, dtype, shape, order = self.args
        return _build_array(_check_shape(shape), _check_dtype(dtype), _as_bytes(buf, "an array"),
                            order == "F")


def _reconstruct(subtype, shape, dtype_code):
    if subtype is not _NDARRAY:
        raise UnsafePickleError("the pickle reconstructs an array subclass; only numpy.ndarray is allowed.")
    return _ArrayRecord()


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(f"the pickle calls _codecs.encode with {encoding!r}; only latin1 is allowed.")
    return text.encode("latin1")


_NDARRAY = object()  # the stand-in handed out for numpy.ndarray; only _reconstruct accepts it

_ALLOWED = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DtypeRecord,
            ("_codecs", "encode"): _latin1_encode}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _ScalarRecord
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _BufferRecord


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle asks for {module}.{name}, which tailscope refuses to load: only plain "
                "containers and numeric numpy arrays are allowed. The file may have been tampered "
                "with; re-download it from its original source."
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("the pickle uses persistent ids, which tailscope refuses to load.")


_PLAIN = (str, bytes, int, float, bool, complex, type(None), np.ndarray, np.generic)


def _materialize(obj, depth: int = 0):
    """Replace the stand-ins by checked arrays; refuse anything that is not plain data."""
    if depth > 100:
        raise UnsafePickleError("the pickle is nested more than 100 levels deep.")
    if isinstance(obj, (_ArrayRecord, _BufferRecord)):
        return obj.to_array()
    if isinstance(obj, _ScalarRecord):
        return obj.to_scalar()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, dict):
        return {_materialize(k, depth + 1): _materialize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, depth + 1) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(_materialize(v, depth + 1) for v in obj)
    if isinstance(obj, bytearray):
        return bytes(obj)
    raise UnsafePickleError(f"the pickle produced a {type(obj).__name__}, which is not plain data.")


def safe_loads(data: bytes, *, encoding: str = "latin1", source: str = "pickle"):
    """Unpickle ``data`` allowing only plain containers and numeric numpy arrays.

    Parameters
    ----------
    data : bytes
        The pickle.
    encoding : str
        How to decode Python 2 ``str`` objects (``"latin1"`` keeps numpy's raw bytes intact;
        ``"bytes"`` leaves them as bytes).
    source : str
        Named in error messages (usually the file path).

    Returns
    -------
    object
        dicts, lists, tuples, str, bytes, numbers and numpy arrays (owned, native byte order).

    Raises
    ------
    UnsafePickleError
        The pickle refers to any other global, uses persistent ids or holds a malformed array;
        nothing it asks for is called.
    DataError
        The data is not a readable pickle (truncated or corrupt).
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
        return _materialize(obj)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{source}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, MemoryError) as e:
        raise DataError(f"{source} is not a readable pickle ({type(e).__name__}: {e}); the file is "
                        "truncated or corrupt, re-download it.") from None


def safe_load(path: str | Path, *, encoding: str = "latin1"):
    """:func:`safe_loads` on the contents of a file."""
    p = Path(path)
    return safe_loads(p.read_bytes(), encoding=encoding, source=str(p))
