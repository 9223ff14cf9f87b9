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

The controls (method.md section 2), because the first layer is affine up to the clipping, so that
T_k(eps) is close to eps times a property of filter k whatever the perturbation's direction:

- noise share        N_k(eps) = D_k(eps) with the FGSM signs replaced by seeded random signs
                                (`noise_signs`: one draw for the whole set, the same for every eps)
- excess share       X_k      = mean_eps D_k(eps) / mean_eps N_k(eps)
- filter gain        G_k      = ||W_k||_2 (output channel k of L, flattened), times
                                |gamma_k| / sqrt(running_var_k + bn_eps) where a BatchNorm follows L

The attack stage records them with T, R, D and m (records.Targeting); the correlate stage sets
fragility against each. A second random draw, set against the first as X is, gives the null
of X: where X falls when the "attack" is itself random (`Targeting.null_excess`).
"""

from __future__ import annotations

import math

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


def _effects(
    model: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    sign_sets: list[torch.Tensor],
    epsilons: list[float],
    *,
    batch_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """m (N,) and, for each set of signs (each of the images' shape), T (E x N) at every
    epsilon: one clean pass per batch serves every set."""
    for signs in sign_sets:
        if images.shape != signs.shape:
            raise ValueError(
                f"signs {tuple(signs.shape)} do not match images {tuple(images.shape)}"
            )
    if len(images) == 0:
        raise ValueError("the scan set is empty")
    model.eval()
    module = layer.neuron_module(model)
    magnitude = torch.zeros(layer.channels, dtype=torch.float64)
    effects = [torch.zeros(len(epsilons), layer.channels, dtype=torch.float64) for _ in sign_sets]
    pixels = 0
    for s in batch_slices(len(images), batch_size):
        x = as_input(images[s], device)
        clean = feature_maps(model, module, x)
        if clean.dim() != 4 or clean.shape[1] != layer.channels:
            shape = f"B x {layer.channels} x H x W"
            raise ValueError(f"{layer.neuron_name!r} gives {tuple(clean.shape)}, not {shape}")
        pixels = clean.shape[2] * clean.shape[3]
        magnitude += clean.abs().sum(dim=(0, 2, 3), dtype=torch.float64).cpu()
        for signs, effect in zip(sign_sets, effects, strict=True):
            for i, eps in enumerate(epsilons):
                adversarial = feature_maps(model, module, fgsm_images(x, signs[s], eps))
                moved = (adversarial - clean).abs_()
                effect[i] += moved.sum(dim=(0, 2, 3), dtype=torch.float64).cpu()
    count = len(images) * pixels
    return magnitude / count, [effect / count for effect in effects]


def _share(effect: torch.Tensor) -> torch.Tensor:
    """D from T: each row divided by its sum over the neurons; NaN where nothing moves."""
    total = effect.sum(dim=1, keepdim=True)
    return torch.where(total > 0, effect / total, torch.full_like(effect, math.nan))


def targeting(
    model: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    signs: torch.Tensor,
    epsilons: list[float],
    epsilon_labels: list[str] | None = None,
    *,
    noise_seed: int = 0,
    batch_size: int,
    device: torch.device,
) -> Targeting:
    """T, R, D and m on the scan set `images` (uint8 or float in [0, 1]) with its FGSM gradient
    `signs` (same shape), at every epsilon in `epsilons` (method.md uses E+, without 0), named
    `epsilon_labels` (default: as numbers, '0.1'); with the controls: the noise share N under
    `noise_signs(images.shape, noise_seed)`, a second random draw from the same generator (the
    null: X of a random perturbation against another, `Targeting.null_excess`) and the filter
    gain G."""
    noise, null = noise_signs(images.shape, noise_seed, draws=2)
    magnitude, (effect, noise_effect, null_effect) = _effects(
        model, layer, images, [signs, noise, null], epsilons,
        batch_size=batch_size, device=device,
    )  # fmt: skip
    share, noise = _share(effect), _share(noise_effect)
    return Targeting(
        epsilons=list(epsilons),
        epsilon_labels=list(epsilon_labels or map(epsilon_label, epsilons)),
        effect=effect,
        relative_effect=effect / (magnitude + RELATIVE_FLOOR),
        share=share,
        magnitude=magnitude,
        noise_share=noise,
        excess_share=excess_share(share, noise),
        null_excess=excess_share(_share(null_effect), noise),
        filter_gain=filter_gain(model, layer),
        noise_seed=noise_seed,
    )


def noise_signs(
    shape: tuple[int, ...] | torch.Size, seed: int, draws: int = 1
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Uniformly random signs, -1 or +1 (int8), one per pixel of a whole image set of `shape`,
    drawn from a generator seeded with `seed`: the random perturbation of the noise share.
    `draws` > 1: that many successive draws from the same generator, the first being the one
    `draws=1` gives."""
    generator = torch.Generator().manual_seed(seed)
    signs = tuple(
        torch.randint(0, 2, tuple(shape), generator=generator, dtype=torch.int8) * 2 - 1
        for _ in range(draws)
    )
    return signs[0] if draws == 1 else signs


def noise_share(
    model: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    epsilons: list[float],
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """N (E x N), float64: the attack share D of `targeting` with the FGSM signs replaced by
    `noise_signs(images.shape, seed)`, at every epsilon in `epsilons`."""
    signs = noise_signs(images.shape, seed)
    _, (effect,) = _effects(
        model, layer, images, [signs], epsilons, batch_size=batch_size, device=device
    )
    return _share(effect)


def excess_share(share: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """X (N,), float64: mean_eps D_k(eps) / mean_eps N_k(eps) from D and N (both E x N). NaN
    where the noise moves the neuron not at all (mean N_k = 0) or a share is undefined (NaN)."""
    if share.shape != noise.shape or share.dim() != 2:
        raise ValueError(
            f"share and noise must both be E x N, got {tuple(share.shape)}, {tuple(noise.shape)}"
        )
    attack, random = share.double().mean(dim=0), noise.double().mean(dim=0)
    return torch.where(random > 0, attack / random, torch.full_like(attack, math.nan))


@torch.no_grad()
def filter_gain(model: nn.Module, layer: ScanLayer) -> torch.Tensor:
    """G (N,), float64: the L2 norm of each output channel's weights of L, times
    |gamma_k| / sqrt(running_var_k + eps) where the neuron module is a BatchNorm after L
    (gamma_k = 1 for a BatchNorm without affine weights)."""
    weight = layer.conv(model).weight.detach().double()
    gain = weight.flatten(1).norm(dim=1).cpu()
    if layer.neuron_name == layer.conv_name:
        return gain
    bn = layer.neuron_module(model)
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
        raise ValueError(
            f"{layer.neuron_name!r} is not a BatchNorm2d with running statistics: the filter "
            "gain of a neuron normalised by batch statistics is undefined"
        )
    gamma = torch.ones_like(gain) if bn.weight is None else bn.weight.detach().double().cpu()
    variance = bn.running_var.detach().double().cpu()
    return gain * gamma.abs() / torch.sqrt(variance + bn.eps)
