"""The raw files of MNIST, Fashion-MNIST and CIFAR-10 in torchvision's on-disk layout: where they
lie under a root folder, their md5s against the originals' (or a copy's md5 pinned in the params),
their download through torchvision when they are absent, and reading each one within the size it
may have (`max_size`: a file beyond it is refused unread). The files are parsed elsewhere
(`cifar`, `idx`, `raw`), never by torchvision's dataset classes: CIFAR10 unpickles its batches
with the general unpickler (a tampered batch would run code), and MNIST loads legacy
``processed/*.pt`` files with ``torch.load`` when they exist.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import NamedTuple
from urllib.error import URLError

from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive

from ..running.errors import DataError, ParamError, not_regular

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
    for path in raw_files(dataset, root).values():
        found = not_regular(path)
        if found not in (None, "missing"):  # refused before it is opened: a FIFO would hang
            raise DataError(
                f"{dataset}: {path} is {found}, not a regular file; put torchvision's file there"
            )
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


def accept_pinned(
    dataset: str, paths: dict[str, Path], md5s: dict[str, str], pins: dict
) -> list[str]:
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
