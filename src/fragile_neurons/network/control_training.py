"""Training a control network (`network.controls`): what the reference and the placebo stages
do, each with its `Control` (their stage modules are this contract with it): the network fitted
as the train stage fits f (`network.training`), with the control's seed, or, where the run leaves
the control out, the file that says so."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from torch import nn

from ..running.config import fit_settings
from ..running.runtime import seed_everything, select_device
from ..storage import headline, io
from .controls import Control, save_no_control
from .models import save_checkpoint
from .training import Fit, fit, summary


@dataclass(frozen=True)
class ControlSettings:
    """What a control's stage reads of params.yaml: the run's flag for it, and what the train
    stage reads (the control is trained as f), with the control's seed; and where it runs."""

    CONTROL: ClassVar[Control]
    fit: Fit
    seed: int  # CONTROL.seed(seed)
    wanted: bool  # runs.<name>.<CONTROL.key>
    deterministic: str

    @classmethod
    def from_params(cls, params: dict, name: str) -> ControlSettings:
        device = select_device(params["device"])
        return cls(
            Fit(**fit_settings(params, name), device=device),
            cls.CONTROL.seed(params["seed"]),
            params["runs"][name][cls.CONTROL.key],
            params["deterministic"],
        )


class Inputs(NamedTuple):
    train: dict | None  # the prepared splits; None for a run that leaves the control out
    test: dict | None


class Trained(NamedTuple):
    control: Control
    model: nn.Module | None  # None: the run leaves the control out
    spec: dict | None
    history: list[dict] | None
    seed: int


def load(ctx, settings: ControlSettings) -> Inputs:
    if not settings.wanted:
        return Inputs(None, None)
    return Inputs(*io.load_training_splits(ctx.name, ctx.run["dataset"]))


def run(inputs: Inputs, settings: ControlSettings, progress: Callable | None = None) -> Trained:
    """The control network, fitted after every generator was seeded with its seed (its initial
    weights too)."""
    control = settings.CONTROL
    if not settings.wanted:
        return Trained(control, None, None, None, settings.seed)
    generator = seed_everything(settings.seed, settings.fit.device, settings.deterministic)
    return Trained(control, *fit(inputs.train, inputs.test, settings.fit, generator), settings.seed)


def write(ctx, outputs: Trained) -> None:
    """models/<run>/<control>.pt, the headline metrics/<run>/<control>/ (headline.py) and the
    details data/views/<run>/<control>/<control>.json."""
    control = outputs.control
    if outputs.model is None:
        save_no_control(control.path(ctx.name), f"runs.{ctx.name}.{control.key} is false")
        absent = {"headline": {"test_accuracy": None}, control.key: False}
        headline.write(ctx.name, control.key, absent)
        return
    save_checkpoint(control.path(ctx.name), outputs.model, outputs.spec)
    fitted = summary(outputs.model, outputs.history)
    result = {control.key: True, "seed": outputs.seed, **fitted, **ctx.runtime()}
    headline.write(ctx.name, control.key, result)
