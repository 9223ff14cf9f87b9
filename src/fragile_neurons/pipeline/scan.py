"""The scan stage (method.md section 3): every neuron of the scanned layer dropped in turn, measured
clean and under FGSM on the scan set S (the first `scan.samples` images of the selection split),
by the nodal-dropout scan of `attacks.dropout`: transferred (the attack stage's signs, crafted on
the intact network) or adaptive (each dropped network's own FGSM). Its record holds, besides the
totals over S, the tallies of each half of S (the first half's correct counts, each half's summed
cross-entropy), from which the label stage computes the split-half reliability of phi and of the
loss fragility psi."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..attacks.dropout import adaptive_scan, scan, with_clean
from ..datasets.splits import scan_set
from ..network.models import load_trained
from ..running.config import fgsm_settings
from ..running.runtime import select_device
from ..storage import io, paths
from ..storage.records import FGSMSweep, ScanLayer, ScanMeasurements


@dataclass(frozen=True)
class Settings:
    """What the scan stage reads of params.yaml (dvc.yaml: batch_size, the run's attack,
    scan.samples, scan.adversarial), and where it runs."""

    epsilons: list[float]  # E, in pixel units
    epsilon_labels: list[str]
    samples: int | None  # scan.samples: S, the first images of the selection split; None: all
    adversarial: str  # scan.adversarial: "transfer" | "adaptive"
    label_mode: str  # attack.labels, for the adaptive scan's own FGSM
    batch_size: int
    device: torch.device

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        scan_params = params["scan"]
        return cls(
            **fgsm_settings(params, name),
            samples=scan_params["samples"],
            adversarial=scan_params["adversarial"],
            device=select_device(params["device"]),
        )


class Inputs(NamedTuple):
    model: nn.Module  # f
    layer: ScanLayer  # L, as the attack stage resolved it
    images: torch.Tensor  # the scan set S
    labels: torch.Tensor
    signs: torch.Tensor  # S's FGSM signs, crafted on the intact network (the attack stage's)


def load(ctx, settings: Settings) -> Inputs:
    """S, once: the selection split's first `scan.samples` images, and the attack stage's sweep of
    the same images (checked to be S's)."""
    selection = io.load_split(paths.prepared(ctx.name, "selection"), ctx.run["dataset"])
    model, _ = load_trained(ctx.name, ctx.run)
    layer = ScanLayer.load(paths.layer_record(ctx.name), model=model)
    images, labels = scan_set(selection, settings.samples)
    sweep = FGSMSweep.load(paths.scan_sweep_record(ctx.name), images=images)
    return Inputs(model, layer, images, labels, sweep.signs[: len(images)])


class Scanned(NamedTuple):
    measurements: ScanMeasurements
    layer: ScanLayer  # what was scanned, for scan.json


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> Scanned:
    """The scan of S at 0 and every epsilon of the grid, transferred or adaptive."""
    model, layer, images, labels, signs = inputs
    eps, names = with_clean(settings.epsilons, settings.epsilon_labels)
    options = {"batch_size": settings.batch_size, "device": settings.device}
    if settings.adversarial == "adaptive":
        measured = adaptive_scan(
            model, layer, images, labels, signs, eps, names, **options,
            label_mode=settings.label_mode,
        )  # fmt: skip
    else:
        measured = scan(model, layer, images, labels, signs, eps, names, **options)
    return Scanned(measured, layer)


def write(ctx, outputs: Scanned) -> None:
    """data/scan/<run>/measurements.pt, and scan.json and scan.csv in data/views/<run>/scan/."""
    measured, layer = outputs
    measured.save(paths.scan_record(ctx.name))
    io.write_csv(paths.view(ctx.name, "scan", "scan.csv"), measured.frame())
    io.write_json(paths.details(ctx.name, "scan"), {**metrics(measured, layer), **ctx.runtime()})


def metrics(result: ScanMeasurements, layer: ScanLayer) -> dict:
    """scan.json: the intact network's accuracy and loss per epsilon, and how it was scanned."""
    return {
        "intact_accuracy": dict(
            zip(result.epsilon_labels, result.intact_accuracy.tolist(), strict=True)
        ),
        "intact_loss": dict(zip(result.epsilon_labels, result.intact_loss.tolist(), strict=True)),
        "layer": layer.describe(),
        "neurons": layer.channels,
        "samples": result.samples,
        "adversarial": result.adversarial,
        "path": result.path,
    }
