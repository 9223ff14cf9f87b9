"""What an FGSM attack does to a model on a whole split, at every epsilon of a grid (method.md 1).

One gradient per image serves the whole grid (`attacks.signs_and_logits`, whose forward pass also
gives the clean logits); each epsilon's images are made batch by batch (`attacks.fgsm_images`),
so the grid never sits in memory at once. At epsilon 0 the adversarial images are the clean images
bit for bit, so the accuracy there is the clean accuracy that `inference.evaluate` reports on the
same split and batch size. Given another model's signs, the sweep is a transferred attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .attacks import fgsm_images, signs_and_logits
from .inference import accuracy_and_loss, as_input, batch_slices, logits_of


@dataclass(frozen=True)
class FGSMSweep:
    """Per epsilon (lists in grid order): accuracy and mean cross-entropy on the true labels;
    success rate, the share of the images classified correctly on clean inputs that the attack
    makes misclassified ((#correct clean and wrong adversarial) / #correct clean; NaN when no
    image is classified correctly); the mean over images of the perturbation's L-infinity and L2
    norms (pixel units, over all channels). Plus the clean logits, accuracy and loss, and the
    gradient signs (int8, one per pixel) that made every epsilon's images."""

    epsilons: list[float]
    accuracy: list[float]
    loss: list[float]
    success_rate: list[float]
    linf_mean: list[float]
    l2_mean: list[float]
    clean_accuracy: float
    clean_loss: float
    clean_logits: torch.Tensor
    signs: torch.Tensor

    def frame(self, labels: list[str]) -> pd.DataFrame:
        """The accuracy-epsilon curve, one row per epsilon; `labels` name the epsilons."""
        if len(labels) != len(self.epsilons):
            raise ValueError(f"{len(labels)} labels for {len(self.epsilons)} epsilons")
        return pd.DataFrame(
            {
                "epsilon": self.epsilons,
                "epsilon_label": labels,
                "accuracy": self.accuracy,
                "loss": self.loss,
                "success_rate": self.success_rate,
                "linf_mean": self.linf_mean,
                "l2_mean": self.l2_mean,
            }
        )


def fgsm_sweep(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: list[float],
    *,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
    signs: torch.Tensor | None = None,
    clean_logits: torch.Tensor | None = None,
) -> FGSMSweep:
    """FGSM at every epsilon on `images` (uint8 or float in [0, 1]), in batches on `device`.

    `signs`: the gradient signs to use (e.g. another model's, for a transferred attack); by
    default the model's own. `clean_logits`: the model's logits on `images` when already known
    (they are computed otherwise)."""
    if not epsilons:
        raise ValueError("epsilons must be a non-empty list")
    own_logits = None
    if signs is None:
        signs, own_logits = signs_and_logits(
            model, images, labels, batch_size=batch_size, device=device, label_mode=label_mode
        )
    elif signs.shape != images.shape:
        raise ValueError(f"signs have shape {tuple(signs.shape)}, images {tuple(images.shape)}")
    if clean_logits is None:
        clean_logits = (
            own_logits if own_logits is not None else logits_of(model, images, batch_size, device)
        )
    if clean_logits.shape[0] != len(images):
        raise ValueError(f"{clean_logits.shape[0]} clean logits for {len(images)} images")
    model.eval()
    adv_logits = [[] for _ in epsilons]
    linf, l2 = [[] for _ in epsilons], [[] for _ in epsilons]
    with torch.no_grad():
        for s in batch_slices(len(images), batch_size):
            x = as_input(images[s], device)
            for i, eps in enumerate(epsilons):
                adv = fgsm_images(x, signs[s], eps)
                delta = (adv - x).flatten(1).double()
                linf[i].append(delta.abs().amax(1).cpu())
                l2[i].append(delta.norm(dim=1).cpu())
                # x'_0 is x bit for bit, so its logits are the clean ones: no second pass
                adv_logits[i].append(clean_logits[s] if eps == 0 else model(adv).cpu())
    clean_accuracy, clean_loss = accuracy_and_loss(clean_logits, labels)
    was_correct = clean_logits.argmax(1) == labels
    n_correct = int(was_correct.sum())
    accuracy, loss, success = [], [], []
    for parts in adv_logits:
        logits = torch.cat(parts)
        acc, ce = accuracy_and_loss(logits, labels)
        fooled = int((was_correct & (logits.argmax(1) != labels)).sum())
        accuracy.append(acc)
        loss.append(ce)
        success.append(fooled / n_correct if n_correct else float("nan"))
    return FGSMSweep(
        epsilons=list(epsilons),
        accuracy=accuracy,
        loss=loss,
        success_rate=success,
        linf_mean=[torch.cat(v).mean().item() for v in linf],
        l2_mean=[torch.cat(v).mean().item() for v in l2],
        clean_accuracy=clean_accuracy,
        clean_loss=clean_loss,
        clean_logits=clean_logits,
        signs=signs,
    )


@torch.no_grad()
def fgsm_examples(
    model: nn.Module,
    images: torch.Tensor,
    signs: torch.Tensor,
    epsilons: list[float],
    *,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A few images at every epsilon: (E x n x C x H x W float images, E x n predicted labels),
    both on the CPU. Meant for pictures: the whole batch goes through the model at once."""
    model.eval()
    x = as_input(images, device)
    adversarial = torch.stack([fgsm_images(x, signs, eps) for eps in epsilons])
    predictions = torch.stack([model(a).argmax(1) for a in adversarial])
    return adversarial.cpu(), predictions.cpu()
