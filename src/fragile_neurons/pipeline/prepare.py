"""The prepare stage: read (or download) the run's dataset in torchvision's on-disk layout, check
every raw file's md5 against the original's or a pinned copy's, and draw the run's splits
(`datasets.splits`: selection, train and test, uint8 tensors in a fixed, seeded order).

Every raw file must equal the original (md5) or the md5 pinned for it in
``data.accept_checksum_mismatch.<dataset>.<file name>`` (the params check has judged the pins'
form and file names); all md5s are checked before any file is parsed, and each file is read once,
within the size it may have: its md5 and its parse come from the same bytes. data.json lists each
file's md5, whether the copy is verified, and each split's size and class counts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..datasets.files import accept_pinned, ensure_files, raw_files, read_raw
from ..datasets.raw import read_split
from ..datasets.splits import draw_splits
from ..storage import io, paths


@dataclass(frozen=True)
class Settings:
    """What prepare reads of params.yaml: `data` and the run's dataset and sizes, and `seed`."""

    dataset: str
    root: Path
    download: bool
    pins: dict  # data.accept_checksum_mismatch.<dataset>: file name -> accepted md5
    selection_size: int
    train_size: int | None
    test_size: int | None
    seed: int
    run: str  # the run's name, for messages

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        data, run = params["data"], params["runs"][name]
        return cls(
            dataset=run["dataset"],
            root=Path(data["root"]),
            download=data["download"],
            pins=(data["accept_checksum_mismatch"] or {}).get(run["dataset"]) or {},
            selection_size=run["selection_size"],
            train_size=run["train_size"],
            test_size=run["test_size"],
            seed=params["seed"],
            run=name,
        )


class Inputs(NamedTuple):
    paths: dict[str, Path]  # each raw file, by name
    blobs: dict[str, bytes]  # its bytes, read once
    md5s: dict[str, str]
    mismatches: list[str]  # files that differ from the original but are pinned


class Prepared(NamedTuple):
    train: dict
    selection: dict
    test: dict
    report: dict  # data.json


def load(ctx, settings: Settings) -> Inputs:
    """The raw files (downloaded first when absent and allowed), read within their sizes, and
    their md5s checked against the originals' and the pins (a DataError naming each file that
    matches neither)."""
    ensure_files(settings.dataset, settings.root, settings.download)
    files = raw_files(settings.dataset, settings.root)
    blobs = {name: read_raw(settings.dataset, name, path) for name, path in files.items()}
    md5s = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    mismatches = accept_pinned(settings.dataset, files, md5s, settings.pins)
    return Inputs(files, blobs, md5s, mismatches)


def run(inputs: Inputs, settings: Settings, progress=None) -> Prepared:
    """The splits and data.json's report from the raw files' bytes."""
    dataset = settings.dataset
    images, labels, classes = read_split(dataset, inputs.paths, inputs.blobs, train=True)
    test_images, test_labels, _ = read_split(dataset, inputs.paths, inputs.blobs, train=False)
    inputs.blobs.clear()  # the raw bytes are parsed; free them before the float64 statistics
    splits = draw_splits(
        (images, labels),
        (test_images, test_labels),
        classes,
        settings.selection_size,
        settings.train_size,
        settings.test_size,
        settings.seed,
        settings.run,
    )
    report = {"dataset": dataset, "root": str(settings.root)}
    for name, split in splits.items():
        report[f"{name}_size"] = len(split["labels"])
        counts = torch.bincount(split["labels"], minlength=len(classes))
        report[f"{name}_class_counts"] = counts.tolist()
    mean, std = splits["train"]["mean"], splits["train"]["std"]
    report.update(
        checksums_verified=not inputs.mismatches,
        checksum_mismatches=inputs.mismatches,
        files=inputs.md5s,
        classes=classes,
        image_shape=list(splits["train"]["images"].shape[1:]),
        mean=[round(v, 6) for v in mean.tolist()],
        std=[round(v, 6) for v in std.tolist()],
    )
    return Prepared(splits["train"], splits["selection"], splits["test"], report)


def write(ctx, outputs: Prepared) -> None:
    """data/prepared/<run>/{train,selection,test}.pt and data/views/<run>/prepare/data.json."""
    for split in paths.SPLITS:
        io.save_tensors(paths.prepared(ctx.name, split), getattr(outputs, split))
    io.write_json(paths.details(ctx.name, "prepare"), outputs.report)
