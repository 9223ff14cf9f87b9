"""Where each stage reads and writes, per run: the one place that mirrors dvc.yaml's paths."""

from __future__ import annotations

from pathlib import Path


def params_checked() -> Path:
    """The check stage's output, which every other stage depends on (its content is constant)."""
    return Path("data/params.ok")


def prepared(run: str, split: str) -> Path:
    return Path("data/prepared") / run / f"{split}.pt"


def model(run: str) -> Path:
    return Path("models") / run / "model.pt"


def hardened(run: str) -> Path:
    return Path("models") / run / "hardened.pt"


def attack_sweep(run: str) -> Path:
    """The attack stage's FGSM sweep of the whole test split (signs, clean logits, accuracies):
    the scan's signs (its first `scan.samples` rows), and in evaluate the `original` variant
    under FGSM and the source of the transferred attack."""
    return Path("data/attack") / run / "sweep.pt"


def scan_cache(run: str) -> Path:
    """The scan's raw per-neuron measurements, reused when only the labelling changes."""
    return Path("data/scan") / run / "measurements.pt"


def metrics(run: str, stage: str) -> Path:
    return Path("metrics") / run / f"{stage}.json"


def plot(run: str, name: str) -> Path:
    return Path("plots") / run / name


def producer(path: str | Path) -> str | None:
    """The `stage@run` of dvc.yaml that writes `path` (None for a path no stage writes): what to
    rerun when a record is missing, stale or corrupt."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[0] == "data" and parts[1] in ("prepared", "attack", "scan"):
        stage = {"prepared": "prepare", "attack": "attack", "scan": "scan"}[parts[1]]
        return f"{stage}@{parts[2]}"
    if len(parts) == 3 and parts[0] == "models":
        return {"model.pt": f"train@{parts[1]}", "hardened.pt": f"harden@{parts[1]}"}.get(parts[2])
    return None
