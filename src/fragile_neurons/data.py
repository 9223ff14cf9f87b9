"""Preparing MNIST, Fashion-MNIST and CIFAR-10 from torchvision's on-disk layout, safely.

`prepare` reads the raw files of torchvision's layout under a root folder (downloading them into
it when they are absent and downloading is allowed), compares every file's md5 with the
original's or with an md5 the params pin for it, draws optional seeded class-balanced subsets,
and returns uint8 tensors in a fixed, seeded order. It returns three splits (method.md,
notation): the **selection split**, a seeded class-balanced set carved out of the raw training
split first and never trained on (the scan, targeting, labels, magnitudes and gains use it); the
**train split**, drawn from what the selection left; and the **test split**, from the raw test
split, for evaluation only. A prepared split is a dict ``images`` (uint8, N x C x H x W),
``labels`` (int64, N), ``index`` (int64, N: each image's position in the raw split it came from,
so that the splits' disjointness can be checked), ``classes`` (names), ``mean`` and ``std`` (per
channel, of the prepared training images; the model's first operation uses them).

The files are parsed here, not by torchvision's dataset classes: CIFAR10 unpickles its batches
with the general unpickler (a tampered batch would run code), and MNIST loads legacy
``processed/*.pt`` files with ``torch.load`` when they exist. CIFAR-10's pickles go through
`CifarUnpickler`, which admits only numpy's array reconstruction, and no array beyond a batch's
size; MNIST's idx files are read with numpy after their headers are checked. Each file's size is
checked first (`max_size`: a file beyond it is refused unread), then it is read once: its md5
and its parse come from the same bytes.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import math
import pickle
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.error import URLError

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive

from .errors import DataError, ParamError

try:  # numpy >= 2 keeps these in numpy._core; older releases in numpy.core
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

# md5 of the *uncompressed* originals (torchvision lists only the md5s of the .gz archives it
# downloads; a root may hold just the uncompressed files, which is all torchvision's layout needs).
RAW_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

# The largest a raw file may be, checked before it is read (a file beyond it cannot be the
# dataset, and reading it whole could take all memory). MNIST-family idx files: the original's
# size (a subset is smaller). CIFAR-10 batches: twice the original's 31 MB, room for a re-pickled
# copy (protocol 2 from Python 3 stores bytes as UTF-8 text, up to twice as long); batches.meta,
# 158 bytes originally: 64 kB.
IDX_SIZES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}
CIFAR_BATCH_BYTES = 64 << 20
CIFAR_META_BYTES = 64 << 10
CIFAR_BATCH_IMAGES = 10_000  # images of one original batch: an array beyond it is refused


def max_size(dataset: str, name: str) -> int:
    """The largest size in bytes that raw file `name` of `dataset` may have."""
    if dataset == "cifar10":
        return CIFAR_META_BYTES if name == "batches.meta" else CIFAR_BATCH_BYTES
    return IDX_SIZES[name]


# Where the files come from and what they are called: torchvision's dataset classes (their
# attributes only; their constructors are never called).
TORCHVISION_CLASS = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "cifar10": datasets.CIFAR10,
}


class Checksum(NamedTuple):
    """A raw file's md5 and whether it equals the original's."""

    md5: str
    original: bool


def _folder(dataset: str, root: Path) -> Path:
    """The folder of torchvision's layout that holds the dataset's raw files."""
    cls = TORCHVISION_CLASS[dataset]
    if dataset == "cifar10":
        return root / cls.base_folder
    return root / cls.__name__ / "raw"


def original_md5s(dataset: str) -> dict[str, str]:
    """md5 of each raw file of the original dataset, by file name, in a fixed order.

    CIFAR-10: torchvision's list (batches 1-5, test batch, then batches.meta). MNIST and
    Fashion-MNIST: the uncompressed idx files, in the order of torchvision's resources.
    """
    cls = TORCHVISION_CLASS[dataset]
    if dataset == "cifar10":
        files = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        return {name: md5 for name, md5 in files}
    names = [name.removesuffix(".gz") for name, _ in cls.resources]
    return {name: RAW_MD5[dataset][name] for name in names}


def raw_files(dataset: str, root: str | Path) -> dict[str, Path]:
    """The raw files `prepare` reads for `dataset` under `root`, by file name, in a fixed order."""
    folder = _folder(dataset, Path(root))
    return {name: folder / name for name in original_md5s(dataset)}


def read_raw(dataset: str, name: str, path: Path) -> bytes:
    """A raw file's bytes, read only when its size is at most `max_size` (read no further than
    that, should it grow meanwhile); else a DataError naming the file and both sizes."""
    limit = max_size(dataset, name)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            blob = f.read(limit + 1) if size <= limit else b""
    except OSError as err:
        raise DataError(f"{dataset}: {path} cannot be read ({err.strerror})") from None
    if size > limit or len(blob) > limit:
        raise DataError(
            f"{dataset}: {path} is {max(size, len(blob))} bytes, more than a {name} can be "
            f"({limit} bytes): not this dataset's file. Replace it with torchvision's."
        )
    return blob


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_md5s(dataset: str, root: str | Path) -> dict[str, str]:
    """md5 of each raw file under `root`, by file name: what to pin to accept a re-packed copy
    (data.accept_checksum_mismatch.<dataset>.<file>)."""
    return {name: _md5(path) for name, path in raw_files(dataset, root).items()}


def checksums(dataset: str, root: str | Path) -> dict[str, Checksum]:
    """Each raw file's md5 and whether it equals the original's (all True: a verified copy)."""
    originals = original_md5s(dataset)
    md5s = file_md5s(dataset, root)
    return {name: Checksum(md5, md5 == originals[name]) for name, md5 in md5s.items()}


def _outermost_new_folder(folder: Path) -> Path | None:
    """The outermost of `folder` and its parents that does not exist yet (None: `folder` does)."""
    new = None
    while not folder.exists():
        new, folder = folder, folder.parent
    return new


def _download(dataset: str, root: Path) -> None:
    """Download and unpack torchvision's archives (md5-checked by torchvision), without loading."""
    cls = TORCHVISION_CLASS[dataset]
    if dataset == "cifar10":
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        return
    for filename, md5 in cls.resources:
        errors = []
        for mirror in cls.mirrors:
            try:
                download_and_extract_archive(
                    f"{mirror}{filename}", str(_folder(dataset, root)), filename=filename, md5=md5
                )
                break
            except (RuntimeError, URLError) as err:
                errors.append(f"{mirror}: {type(err).__name__}: {err}")
        else:
            raise RuntimeError(f"{filename}: {'; '.join(errors)}")


