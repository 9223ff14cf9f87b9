"""CIFAR-10's pickled batches, read safely: `CifarUnpickler` admits only numpy's array
reconstruction (and the latin-1 encoding of protocol-2 bytes), and no array beyond a batch's size,
so a tampered file can neither run code nor claim gigabytes."""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from ..running.errors import DataError

try:  # numpy >= 2 keeps these in numpy._core; older releases in numpy.core
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


CIFAR_BATCH_IMAGES = 10_000  # images of one original batch: an array beyond it is refused


class _Refusal(Exception):
    """What a CIFAR-10 pickle asked for that the restricted unpickler refuses (see below)."""


def _simple_dtype(dtype: np.dtype) -> np.dtype:
    """A dtype of plain numbers (no objects, fields or sub-arrays, at most 16 bytes)."""
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refusal(f"an array of dtype {str(dtype)[:60]!r}")
    if dtype.itemsize > 16:
        raise _Refusal(f"an array of {dtype.itemsize}-byte items")
    return dtype


def _array_bytes(shape, dtype: np.dtype) -> int:
    """Bytes of an array of `shape` and `dtype`, refused beyond a batch's expected array (its
    images, uint8 n x 3072 with n <= CIFAR_BATCH_IMAGES)."""
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refusal(f"an array of shape {shape!r:.60}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > CIFAR_BATCH_IMAGES * 3 * 32 * 32:
        raise _Refusal(f"an array of shape {shape} ({size} bytes, beyond a batch's 10000 x 3072)")
    return size


def _dtype(obj, align=False, copy=True):
    """numpy.dtype as a pickle calls it, always a copy (a later BUILD never alters numpy's own)."""
    if not isinstance(obj, str):
        raise _Refusal(f"numpy.dtype of {type(obj).__name__}")
    return _simple_dtype(np.dtype(obj, bool(align), True))


def _empty_array(subtype, shape, dtype):
    """numpy's `_reconstruct(ndarray, (0,), b'b')`: the empty array that a BUILD then fills."""
    if subtype is not _NDARRAY or shape != (0,) or dtype not in (b"b", "b"):
        raise _Refusal("numpy's array reconstruction with arguments numpy never writes")
    return _reconstruct(np.ndarray, (0,), b"b")


def _array_from_buffer(buffer, dtype, shape, order="C"):
    """numpy's `_frombuffer` (protocol 5): an array over the pickle's own bytes."""
    if not isinstance(dtype, np.dtype):
        raise _Refusal("numpy's _frombuffer without a dtype")
    _array_bytes(shape, _simple_dtype(dtype))
    return _frombuffer(buffer, dtype, shape, order)


def _latin1(text, encoding="utf-8"):
    """`_codecs.encode(text, 'latin1')`: how protocol 2 written by Python 3 stores bytes. No other
    codec (some expand their input, e.g. 'hex', and could be chained)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refusal(f"_codecs.encode with codec {encoding!r:.40}")
    return codecs.encode(text, "latin1")


class _Ndarray:
    """What the pickle gets for `numpy.ndarray`: only an argument of `_reconstruct`; calling it
    (which would allocate an array of any size) is refused."""

    def __call__(self, *args, **kwargs):
        raise _Refusal("numpy.ndarray to be called (an array of a size the pickle chooses)")


_NDARRAY = _Ndarray()

# What CIFAR-10's pickles may ask for: numpy's array reconstruction (both module names, as numpy
# 1.x and 2.x write them; _frombuffer for protocol 5) and _codecs.encode, which protocol-2 pickles
# written by Python 3 use for bytes; each through a wrapper that admits only what numpy writes.
# Containers, strings and numbers need no globals.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy.core.numeric", "_frombuffer"): _array_from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _array_from_buffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
}


class CifarUnpickler(pickle._Unpickler):
    """Unpickles a CIFAR-10 file, refusing every global but numpy's array reconstruction, and
    any array beyond a batch's expected size.

    The general unpickler calls whatever a pickle names, so a tampered batch could run code, and
    even numpy's own reconstruction allocates whatever shape the pickle says. This one (Python's
    own unpickler, whose steps can be checked one by one) admits the few globals above through
    wrappers, and checks each array's shape, dtype and data before numpy sees them; anything
    else raises DataError naming `path` and what was asked for.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, blob: bytes, path: Path):
        super().__init__(io.BytesIO(blob), encoding="latin1")  # the originals are Python 2 pickles
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[module, name]
        raise _Refusal(f"'{module}.{name}'")

    def load_build(self):
        """BUILD: only numpy's own state of an array or a dtype, checked first."""
        state, target = self.stack[-1], self.stack[-2]
        if isinstance(target, np.ndarray):
            if not (isinstance(state, tuple) and len(state) in (4, 5)):
                raise _Refusal("an array state numpy never writes")
            shape, dtype, _, data = state[-4:]
            if not isinstance(dtype, np.dtype):
                raise _Refusal("an array state without a dtype")
            size = _array_bytes(shape, _simple_dtype(dtype))
            if not isinstance(data, bytes | str) or len(data) != size:
                raise _Refusal(f"an array of {size} bytes from data of another length")
        elif not isinstance(target, np.dtype):
            raise _Refusal(f"the state of a {type(target).__name__} to be set")
        super().load_build()
        if isinstance(target, np.dtype):
            _simple_dtype(target)

    dispatch[pickle.BUILD[0]] = load_build


def _unpickle(path: Path, blob: bytes):
    try:
        return CifarUnpickler(blob, path).load()
    except _Refusal as err:
        raise DataError(
            f"cifar10: {path} asks the unpickler for {err}; a CIFAR-10 file holds only arrays of "
            f"at most a batch's size, lists, strings and numbers. Refusing to load it."
        ) from None
    except Exception as err:  # a truncated or corrupt pickle fails in many ways
        raise DataError(
            f"cifar10: {path} is not a readable pickle ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}); the file is truncated or corrupt."
        ) from err


def cifar_batch(path: Path, blob: bytes) -> tuple[np.ndarray, list[int]]:
    """A batch's images (uint8, n x 3072: R plane, G, B) and labels, checked."""
    entry = _unpickle(path, blob)
    data = entry.get("data") if isinstance(entry, dict) else None
    labels = None
    if isinstance(entry, dict):  # as torchvision: 'labels', else CIFAR-100's 'fine_labels'
        labels = entry["labels"] if "labels" in entry else entry.get("fine_labels")
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3 * 32 * 32
        and isinstance(labels, list)
        and len(labels) == len(data)
        and all(type(v) is int and 0 <= v < 10 for v in labels)
    ):
        raise DataError(
            f"cifar10: {path} is not a CIFAR-10 batch: expected a dict with 'data' (a uint8 array "
            f"n x 3072) and 'labels' (a list of n ints in 0..9)."
        )
    return data, labels


def cifar_classes(path: Path, blob: bytes) -> list[str]:
    """batches.meta's ``label_names``, checked."""
    meta = _unpickle(path, blob)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not (isinstance(names, list) and len(names) == 10 and all(type(n) is str for n in names)):
        raise DataError(
            f"cifar10: {path} is not CIFAR-10's batches.meta: expected a dict whose "
            f"'label_names' is a list of 10 strings."
        )
    return names
