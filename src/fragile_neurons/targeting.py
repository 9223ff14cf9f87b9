"""Adversarial targeting: how an FGSM attack spreads over the neurons of the scanned layer
(method.md section 2).

For each epsilon and each neuron k of L, over the scan set S, with a_k(x) neuron k's feature map
(read by a forward hook on the neuron module of `layers.ScanLayer`: L, or the BatchNorm after it):

- magnitude          m_k      = mean_x mean_pixels |a_k(x)|
- attack effect      T_k(eps) = mean_x mean_pixels |a_k(x'_eps) - a_k(x)|
- relative effect    R_k(eps) = T_k(eps) / (m_k + 1e-12)
- attack share       D_k(eps) = T_k(eps) / sum_j T_j(eps)

x'_eps = clip(x + eps * sign) is rebuilt from the stored gradient signs of S. The forward pass
stops once the neuron module has run. Sums over images and pixels accumulate in float64, so the
results do not depend on the batch size beyond the last digits of float64.
"""

from __future__ import annotations

import torch
from torch import nn

from .adversarial import fgsm_images
from .config import epsilon_label
from .inference import as_input, batch_slices
from .records import ScanLayer, Targeting

RELATIVE_FLOOR = 1e-12  # keeps R finite for a neuron that never fires (method.md section 2)


class _Reached(Exception):
    """Raised by the capturing hook to end a forward pass early."""


@torch.no_grad()
def feature_maps(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of `module` (B x N x H' x W') when `model` runs on `x`; the rest of the forward
    pass is skipped. Hooks registered on `module` before this call (a gate) act on it first."""
    captured = []

    def capture(_module, _inputs, output):
        captured.append(output)
        raise _Reached

    handle = module.register_forward_hook(capture)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the neuron module did not run in the forward pass")
    return captured[0]


def targeting(
    model: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    signs: torch.Tensor,
    epsilons: list[float],
    epsilon_labels: list[str] | None = None,
    *,
    batch_size: int,
    device: torch.device,
) -> Targeting:
    """T, R, D and m on the scan set `images` (uint8 or float in [0, 1]) with its FGSM gradient
    `signs` (same shape), at every epsilon in `epsilons` (method.md uses E+, without 0), named
    `epsilon_labels` (default: as numbers, '0.1')."""
    if images.shape != signs.shape:
        raise ValueError(f"signs {tuple(signs.shape)} do not match images {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("the scan set is empty")
    model.eval()
    module = layer.neuron_module(model)
    magnitude = torch.zeros(layer.channels, dtype=torch.float64)
    effect = torch.zeros(len(epsilons), layer.channels, dtype=torch.float64)
    pixels = 0
    for s in batch_slices(len(images), batch_size):
        x = as_input(images[s], device)
        clean = feature_maps(model, module, x)
        if clean.dim() != 4 or clean.shape[1] != layer.channels:
            shape = f"B x {layer.channels} x H x W"
            raise ValueError(f"{layer.neuron_name!r} gives {tuple(clean.shape)}, not {shape}")
        pixels = clean.shape[2] * clean.shape[3]
        magnitude += clean.abs().sum(dim=(0, 2, 3), dtype=torch.float64).cpu()
        for i, eps in enumerate(epsilons):
            adversarial = feature_maps(model, module, fgsm_images(x, signs[s], eps))
            moved = (adversarial - clean).abs_()
            effect[i] += moved.sum(dim=(0, 2, 3), dtype=torch.float64).cpu()
    count = len(images) * pixels
    magnitude /= count
    effect /= count
    total = effect.sum(dim=1, keepdim=True)
    share = torch.where(total > 0, effect / total, torch.full_like(effect, float("nan")))
    return Targeting(
        epsilons=list(epsilons),
        epsilon_labels=list(epsilon_labels or map(epsilon_label, epsilons)),
        effect=effect,
        relative_effect=effect / (magnitude + RELATIVE_FLOOR),
        share=share,
        magnitude=magnitude,
    )