def ensure_files(dataset: str, root: str | Path, download: bool) -> None:
    """Make sure the dataset's raw files are under `root`, downloading them when allowed.

    A failed download (e.g. offline) removes the folders it created, `root` too when it did not
    exist before, so a retry or a manual copy starts from a clean tree.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ParamError(
            "data.root", str(root), "a folder (torchvision's root, e.g. data/raw), not a file"
        )
    folder = _folder(dataset, root)
    for inner in [folder, *folder.relative_to(root).parents][:-1]:
        if (root / inner).exists() and not (root / inner).is_dir():
            raise DataError(f"{dataset}: {root / inner} is a file where the folder of "
                            f"torchvision's layout belongs; move it away")  # fmt: skip
    missing = [p for p in raw_files(dataset, root).values() if not p.is_file()]
    if not missing:
        return
    where = ", ".join(str(p) for p in missing)
    if not download:
        raise DataError(
            f"{dataset}: files missing under data.root = {str(root)!r}: {where}. Put torchvision's "
            f"files there (or set data.download: true on a machine with internet)."
        )
    new_folder = _outermost_new_folder(_folder(dataset, root))
    try:
        _download(dataset, root)
    except Exception as err:  # network errors come in many types; say what to do instead
        if new_folder is not None:
            shutil.rmtree(new_folder, ignore_errors=True)
        raise DataError(
            f"{dataset}: download into {str(root)!r} failed ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:300]}). "
            f"Offline, put torchvision's files there yourself: {where}"
        ) from err
    still_missing = [str(p) for p in missing if not p.is_file()]
    if still_missing:
        raise DataError(f"{dataset}: the download into {str(root)!r} did not give {still_missing}")


def _accept(dataset: str, paths: dict[str, Path], md5s: dict[str, str], pins: dict) -> list[str]:
    """Names of the files that differ from the originals but are pinned (accepted).

    Any other difference is a DataError naming each such file, its md5 and the expected ones.
    """
    originals = original_md5s(dataset)
    accepted, refused = [], []
    for name, md5 in md5s.items():
        if md5 == originals[name]:
            continue
        if md5 == pins.get(name):
            accepted.append(name)
        else:
            refused.append(name)
    if refused:
        what = "; ".join(
            f"{paths[name]} has md5 {md5s[name]}, not the original's {originals[name]}"
            + (f" or the pinned {pins[name]}" if name in pins else "")
            for name in refused
        )
        raise DataError(
            f"{dataset}: {what}. To use a re-packed or reconstructed copy, pin each file's md5 "
            f"under data.accept_checksum_mismatch.{dataset}.<file> (e.g. {refused[0]}: "
            f"{md5s[refused[0]]}); data.json then records the data as unverified."
        )
    return accepted


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


def _cifar_batch(path: Path, blob: bytes) -> tuple[np.ndarray, list[int]]:
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


def _cifar_classes(path: Path, blob: bytes) -> list[str]:
    """batches.meta's ``label_names``, checked."""
    meta = _unpickle(path, blob)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not (isinstance(names, list) and len(names) == 10 and all(type(n) is str for n in names)):
        raise DataError(
            f"cifar10: {path} is not CIFAR-10's batches.meta: expected a dict whose "
            f"'label_names' is a list of 10 strings."
        )
    return names


