"""Writing outputs atomically and reading them back safely.

Every file a stage writes goes to a temporary file in the same folder first and is renamed into
place, so an interrupted stage never leaves a half-written output. Checkpoints and records are
plain dictionaries of tensors and names, loaded with ``weights_only=True``: a file that asks the
unpickler for anything else (code) is refused, and so is a missing, truncated or corrupt file,
each with one line that names the file and the stage that rewrites it.

torch is imported where tensors are read or written, so the params check imports none of it.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..running import origin
from ..running.errors import DataError, not_regular
from .paths import prepared, producer

# Why a write can fail that is no bug: the disk, the folder's permissions, a limit. Each is one
# line naming the file (a DataError); the output it would replace is left as it was.
WRITE_ERRORS = {  # errno: (what happened, what to do)
    errno.EACCES: ("permission denied", "give this user write access to the folder"),
    errno.EPERM: ("operation not permitted (an immutable file or folder?)", "make it writable"),
    errno.EROFS: ("the file system is read-only", "mount it read-write or move the project"),
    errno.EFBIG: ("larger than the file-size limit (ulimit -f)", "lift the limit"),
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is exhausted", "free some space"),
    errno.ENOTDIR: ("a file stands where a folder of the path belongs", "move it away"),
    errno.EISDIR: ("a folder stands where the file belongs", "move it away"),
}


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`. The temporary file
    is removed whatever happens (an error, SIGTERM or Ctrl-C: see stage.py); a write that the
    disk, a permission or a limit refuses is a one-line DataError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        what, remedy = WRITE_ERRORS[err.errno]
        raise DataError(
            f"cannot write {path}: {what}; nothing of it was written (what was there is as it "
            f"was). {remedy[0].upper()}{remedy[1:]}, then rerun the stage"
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_with(path: str | Path, write: Callable[[Path], Any]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def finite_or_none(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """`obj` as indented JSON, NaN and infinities as null (undefined stays undefined)."""
    text = json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n"
    write_with(path, lambda p: p.write_text(text))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | Path, frame) -> None:
    """A pandas DataFrame as CSV, floats to 6 significant digits (stable, readable diffs)."""
    write_with(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))


FIGURE_DPI = 200  # the PNGs' resolution, fit for print (the SVGs are vectors)
# Equal plots give equal bytes: no version or date in either file, and the SVG's element ids
# hashed with a fixed salt (matplotlib salts them with a random uuid otherwise); text as paths,
# so the SVG needs no font installed wherever it is read.
SVG_RC = {"svg.hashsalt": "fragile-neurons", "svg.fonttype": "path"}


def save_figure(path: str | Path, fig) -> None:
    """A matplotlib figure as PNG at FIGURE_DPI (`path`, a .png) and as SVG beside it (the same
    stem, .svg), each cropped to what is drawn, legends outside the axes included, and without
    version or date metadata, so equal plots give equal bytes. The figure is closed."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"a figure is saved as name.png and name.svg, not as {path.name}")
    files = {
        path: {"format": "png", "dpi": FIGURE_DPI, "metadata": {"Software": None}},
        path.with_suffix(".svg"): {"format": "svg", "metadata": {"Date": None, "Creator": None}},
    }
    with matplotlib.rc_context(SVG_RC):
        for target, options in files.items():
            write_with(target, lambda p, o=options: fig.savefig(
                p, bbox_inches="tight", pad_inches=0.05, **o))  # fmt: skip
    plt.close(fig)


def save_tensors(path: str | Path, obj: dict) -> None:
    """torch.save, atomically, with the stage's `origin` (running/origin.py) beside `obj`'s
    fields within a stage. Same tensors give the same bytes: torch.save names the records of
    its zip archive after the file, so it writes to memory first, not to the temporary file."""
    import torch

    stamped = origin.stamp(obj)
    if stamped is not None:  # within a stage: where the file belongs (running/origin.py)
        obj = {**obj, "origin": stamped}
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    write_with(path, lambda p: p.write_bytes(data))


def rerun_advice(path: str | Path) -> str:
    """What to do about a bad input file: rerun the stage that writes it."""
    stage = producer(path)
    return f"rerun `dvc repro --force {stage}`" if stage else "replace it"


