"""The attack stage (method.md sections 1 and 2): FGSM over the run's epsilon grid on the whole
test split (how vulnerable the model is) and on the scan set S (the first `scan.samples` images of
the selection split), the scanned layer, how the attack spreads over that layer's neurons on S,
and a few examples of S to look at.

Two FGSM sweeps, one gradient sign per pixel each: the test split's (sweep.pt) gives attack.json's
FGSM numbers, and evaluate takes it as the `original` variant under FGSM and as the attack it
transfers; the scan set's (scan_sweep.pt) gives the targeting's signs and the scan's transferred
attack, so nothing that chooses neurons sees a test image. The scanned layer is resolved here,
once, and recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..attacks.adversarial import fgsm_examples, fgsm_sweep, gradient_signs
from ..attacks.targeting import SURROGATE_SEED_OFFSET, surrogate_signs, targeting
from ..datasets.splits import scan_set
from ..figures.attack import Examples, examples_figure
from ..network.controls import PLACEBO, REFERENCE, load_control
from ..network.inference import as_input
from ..network.layers import resolve_layer
from ..network.models import check_batch_memory, degenerate, load_trained
from ..running.config import DEFAULTS, fgsm_settings
from ..running.errors import DataError
from ..running.runtime import select_device
from ..storage import io, paths
from ..storage.records import FGSMSweep, ScanLayer, Targeting

EXAMPLES = 8  # images shown in examples.png


@dataclass(frozen=True)
class Settings:
    """What the attack stage reads of params.yaml (dvc.yaml: batch_size, the run's attack,
    scan.layer, scan.samples, seed, device), and where it runs."""

    epsilons: list[float]  # E, in pixel units
    epsilon_labels: list[str]  # their names in metrics and plots ('8/255')
    label_mode: str  # attack.labels: "true" | "predicted"
    layer: str | None  # scan.layer: None for the first nn.Conv2d the forward pass runs
    samples: int | None  # scan.samples: S, the first images of the selection split; None: all
    seed: int  # of the random signs of the noise share N (the controls of method.md section 2)
    batch_size: int
    device: torch.device
    checkpoint: str = "the model"  # the model's file, which a dead model's error names
    # attack.surrogate_iterations: the IAAFT rounds of the surrogate of D^sur (method.md 2, v4)
    surrogate_iterations: int = DEFAULTS["surrogate_iterations"]

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        scan = params["scan"]
        return cls(
            **fgsm_settings(params, name),
            layer=scan["layer"],
            samples=scan["samples"],
            seed=params["seed"],
            device=select_device(params["device"]),
            checkpoint=str(paths.model(name)),
            surrogate_iterations=params["runs"][name]["attack"]["surrogate_iterations"],
        )


class Inputs(NamedTuple):
    model: nn.Module  # f
    selection: dict  # the prepared selection split: S is its first `scan.samples` images
    test: dict  # the prepared test split
    reference: nn.Module | None  # f_ref; None: the run has none
    placebo: nn.Module | None  # f_ref2; None: the run has none


def load(ctx, settings: Settings) -> Inputs:
    dataset = ctx.run["dataset"]
    selection = io.load_split(paths.prepared(ctx.name, "selection"), dataset)
    test = io.load_split(paths.prepared(ctx.name, "test"), dataset)
    model, _ = load_trained(ctx.name, ctx.run)
    reference = load_control(REFERENCE, ctx.name, ctx.run)
    return Inputs(model, selection, test, reference, load_control(PLACEBO, ctx.name, ctx.run))


@dataclass(frozen=True)
class Attack:
    """What the attack stage computes: four records and the examples."""

    sweep: FGSMSweep  # the whole test split
    scan_sweep: FGSMSweep  # the scan set S
    layer: ScanLayer
    targeting: Targeting
    examples: Examples
    scan_samples: int  # images of the scan set S


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> Attack:
    """The attack stage on the prepared `selection` and `test` splits: the scanned layer (a
    ParamError naming the candidates when the model runs no such convolution), the FGSM sweeps of
    the whole test split and of the scan set S, and T, R, D and m on S with S's signs, with
    the controls N, X, G, D^ref (the FGSM of the `reference` network on S; None: the run has
    none), D^ref2 (the `placebo` network's) and D^sur (the v4 surrogate of S's own signs
    s = sign(grad): one seeded random phase field per image added to every channel's phases,
    then `surrogate_iterations` IAAFT rounds imposing the amplitude spectrum of s per channel
    and its +-1 values)."""
    model, selection, test, reference, placebo = inputs
    device, batch_size = settings.device, settings.batch_size
    channels, size = selection["images"].shape[1:3]
    check_batch_memory(model, channels, size, batch_size, "batch_size", device)
    model.to(device)
    scan_images, scan_labels = scan_set(selection, settings.samples)
    layer = resolve_layer(model, as_input(scan_images[:1], device), settings.layer)

    def sweep(images: torch.Tensor, labels: torch.Tensor) -> FGSMSweep:
        return fgsm_sweep(
            model,
            images,
            labels,
            settings.epsilons,
            batch_size=batch_size,
            device=device,
            label_mode=settings.label_mode,
            epsilon_labels=settings.epsilon_labels,
        )

    scan_sweep = sweep(scan_images, scan_labels)
    problem = degenerate(scan_sweep.clean_logits, scan_labels)
    if problem is not None:  # its signs would be 0 and the attack share undefined
        raise DataError(
            f"{settings.checkpoint} {problem} of the scan set S (a dead or degenerate model); "
            f"{io.rerun_advice(settings.checkpoint)}"
        )
    test_sweep = sweep(test["images"], test["labels"])
    signs = scan_sweep.signs
    named = zip(settings.epsilons, settings.epsilon_labels, strict=True)
    positive = [(eps, name) for eps, name in named if eps > 0]
    epsilons, names = [eps for eps, _ in positive], [name for _, name in positive]
    options = {"batch_size": batch_size, "device": device, "label_mode": settings.label_mode}
    reference_signs = placebo_signs = None
    if reference is not None:
        reference_signs = gradient_signs(reference.to(device), scan_images, scan_labels, **options)
    if placebo is not None:
        placebo_signs = gradient_signs(placebo.to(device), scan_images, scan_labels, **options)
    surrogate = surrogate_signs(
        signs, settings.seed + SURROGATE_SEED_OFFSET, settings.surrogate_iterations
    )  # of f's own perturbation s = sign(grad): S's FGSM signs
    target = targeting(
        model, layer, scan_images, signs, epsilons, names,
        reference_signs=reference_signs, placebo_signs=placebo_signs, surrogate=surrogate,
        noise_seed=settings.seed,
        batch_size=batch_size, device=device,
    )  # fmt: skip
    shown = [0.0, *epsilons]  # the clean images first, whether or not 0 is in the grid
    images, predictions = fgsm_examples(
        model, scan_images[:EXAMPLES], signs[:EXAMPLES], shown, device=device
    )
    examples = Examples(
        images=images,
        predictions=predictions,
        labels=scan_labels[:EXAMPLES],
        classes=selection["classes"],
        epsilons=shown,
        epsilon_labels=["0", *names],
    )
    return Attack(test_sweep, scan_sweep, layer, target, examples, len(scan_images))


def write(ctx, outputs: Attack) -> None:
    """data/attack/<run>/{sweep,scan_sweep,layer,targeting}.pt, and for people (data/views/<run>/
    attack/) attack.json, attack.csv, targeting.csv and examples.png."""
    outputs.sweep.save(paths.sweep_record(ctx.name))
    outputs.scan_sweep.save(paths.scan_sweep_record(ctx.name))
    outputs.layer.save(paths.layer_record(ctx.name))
    outputs.targeting.save(paths.targeting_record(ctx.name))
    io.write_csv(paths.view(ctx.name, "attack", "attack.csv"), outputs.sweep.frame())
    io.write_csv(paths.view(ctx.name, "attack", "targeting.csv"), outputs.targeting.frame())
    io.save_figure(
        paths.view(ctx.name, "attack", "examples.png"), examples_figure(outputs.examples)
    )
    io.write_json(paths.details(ctx.name, "attack"), {**metrics(outputs), **ctx.runtime()})


def metrics(result: Attack) -> dict:
    """attack.json: per epsilon, FGSM accuracy, loss, success rate and perturbation norms on the
    test split; its clean accuracy and loss; the scanned layer; the scan set's size and the intact
    model's accuracy on it; the labels attacked; the surrogate's IAAFT rounds and its remaining
    relative amplitude error (mean and largest over S)."""
    sweep = result.sweep

    def by_eps(values: list[float]) -> dict[str, float]:
        return dict(zip(sweep.epsilon_labels, values, strict=True))

    return {
        "fgsm_accuracy": by_eps(sweep.accuracy),
        "fgsm_loss": by_eps(sweep.loss),
        "success_rate": by_eps(sweep.success_rate),
        "linf_mean": by_eps(sweep.linf_mean),
        "l2_mean": by_eps(sweep.l2_mean),
        "clean_accuracy": sweep.clean_accuracy,
        "clean_loss": sweep.clean_loss,
        "layer": result.layer.describe(),
        "scan_samples": result.scan_samples,
        "scan_clean_accuracy": result.scan_sweep.clean_accuracy,
        "labels": sweep.label_mode,
        "reference": result.targeting.reference,  # D^ref and X^ref measured (a reference network)
        "placebo": result.targeting.placebo,  # D^ref2 and X^plc measured (a placebo network)
        "surrogate_iterations": result.targeting.surrogate_iterations,
        "surrogate_error": result.targeting.surrogate_error,
        "surrogate_error_max": result.targeting.surrogate_error_max,
    }