def _idx(dataset: str, path: Path, blob: bytes, images: bool) -> np.ndarray:
    """An uncompressed idx file: images (magic 2051, n x 28 x 28) or labels (magic 2049, n)."""
    magic, dims = (2051, 3) if images else (2049, 1)
    header = 4 * (1 + dims)
    fields = struct.unpack(f">{1 + dims}I", blob[:header]) if len(blob) >= header else ()
    shape = tuple(fields[1:])
    if not (
        fields
        and fields[0] == magic
        and (not images or shape[1:] == (28, 28))
        and len(blob) == header + math.prod(shape)
    ):
        what = "images (magic 2051, n x 28 x 28)" if images else "labels (magic 2049, n)"
        raise DataError(
            f"{dataset}: {path} is not an idx file of {what} whose sizes match its {len(blob)} "
            f"bytes (header read: {list(fields)})."
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)


def _read(
    dataset: str, paths: dict[str, Path], blobs: dict[str, bytes], train: bool
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A whole split from the files' bytes: uint8 images N x C x H x W, int64 labels, classes."""
    cls = TORCHVISION_CLASS[dataset]
    if dataset == "cifar10":
        names = [name for name, _ in (cls.train_list if train else cls.test_list)]
        batches = [_cifar_batch(paths[name], blobs[name]) for name in names]
        images = np.vstack([data for data, _ in batches]).reshape(-1, 3, 32, 32)
        labels = [label for _, batch_labels in batches for label in batch_labels]
        meta = cls.meta["filename"]
        classes = _cifar_classes(paths[meta], blobs[meta])
        return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), classes
    prefix = "train" if train else "t10k"
    image_name, label_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images = _idx(dataset, paths[image_name], blobs[image_name], images=True)
    labels = _idx(dataset, paths[label_name], blobs[label_name], images=False)
    if len(labels) != len(images) or labels.max(initial=0) >= 10:
        raise DataError(
            f"{dataset}: {paths[label_name]} does not hold one label in 0..9 for each of the "
            f"{len(images)} images of {paths[image_name]}."
        )
    images = torch.from_numpy(images.reshape(-1, 1, 28, 28).copy())  # copy: own, writable memory
    labels = torch.from_numpy(labels.astype(np.int64))
    return images, labels, list(cls.classes)


MIN_TRAIN_PER_CLASS = 10  # the selection split must leave the train split this many per class


def balanced_order(
    labels: torch.Tensor,
    size: int | None,
    num_classes: int,
    generator: torch.Generator,
    key: str,
    pool: str = "the split",
) -> torch.Tensor:
    """Indices of a seeded, class-balanced subset of `size` (all when None), in seeded order.

    Each class gets size // num_classes images, the first size % num_classes classes one more.
    A size the labels cannot give is a ParamError naming `key` and `pool` (what the labels are).
    """
    if size is None:
        return torch.randperm(len(labels), generator=generator)
    if size > len(labels):
        raise ParamError(key, size, f"at most the {len(labels)} images of {pool}")
    picked = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        want = size // num_classes + (1 if c < size % num_classes else 0)
        if want > len(members):
            raise ParamError(key, size, f"a size whose share of class {c} is <= {len(members)}")
        picked.append(members[torch.randperm(len(members), generator=generator)[:want]])
    chosen = torch.cat(picked)
    return chosen[torch.randperm(len(chosen), generator=generator)]


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (computed in float64)."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(dim=1).float(), x.std(dim=1).float()


