"""The reference stage: the reference network f_ref (method.md, Notation), trained as the train
stage trains f (`network.training`), with seed + REFERENCE_SEED_OFFSET; with
`runs.<name>.reference` false, a file saying the run has none (so DVC has an output, and the
attack stage knows the reference is absent on purpose)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from ..network.models import save_checkpoint, save_no_reference
from ..network.training import Fit, fit, summary
from ..running.config import fit_settings
from ..running.runtime import seed_everything, select_device
from ..storage import headline, io, paths

# f_ref is trained as f with seed + this offset, so that no member of a seed sweep (seeds 0, 1,
# 2, ...) shares its seed.
REFERENCE_SEED_OFFSET = 1000


def reference_seed(seed: int) -> int:
    """The seed of the reference network of a run seeded with `seed`."""
    return seed + REFERENCE_SEED_OFFSET


@dataclass(frozen=True)
class Settings:
    """What the reference stage reads of params.yaml: the run's reference flag, and what the
    train stage reads (f_ref is trained as f), with its own seed; and where it runs."""

    fit: Fit
    seed: int  # reference_seed(seed)
    wanted: bool  # runs.<name>.reference
    deterministic: str

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        device = select_device(params["device"])
        return cls(
            Fit(**fit_settings(params, name), device=device),
            reference_seed(params["seed"]),
            params["runs"][name]["reference"],
            params["deterministic"],
        )


class Inputs(NamedTuple):
    train: dict | None  # the prepared splits; None for a run without a reference network
    test: dict | None


class Reference(NamedTuple):
    model: nn.Module | None  # None: the run has no reference network
    spec: dict | None
    history: list[dict] | None
    seed: int


def load(ctx, settings: Settings) -> Inputs:
    if not settings.wanted:
        return Inputs(None, None)
    return Inputs(*io.load_training_splits(ctx.name, ctx.run["dataset"]))


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> Reference:
    """f_ref, fitted after every generator was seeded with its seed (its initial weights too)."""
    if not settings.wanted:
        return Reference(None, None, None, settings.seed)
    generator = seed_everything(settings.seed, settings.fit.device, settings.deterministic)
    return Reference(*fit(inputs.train, inputs.test, settings.fit, generator), settings.seed)


def write(ctx, outputs: Reference) -> None:
    """models/<run>/reference.pt, metrics/<run>/reference.json and reference/ (headline.py)."""
    if outputs.model is None:
        save_no_reference(paths.reference(ctx.name), f"runs.{ctx.name}.reference is false")
        absent = {"headline": {"test_accuracy": None}, "reference": False}
        headline.write(ctx.name, "reference", absent)
        return
    save_checkpoint(paths.reference(ctx.name), outputs.model, outputs.spec)
    fitted = summary(outputs.model, outputs.history)
    result = {"reference": True, "seed": outputs.seed, **fitted, **ctx.runtime()}
    headline.write(ctx.name, "reference", result)
