"""Where each stage reads and writes, per run: the one place that mirrors dvc.yaml's paths.

Records (records.py) live under data/<stage>/<run>/, named for what they hold; checkpoints under
models/<run>/; metrics JSON and plot CSVs/PNGs, for people and `dvc metrics`/`dvc plots`, under
metrics/<run>/<stage>.json (the details), metrics/<run>/<stage>/ (the headline, DVC's metrics) and
plots/<run>/. No stage reads a file under plots/ or metrics/.
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


def metrics(run: str, stage: str) -> Path:
    """The stage's details: everything it measured, for people (committed, not a DVC metric)."""
    return Path("metrics") / run / f"{stage}.json"


def headline(run: str, stage: str) -> Path:
    """The stage's headline, its DVC metrics: a JSON file per quantity (headline.py)."""
    return Path("metrics") / run / stage


def plot(run: str, name: str) -> Path:
    return Path("plots") / run / name


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
    if len(parts) >= 3 and parts[0] == "data" and parts[1] in RECORD_FOLDERS:
        return f"{RECORD_FOLDERS[parts[1]]}@{parts[2]}"
    if len(parts) == 3 and parts[0] == "models":
        writers = {"model.pt": "train", "reference.pt": "reference", "hardened.pt": "harden"}
        return f"{writers[parts[2]]}@{parts[1]}" if parts[2] in writers else None
    return None