# The most bytes a record of this pipeline unpacks to: twice one byte per pixel of the largest
# split there can be (MNIST's 60000 training images, at CIFAR-10's 3 x 32 x 32): a prepared split
# holds its images as uint8 and an FGSM sweep one int8 sign per pixel, and everything else a
# record holds (labels, logits, per-neuron numbers) is small beside them. Checkpoints are
# bounded tighter, by what their architecture holds (models.load_checkpoint).
MAX_RECORD_BYTES = 2 * 60_000 * 3 * 32 * 32
# The most bytes of a file's pickled structure (data.pkl: names, specs, lists per epsilon or
# per neuron; a few kB in practice): unpickled, a pickle of small numbers takes several times
# its size, so it is bounded on its own.
MAX_PICKLE_BYTES = 16 << 20


def _torch_load(path: Path, map_location: str) -> Any:
    """torch.load with ``weights_only=True``; any failure is the one-line DataError."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a corrupt file fails torch.load in many ways; each is this one line
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and found:
            raise DataError(
                f"{path} asks the unpickler for {found.group(1)!r}, which a checkpoint or record "
                f"of this pipeline never holds; refused to load it (nothing in it ran). If you "
                f"did not put it there, {rerun_advice(path)}"
            ) from None
        first = " ".join(str(err).split()).split(". ")[0][:160]
        raise DataError(  # never torch's advice to switch weights_only off
            f"{path} is truncated or corrupt ({type(err).__name__}: {first}): {rerun_advice(path)}"
        ) from None


def _tensors(blob: Any) -> Iterator:
    """Every tensor in a loaded structure of dicts, lists and tuples (iteratively: no depth
    limit of Python's recursion applies)."""
    import torch

    stack = [blob]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def load_metadata(path: str | Path, limit: int = MAX_RECORD_BYTES) -> Any:
    """What `load_tensors` would return, its tensors on torch's meta device: every tensor's
    dtype, shape and storage size as the file declares them, with no storage allocated.

    Checked first, from the zip archive's directory alone: a regular file; a zip archive as
    torch.save writes it (its entries stored, not compressed); at most `limit` bytes once
    unpacked, its pickle at most MAX_PICKLE_BYTES. Then no tensor's storage may claim more bytes
    than the archive holds. Anything wrong is a one-line DataError naming the file (before any
    storage is read)."""
    path = Path(path)
    found = not_regular(path)
    if found == "missing":
        raise DataError(f"{path} is missing: {rerun_advice(path)}")
    if found is not None:
        raise DataError(f"{path} is {found}, not a regular file: {rerun_advice(path)}")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        first = " ".join(str(err).split())[:160]
        raise DataError(
            f"{path} is truncated or corrupt (not a zip archive as torch.save writes: "
            f"{type(err).__name__}: {first}): {rerun_advice(path)}"
        ) from None
    unpacked = sum(e.file_size for e in entries)
    if unpacked > limit:
        raise DataError(
            f"{path} unpacks to {unpacked} bytes, more than a file of this pipeline holds "
            f"({limit} bytes): not a file this pipeline wrote; {rerun_advice(path)}"
        )
    pickled = max((e.file_size for e in entries if e.filename.endswith("/data.pkl")), default=0)
    if pickled > MAX_PICKLE_BYTES:
        raise DataError(
            f"{path} holds a pickled structure of {pickled} bytes, more than a file of this "
            f"pipeline holds ({MAX_PICKLE_BYTES} bytes): not a file this pipeline wrote; "
            f"{rerun_advice(path)}"
        )
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise DataError(
            f"{path} holds compressed entries ({', '.join(packed[:3])}), which torch.save never "
            f"writes: not a file this pipeline wrote; {rerun_advice(path)}"
        )
    blob = _torch_load(path, "meta")
    data = sum(e.file_size for e in entries if "/data/" in e.filename)
    for tensor in _tensors(blob):
        claimed = tensor.untyped_storage().nbytes()
        if claimed > data:
            raise DataError(
                f"{path}: a {tensor.dtype} tensor of shape {tuple(tensor.shape)} claims a "
                f"storage of {claimed} bytes, more than the archive's {data} bytes of data: "
                f"not a file this pipeline wrote; {rerun_advice(path)}"
            )
    return blob


def load_tensors(
    path: str | Path, keys: tuple[str, ...] = (), limit: int = MAX_RECORD_BYTES
) -> dict:
    """torch.load restricted to tensors and plain containers (``weights_only=True``).

    Returns a dict holding at least `keys`. Anything else (a missing, truncated or corrupt file,
    one that is not a regular file, one that asks for code, one of another structure, one that
    unpacks to more than `limit` bytes or whose tensors claim more than it holds: see
    `load_metadata`, which runs first) is a one-line DataError naming the file and the stage
    that rewrites it. The message never suggests switching the restriction off.
    """
    path = Path(path)
    load_metadata(path, limit)
    blob = _torch_load(path, "cpu")
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise DataError(
            f"{path} lacks {missing}: not a file this pipeline wrote; {rerun_advice(path)}"
        )
    return blob


def admit(path: str | Path, blob: Any) -> None:
    """Within a stage, the last check of a file read and checked: its origin (running/origin.py)
    must be of the stage's run, dataset and classes and agree with the other files the stage
    reads; else a one-line DataError naming the file (and the other)."""
    found = blob.get("origin") if isinstance(blob, dict) else None
    origin.admit(path, found, rerun_advice(path))


def load_split(path: str | Path, dataset: str | None = None) -> dict:
    """A prepared split (see datasets.splits): uint8 images N x C x H x W, int64 labels N, int64
    index N (distinct positions >= 0 in the raw split the images came from), the class names, and
    the per-channel mean and std (C values each, finite, std > 0); with `dataset`, images and
    classes of that dataset. Anything else is a one-line DataError naming the file."""
    import torch

    from ..running.config import CLASSES, IMAGE_SHAPES, RAW_SIZES

    split = load_tensors(path, keys=("images", "labels", "index", "classes", "mean", "std"))
    images, labels, index = split["images"], split["labels"], split["index"]
    ok = isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4
    ok = ok and isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    ok = ok and labels.shape == images.shape[:1] and isinstance(split["classes"], list)
    ok = (
        ok
        and bool(len(labels))
        and 0 <= int(labels.min()) <= int(labels.max()) < len(split["classes"])
    )
    ok = ok and isinstance(index, torch.Tensor) and index.dtype == torch.int64
    ok = ok and index.shape == labels.shape and int(index.min()) >= 0
    ok = ok and len(torch.unique(index)) == len(index)
    if not ok:
        raise DataError(
            f"{path} is not a prepared split (uint8 images N x C x H x W, int64 labels in "
            f"[0, classes), int64 index of N distinct raw positions); {rerun_advice(path)}"
        )
    channels, side = images.shape[1], images.shape[2]
    for name in ("mean", "std"):
        stat = split[name]
        if not (
            isinstance(stat, torch.Tensor)
            and stat.is_floating_point()
            and stat.shape == (channels,)
            and bool(torch.isfinite(stat).all())
            and (name == "mean" or bool((stat > 0).all()))
        ):
            raise DataError(
                f"{path}: its {name} is not {channels} finite numbers"
                + (" > 0" if name == "std" else "")
                + f" (one per channel); {rerun_advice(path)}"
            )
    if dataset is not None:
        want = (IMAGE_SHAPES[dataset][0], IMAGE_SHAPES[dataset][1], IMAGE_SHAPES[dataset][1])
        if tuple(images.shape[1:]) != want or len(split["classes"]) != CLASSES:
            raise DataError(
                f"{path} holds {channels} x {side} x {images.shape[3]} images of "
                f"{len(split['classes'])} classes, not {dataset}'s {want[0]} x {want[1]} x "
                f"{want[2]} of {CLASSES}; {rerun_advice(path)}"
            )
        raw = "test" if Path(path).stem == "test" else "train"
        size = RAW_SIZES[dataset][raw]
        if int(index.max()) >= size:
            raise DataError(
                f"{path} names raw position {int(index.max())}, beyond {dataset}'s raw {raw} "
                f"split of {size} images; {rerun_advice(path)}"
            )
    admit(path, split)
    return split


def check_disjoint(path: str | Path, split: dict, other_path: str | Path, other: dict) -> None:
    """Two prepared splits drawn from the same raw split (the selection and train splits: the
    selection split is never trained on) must share no raw position; else a one-line DataError
    naming both files."""
    import numpy as np

    shared = np.intersect1d(split["index"].numpy(), other["index"].numpy())
    if len(shared):
        raise DataError(
            f"{path} and {other_path} share {len(shared)} raw images (positions "
            f"{shared[:3].tolist()}...): the selection split must never be trained on; "
            f"{rerun_advice(path)}"
        )


def load_training_splits(run: str, dataset: str) -> tuple[dict, dict]:
    """Run `run`'s prepared train and test splits, the train split checked against the selection
    split (`check_disjoint`): what the train and reference stages fit on."""
    train_path, selection_path = prepared(run, "train"), prepared(run, "selection")
    train = load_split(train_path, dataset)
    check_disjoint(train_path, train, selection_path, load_split(selection_path, dataset))
    return train, load_split(prepared(run, "test"), dataset)
