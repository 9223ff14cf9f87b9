"""Where a file belongs: the origin every record carries, and the check of it on reading.

Within a stage (`within`, which the stage frame enters for the stage's run), every file the package
writes with torch.save (splits, checkpoints, records: `io.save_tensors`) carries an `origin`
(`stamp`): the stage's run and dataset, the class names of its images, and `inputs`, the md5 of
every such file the stage had read before writing it, by path. Every such file the stage reads is
checked once its own checks passed and before anything of it is used (`admit`, through `io.admit`:
splits, checkpoints, records): it must carry an origin of the stage's run, dataset and class names,
and agree with every other file the stage reads: where one of them was made from a file the stage
reads too, that file must be the one it was made from (the same md5). Anything else is one line, a
DataError naming the file, what it says and what the stage expected, whatever the order of the
reads. So a record copied from another run (another dataset, or a twin of the same dataset), or left
from before an upstream file changed, is refused when a stage is run directly, as DVC's md5s refuse
it under `dvc repro`.

Outside a stage (the API, tests that build records by hand) nothing is stamped or checked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError

FIELDS = ("run", "dataset", "classes", "inputs")


@dataclass
class Tally:
    """One stage's run and what it has read: md5 by path, and what each file says it was made
    from (path: (md5, the file that says so))."""

    run: str
    dataset: str
    classes: list[str] | None = None
    read: dict[str, str] = field(default_factory=dict)
    claims: dict[str, tuple[str, str]] = field(default_factory=dict)


_current: Tally | None = None


@contextmanager
def within(run: str, dataset: str) -> Iterator[Tally]:
    """The block runs as a stage of `run` (of `dataset`): files written are stamped, files read
    are checked."""
    global _current
    previous, _current = _current, Tally(run, dataset)
    try:
        yield _current
    finally:
        _current = previous


def key(path: str | Path) -> str:
    """A path as origins name it: relative to the working directory (the project root) where it
    lies below it, with forward slashes."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return Path(absolute if relative.startswith("..") else relative).as_posix()


def md5(path: str | Path) -> str:
    """The md5 of a file's bytes (as DVC computes it), read in blocks: bounded memory."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def stamp(blob: dict) -> dict | None:
    """The origin of a file the stage writes with `blob`'s fields (None outside a stage): its
    class names are the blob's `classes` where it has them (a split), else those of the files
    read."""
    if _current is None:
        return None
    classes = blob.get("classes")
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        _current.classes = _current.classes or list(classes)
    else:
        classes = _current.classes
    return {
        "run": _current.run,
        "dataset": _current.dataset,
        "classes": None if classes is None else list(classes),
        "inputs": dict(sorted(_current.read.items())),
    }


def _shown(values: Any) -> str:
    if isinstance(values, list) and len(values) > 3:
        return repr(values[:3])[:-1] + f", ... ({len(values)})]"
    return repr(values)


def admit(path: str | Path, origin: Any, advice: str) -> None:
    """Check the origin of a file the stage reads (`origin`: what it carries) against the stage's
    run, dataset and class names and against every other file it reads; DataError (one line,
    ending in `advice`) where it does not belong. Outside a stage, nothing."""
    if _current is None:
        return
    name = key(path)
    if not isinstance(origin, dict) or set(origin) != set(FIELDS):
        raise DataError(
            f"{name} carries no origin (the run, dataset and inputs it was made from): written "
            f"by an older version or not by this pipeline; {advice}"
        )
    inputs = origin["inputs"]
    if not isinstance(inputs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()
    ):
        raise DataError(f"{name}: its origin's inputs are not md5s by path; {advice}")
    tally = _current
    if name in tally.read:  # read before, and admitted then
        return
    if (origin["run"], origin["dataset"]) != (tally.run, tally.dataset):
        raise DataError(
            f"{name} was made for run {origin['run']!r} (dataset {origin['dataset']!r}), not "
            f"for this stage's run {tally.run!r} (dataset {tally.dataset!r}); {advice}"
        )
    classes = origin["classes"]
    if classes is not None and tally.classes is not None and classes != tally.classes:
        raise DataError(
            f"{name} is of the classes {_shown(classes)}, not {_shown(tally.classes)} as the "
            f"files read before it; {advice}"
        )
    if classes is not None and tally.classes is None:
        tally.classes = list(classes)
    digest = md5(path)
    claimed = tally.claims.get(name)
    if claimed is not None and claimed[0] != digest:
        raise DataError(
            f"{claimed[1]} was made from another {name} (md5 {claimed[0]}) than the one here "
            f"(md5 {digest}): {name} changed after it; rerun the stages after the one that "
            f"writes {name}"
        )
    for source, want in inputs.items():
        got = tally.read.get(source)
        if got is not None and got != want:
            raise DataError(
                f"{name} was made from another {source} (md5 {want}) than the one here (md5 "
                f"{got}): {source} changed after it; {advice}"
            )
    for source, want in inputs.items():
        other = tally.claims.get(source)
        if other is not None and other[0] != want:
            raise DataError(
                f"{name} and {other[1]} were made from two versions of {source} (md5 {want} "
                f"and {other[0]}): one of them is stale; {advice}"
            )
    tally.read[name] = digest
    for source, want in inputs.items():
        tally.claims.setdefault(source, (want, name))
