"""Batched forward passes: logits, accuracy and mean cross-entropy of a model on a split."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1]: the model's input space, where epsilons live."""
    return images.to(torch.float32).div_(255)


def as_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device` as float in [0, 1] (uint8 images are scaled, floats pass through)."""
    images = images.to(device)
    return to_unit(images) if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def logits_of(
    model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """The model's logits for every image, on the CPU."""
    model.eval()
    out = [model(as_input(images[s], device)).cpu() for s in batch_slices(len(images), batch_size)]
    return torch.cat(out)


def accuracy_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Share of correct predictions and mean cross-entropy, as Python floats."""
    correct = (logits.argmax(dim=1) == labels).sum().item() / len(labels)
    return correct, F.cross_entropy(logits, labels).item()
