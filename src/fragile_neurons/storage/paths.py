"""Where each stage reads and writes, per run: the one place that mirrors dvc.yaml's paths.

Records (records.py) live under data/<stage>/<run>/, named for what they hold; checkpoints under
models/<run>/. What a stage writes for people (its details JSON, plot CSVs, figures, training
curves) goes to its own folder of cached outputs, data/views/<run>/<stage>/ (`view`), so that
DVC's run-cache can restore every stage; the publish stage copies each of these files to where
git, review and `dvc metrics`/`dvc plots` read it (`published`): metrics/<run>/<stage>.json (the
details) and plots/<run>/. A stage's headline, DVC's metrics, is written in place,
metrics/<run>/<stage>/. No stage reads a file under plots/, metrics/ or data/views/ (publish
copies their bytes).
"""

from __future__ import annotations

from pathlib import Path


def params_checked() -> Path:
    """The check stage's output, which every other stage depends on (its content is constant)."""
    return Path("data/params.ok")


# The prepared splits (datasets.splits.draw_splits): train (training only), selection (carved out
# of the raw training split, never trained on: the scan set S and everything that chooses neurons)
# and test (evaluation only).
SPLITS = ("train", "selection", "test")


def prepared(run: str, split: str) -> Path:
    """A prepared split, one of SPLITS."""
    if split not in SPLITS:
        raise ValueError(f"no prepared split {split!r}; the splits are {SPLITS}")
    return Path("data/prepared") / run / f"{split}.pt"


def model(run: str) -> Path:
    return Path("models") / run / "model.pt"


CONTROLS = ("reference", "placebo")


def control(run: str, key: str) -> Path:
    """A control network (network/controls.py): the reference network f_ref or the placebo
    network f_ref2 (method.md, Notation and section 2), or the note that the run has none."""
    if key not in CONTROLS:
        raise ValueError(f"no control network {key!r}; the controls are {CONTROLS}")
    return Path("models") / run / f"{key}.pt"


def reference(run: str) -> Path:
    """The reference network f_ref, or the note that the run has none."""
    return control(run, "reference")


def placebo(run: str) -> Path:
    """The placebo network f_ref2, or the note that the run has none."""
    return control(run, "placebo")


def hardened(run: str) -> Path:
    return Path("models") / run / "hardened.pt"


def sweep_record(run: str) -> Path:
    """records.FGSMSweep of the whole test split: attack.json's FGSM numbers, and in evaluate the
    `original` variant under FGSM and the transferred attack."""
    return Path("data/attack") / run / "sweep.pt"


def scan_sweep_record(run: str) -> Path:
    """records.FGSMSweep of the scan set S (the first `scan.samples` images of the selection
    split): the signs of the targeting and of the scan's transferred attack."""
    return Path("data/attack") / run / "scan_sweep.pt"


def layer_record(run: str) -> Path:
    """records.ScanLayer: the scanned layer, resolved by the attack stage."""
    return Path("data/attack") / run / "layer.pt"


def targeting_record(run: str) -> Path:
    """records.Targeting: T, R, D and m of the scanned layer's neurons."""
    return Path("data/attack") / run / "targeting.pt"


def scan_record(run: str) -> Path:
    """records.ScanMeasurements: the scan's counts and losses, reused when only the labelling
    changes."""
    return Path("data/scan") / run / "measurements.pt"


def labels_record(run: str) -> Path:
    """records.Labels: phi, impacts and labels per neuron."""
    return Path("data/label") / run / "labels.pt"


def gains_record(run: str) -> Path:
    """records.Gains: the hardening's and the inverse control's gains at full precision."""
    return Path("data/harden") / run / "gains.pt"


def original_attacks_record(run: str) -> Path:
    """records.OriginalAttacks: the original network attacked on the test split, per image."""
    return Path("data/baseline") / run / "original.pt"


# Each stage's files for people, by name, in its folder data/views/<run>/<stage>/ (its details
# JSON first; each figure as PNG and SVG, io.save_figure): the publish stage copies each to
# `published(run, name)`
PUBLISHED: dict[str, tuple[str, ...]] = {
    "prepare": ("data.json",),
    "train": ("train.json", "train"),  # train/: DVCLive's curves, a folder
    "reference": ("reference.json",),
    "placebo": ("placebo.json",),
    "attack": ("attack.json", "attack.csv", "targeting.csv", "examples.png", "examples.svg"),
    "scan": ("scan.json", "scan.csv"),
    "label": ("label.json", "impact.png", "impact.svg"),
    "correlate": ("correlate.json", "correlate.csv", "correlate.png", "correlate.svg", "label.csv"),
    "harden": ("harden.json", "gains.csv", "filters.png", "filters.svg"),
    "evaluate": ("evaluate.json", "evaluate.csv", "robustness.png", "robustness.svg"),
}


def views(run: str, stage: str) -> Path:
    """The folder of the stage's files for people: a cached output of the stage."""
    if stage not in PUBLISHED:
        raise ValueError(f"stage {stage!r} writes no files for people; those that do: "
                         f"{tuple(PUBLISHED)}")  # fmt: skip
    return Path("data/views") / run / stage


def view(run: str, stage: str, name: str) -> Path:
    """One of the stage's files for people (PUBLISHED), where the stage writes it."""
    if name not in PUBLISHED.get(stage, ()):
        raise ValueError(f"stage {stage!r} writes no file {name!r} for people")
    return views(run, stage) / name


def published(run: str, name: str) -> Path:
    """Where the publish stage copies the view `name`: a details JSON to metrics/<run>/, the rest
    (CSVs, PNGs and SVGs, the training curves) to plots/<run>/."""
    return Path("metrics" if name.endswith(".json") else "plots") / run / name


def details(run: str, stage: str) -> Path:
    """Where the stage writes its details, everything it measured (its view of a JSON)."""
    return view(run, stage, PUBLISHED[stage][0])


def metrics(run: str, name: str) -> Path:
    """The published details `name` (a stage's, or `data` of prepare): everything it measured,
    for people (committed, not a DVC metric)."""
    return Path("metrics") / run / f"{name}.json"


def headline(run: str, stage: str) -> Path:
    """The stage's headline, its DVC metrics: a JSON file per quantity (headline.py)."""
    return Path("metrics") / run / stage


# the folders under data/ that hold a stage's records: folder -> stage
RECORD_FOLDERS = {
    "prepared": "prepare",
    "attack": "attack",
    "scan": "scan",
    "label": "label",
    "harden": "harden",
    "baseline": "baseline",
}


def producer(path: str | Path) -> str | None:
    """The `stage@run` of dvc.yaml that writes `path` (None for a path no stage writes): what to
    rerun when a record is missing, stale or corrupt."""
    parts = Path(path).parts
    if len(parts) >= 4 and parts[:2] == ("data", "views") and parts[3] in PUBLISHED:
        return f"{parts[3]}@{parts[2]}"
    if len(parts) >= 3 and parts[0] == "data" and parts[1] in RECORD_FOLDERS:
        return f"{RECORD_FOLDERS[parts[1]]}@{parts[2]}"
    if len(parts) == 3 and parts[0] == "models":
        writers = {
            "model.pt": "train",
            "reference.pt": "reference",
            "placebo.pt": "placebo",
            "hardened.pt": "harden",
        }
        return f"{writers[parts[2]]}@{parts[1]}" if parts[2] in writers else None
    return None
