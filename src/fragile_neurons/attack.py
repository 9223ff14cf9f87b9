"""The attack stage (method.md sections 1 and 2): FGSM over the run's epsilon grid on the whole
test split, the scanned layer, how the attack spreads over that layer's neurons on the scan set,
and a few examples to look at.

The sweep's gradient signs serve every later stage: the scan takes its first `scan.samples` rows
(the scan set S), evaluate takes the whole sweep as the `original` variant under FGSM and as the
attack it transfers. The scanned layer is resolved here, once, and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .adversarial import fgsm_examples, fgsm_sweep
from .config import fgsm_settings
from .inference import as_input
from .layers import resolve_layer
from .records import FGSMSweep, ScanLayer, Targeting
from .targeting import targeting

EXAMPLES = 8  # images shown in examples.png


@dataclass(frozen=True)
class Settings:
    """What the attack stage reads of params.yaml (dvc.yaml: batch_size, the run's attack,
    scan.layer, scan.samples), and where it runs."""

    epsilons: list[float]  # E, in pixel units
    epsilon_labels: list[str]  # their names in metrics and plots ('8/255')
    label_mode: str  # attack.labels: "true" | "predicted"
    layer: str | None  # scan.layer: None for the first nn.Conv2d the forward pass runs
    samples: int  # scan.samples: the scan set S, the first images of the test split
    seed: int  # of the random signs of the noise share N (the controls of method.md section 2)
    batch_size: int
    device: torch.device

    @classmethod
    def from_params(cls, params: dict, name: str, device: torch.device) -> Settings:
        scan = params["scan"]
        return cls(
            **fgsm_settings(params, name),
            layer=scan["layer"],
            samples=scan["samples"],
            seed=params["seed"],
            device=device,
        )


@dataclass(frozen=True)
class Examples:
    """A few scan images, clean and at each positive epsilon, with the model's predictions."""

    images: torch.Tensor  # E x n x C x H x W in [0, 1]; row 0 the clean images
    predictions: torch.Tensor  # E x n
    labels: torch.Tensor  # n true labels
    classes: list[str]
    epsilons: list[float]
    epsilon_labels: list[str]


@dataclass(frozen=True)
class Attack:
    """What the attack stage computes: three records and the examples."""

    sweep: FGSMSweep
    layer: ScanLayer
    targeting: Targeting
    examples: Examples
    scan_samples: int  # images of the scan set S


def run(model: nn.Module, test: dict, settings: Settings) -> Attack:
    """The attack stage on the prepared `test` split: the scanned layer (a ParamError naming the
    candidates when the model runs no such convolution), the FGSM sweep of the whole split, and
    T, R, D and m on the scan set, with the controls N, X and G."""
    device, batch_size = settings.device, settings.batch_size
    model.to(device)
    scan_images = test["images"][: settings.samples]
    layer = resolve_layer(model, as_input(scan_images[:1], device), settings.layer)
    sweep = fgsm_sweep(
        model,
        test["images"],
        test["labels"],
        settings.epsilons,
        batch_size=batch_size,
        device=device,
        label_mode=settings.label_mode,
        epsilon_labels=settings.epsilon_labels,
    )
    signs = sweep.signs[: len(scan_images)]
    named = zip(settings.epsilons, settings.epsilon_labels, strict=True)
    positive = [(eps, name) for eps, name in named if eps > 0]
    epsilons, names = [eps for eps, _ in positive], [name for _, name in positive]
    target = targeting(
        model, layer, scan_images, signs, epsilons, names,
        noise_seed=settings.seed, batch_size=batch_size, device=device,
    )  # fmt: skip
    shown = [0.0, *epsilons]  # the clean images first, whether or not 0 is in the grid
    images, predictions = fgsm_examples(
        model, scan_images[:EXAMPLES], signs[:EXAMPLES], shown, device=device
    )
    examples = Examples(
        images=images,
        predictions=predictions,
        labels=test["labels"][:EXAMPLES],
        classes=test["classes"],
        epsilons=shown,
        epsilon_labels=["0", *names],
    )
    return Attack(sweep, layer, target, examples, len(scan_images))


def metrics(result: Attack) -> dict:
    """attack.json: per epsilon, FGSM accuracy, loss, success rate and perturbation norms; the
    clean accuracy and loss; the scanned layer, the scan set's size and the labels attacked."""
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
        "labels": sweep.label_mode,
    }