def prepare(
    dataset: str,
    root: str | Path,
    download: bool,
    accept_checksum_mismatch: Mapping[str, Mapping[str, str]],
    selection_size: int,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    run: str = "run",
) -> tuple[dict, dict, dict, dict]:
    """Read (or download) a dataset and return (train split, selection split, test split, report
    for data.json).

    One generator seeded with `seed` draws, in this order: the selection split, `selection_size`
    class-balanced images of the raw training split; the train split, `train_size` class-balanced
    images (all when None) of the raw training images the selection left; the test split,
    `test_size` of the raw test split (all when None). Each split's ``index`` holds its images'
    positions in the raw split they came from, so the selection and train indices never meet.
    The channel mean and std are the train split's (without the selection images).

    Every raw file must equal the original (md5) or the md5 pinned for it in
    ``accept_checksum_mismatch[dataset][file name]`` (the params check has judged the pins'
    form and file names); all md5s are checked before any file is parsed. The report lists each
    file's md5 under ``files``, and each split's size and class counts.
    """
    root = Path(root)
    pins = (accept_checksum_mismatch or {}).get(dataset) or {}  # checked with the params
    ensure_files(dataset, root, download)
    paths = raw_files(dataset, root)
    blobs = {name: read_raw(dataset, name, path) for name, path in paths.items()}
    md5s = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    mismatches = _accept(dataset, paths, md5s, pins)
    generator = torch.Generator().manual_seed(seed)
    key = f"runs.{run}"
    images, labels, classes = _read(dataset, paths, blobs, train=True)
    selection = balanced_order(
        labels,
        selection_size,
        len(classes),
        generator,
        f"{key}.selection_size",
        "the raw training split",
    )
    left = torch.ones(len(labels), dtype=torch.bool)
    left[selection] = False
    rest = torch.nonzero(left).flatten()  # the raw training images the selection left, in order
    remaining = torch.bincount(labels[rest], minlength=len(classes))
    if remaining.min() < MIN_TRAIN_PER_CLASS:
        c = int(remaining.argmin())
        raise ParamError(
            f"{key}.selection_size",
            selection_size,
            f"a size that leaves at least {MIN_TRAIN_PER_CLASS} images of every class to train on "
            f"(class {c} would keep {int(remaining[c])} of the raw training split's "
            f"{int((labels == c).sum())})",
        )
    train = rest[
        balanced_order(
            labels[rest],
            train_size,
            len(classes),
            generator,
            f"{key}.train_size",
            f"the raw training split left after the {len(selection)} images of the selection "
            f"split ({key}.selection_size)",
        )
    ]
    test_images, test_labels, _ = _read(dataset, paths, blobs, train=False)
    test = balanced_order(
        test_labels, test_size, len(classes), generator, f"{key}.test_size", "the raw test split"
    )
    del blobs  # the raw bytes are parsed; free them before the float64 statistics
    splits, report = {}, {"dataset": dataset, "root": str(root)}
    for split, order, (split_images, split_labels) in (
        ("train", train, (images, labels)),
        ("selection", selection, (images, labels)),
        ("test", test, (test_images, test_labels)),
    ):
        picked = split_labels[order].contiguous()
        splits[split] = {
            "images": split_images[order].contiguous(),
            "labels": picked,
            "index": order.to(torch.int64).contiguous(),
            "classes": classes,
        }
        report[f"{split}_size"] = len(picked)
        report[f"{split}_class_counts"] = torch.bincount(picked, minlength=len(classes)).tolist()
    mean, std = channel_stats(splits["train"]["images"])
    for split in splits.values():
        split["mean"], split["std"] = mean, std
    report.update(
        checksums_verified=not mismatches,
        checksum_mismatches=mismatches,
        files=md5s,
        classes=classes,
        image_shape=list(splits["train"]["images"].shape[1:]),
        mean=[round(v, 6) for v in mean.tolist()],
        std=[round(v, 6) for v in std.tolist()],
    )
    return splits["train"], splits["selection"], splits["test"], report
