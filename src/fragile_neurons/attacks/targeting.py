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

White-noise signs have no spatial structure, and T_k depends on the perturbation's structure, not
on which image gets it; so two more controls, on the same images S (method.md section 2):

- reference share    D^ref_k(eps) = D_k(eps) (f's neurons) under the FGSM signs of the reference
                                network f_ref, a network trained as f with another seed
- reference excess   X^ref_k  = mean_eps D_k(eps) / mean_eps D^ref_k(eps): the primary measure of
                                claim 1 (how much more of f's own attack than of another trained
                                network's lands on neuron k)
- reliability of X^ref: X^ref on each half of S (`datasets.splits.halves`), whose Spearman rho
                                across neurons gives its split-half reliability (correlate)
- placebo share      D^ref2_k(eps) = D_k(eps) under the FGSM signs of the placebo network f_ref2
                                (a second reference network, seed + 2000)
- placebo excess     X^plc_k  = mean_eps D^ref_k(eps) / mean_eps D^ref2_k(eps): two networks that
                                are not f, the primary's empirical null (method.md section 2, v4)
- surrogate share    D^sur_k(eps) = D_k(eps) under a spectrum-matched surrogate of f's own
                                perturbation s = sign(grad) (v4, `surrogate_signs`): per image,
                                one seeded random phase field (Hermitian, so the result is real)
                                added to the phases of every colour channel (the channels keep
                                their phase relations), then an iterated amplitude-adjusted
                                surrogate (IAAFT: alternately impose the amplitude spectrum of s
                                per channel and the +-1 values, `attack.surrogate_iterations`,
                                default 20): a +-1 field whose spectrum is that of s itself, not
                                of the raw gradient; the remaining relative amplitude error is
                                recorded (`Targeting.surrogate_error`)
- surrogate excess   X^sur_k  = mean_eps D_k(eps) / mean_eps D^sur_k(eps)

The attack stage records them with T, R, D and m (records.Targeting); the correlate stage sets
fragility against each. A second random draw, set against the first as X is, gives the null
of X: where X falls when the "attack" is itself random (`Targeting.null_excess`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import nn

from ..datasets.splits import halves
from ..network.inference import as_input, batch_slices
from ..running.config import DEFAULTS, epsilon_label
from ..storage.records import ScanLayer, Targeting
from .adversarial import fgsm_images

RELATIVE_FLOOR = 1e-12  # keeps R finite for a neuron that never fires (method.md section 2)
SURROGATE_SEED_OFFSET = (
    1  # the surrogate's phases are drawn with seed + 1, the noise signs with seed
)
SURROGATE_CHUNK = 256  # images per vectorised IAAFT pass (fixed: the result ignores batching)


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


def _in_halves(
    model: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    sign_sets: list[torch.Tensor],
    epsilons: list[float],
    *,
    batch_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, list[torch.Tensor], list[list[torch.Tensor]]]:
    """`_effects` on each half of S (`datasets.splits.halves`) and on all of it (the halves'
    means weighted by their sizes): m, T per sign set, and T per half and sign set (empty where S
    holds one image)."""
    first, second = halves(len(images))
    if first.stop == 0:
        magnitude, effects = _effects(
            model, layer, images, sign_sets, epsilons, batch_size=batch_size, device=device
        )
        return magnitude, effects, []
    parts = [
        _effects(
            model,
            layer,
            images[part],
            [signs[part] for signs in sign_sets],
            epsilons,
            batch_size=batch_size,
            device=device,
        )  # fmt: skip
        for part in (first, second)
    ]
    weights = [first.stop / len(images), (second.stop - second.start) / len(images)]
    magnitude = sum(w * m for w, (m, _) in zip(weights, parts, strict=True))
    effects = [
        sum(w * part[1][i] for w, part in zip(weights, parts, strict=True))
        for i in range(len(sign_sets))
    ]
    return magnitude, effects, [effects_of_half for _, effects_of_half in parts]


def targeting(
    model: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    signs: torch.Tensor,
    epsilons: list[float],
    epsilon_labels: list[str] | None = None,
    *,
    reference_signs: torch.Tensor | None = None,
    placebo_signs: torch.Tensor | None = None,
    surrogate: Surrogate | None = None,
    noise_seed: int = 0,
    batch_size: int,
    device: torch.device,
) -> Targeting:
    """T, R, D and m on the scan set `images` (uint8 or float in [0, 1]) with its FGSM gradient
    `signs` (same shape), at every epsilon in `epsilons` (method.md uses E+, without 0), named
    `epsilon_labels` (default: as numbers, '0.1'); with the controls: the noise share N under
    `noise_signs(images.shape, noise_seed)`, a second random draw from the same generator (the
    null: X of a random perturbation against another, `Targeting.null_excess`), the filter
    gain G, the reference share D^ref under `reference_signs` (the FGSM signs of the reference
    network on the same images; None: no reference network, D^ref and X^ref NaN) with X^ref on
    each half of S (its split-half reliability), the placebo share D^ref2 under `placebo_signs`
    (the second reference network's; None: no placebo, D^ref2 and X^plc NaN; it needs
    `reference_signs`) and the surrogate share D^sur under `surrogate` (`surrogate_signs` of
    `signs`, whose seed, iterations and remaining amplitude error the record keeps; None: D^sur
    and X^sur NaN, the error NaN and the iterations 0). Each half of S is measured on its own
    and all of S as their weighted mean."""
    if placebo_signs is not None and reference_signs is None:
        raise ValueError("the placebo share D^ref2 needs the reference network's signs too")
    noise, null = noise_signs(images.shape, noise_seed, draws=2)
    surrogate_signs_ = None if surrogate is None else surrogate.signs
    controls = {
        "reference": reference_signs,
        "placebo": placebo_signs,
        "surrogate": surrogate_signs_,
    }
    given = [name for name, value in controls.items() if value is not None]
    sets = [signs, noise, null, *(controls[name] for name in given)]
    magnitude, (effect, noise_effect, null_effect, *measured), by_half = _in_halves(
        model, layer, images, sets, epsilons, batch_size=batch_size, device=device
    )
    share, noise = _share(effect), _share(noise_effect)
    shares = dict.fromkeys(controls, torch.full_like(share, math.nan))
    shares |= {name: _share(value) for name, value in zip(given, measured, strict=True)}
    reference_share = shares["reference"]
    halves_excess = torch.full((2, len(magnitude)), math.nan, dtype=torch.float64)
    if reference_signs is not None and by_half:
        at = 3 + given.index("reference")
        halves_excess = torch.stack(
            [excess_share(_share(half[0]), _share(half[at])) for half in by_half]
        )
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
        reference=reference_signs is not None,
        reference_share=reference_share,
        reference_excess=excess_share(share, reference_share),
        reference_excess_halves=halves_excess,
        placebo=placebo_signs is not None,
        placebo_share=shares["placebo"],
        placebo_excess=excess_share(reference_share, shares["placebo"]),
        surrogate_share=shares["surrogate"],
        surrogate_excess=excess_share(share, shares["surrogate"]),
        surrogate_seed=noise_seed + SURROGATE_SEED_OFFSET if surrogate is None else surrogate.seed,
        surrogate_iterations=0 if surrogate is None else surrogate.iterations,
        surrogate_error=math.nan if surrogate is None else surrogate.error.mean().item(),
        surrogate_error_max=math.nan if surrogate is None else surrogate.error.max().item(),
    )


class Surrogate(NamedTuple):
    """The spectrum-matched surrogate of the sign perturbation s (`surrogate_signs`)."""

    signs: torch.Tensor  # int8, the images' shape: +-1 (0 where s is 0)
    error: torch.Tensor  # float64 (B,): each image's remaining relative amplitude error
    seed: int  # of the random phase fields
    iterations: int  # IAAFT rounds


def _impose_values(field: torch.Tensor, ordered: torch.Tensor) -> torch.Tensor:
    """Rank remapping: per row of `field` (... x P), its smallest entry gets the smallest value
    of `ordered` (the same shape, each row sorted ascending), and so on; ties in rank order."""
    order = field.argsort(dim=-1, stable=True)
    return torch.empty_like(ordered).scatter_(-1, order, ordered)


def surrogate_field(
    signs: torch.Tensor, phase: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The IAAFT surrogate of sign fields `signs` (B x C x H x W, values -1, 0, +1), float64 of
    the same values, and each image's remaining relative amplitude error (B,), float64.

    `phase` (B x H x (W // 2 + 1)): per image one random phase field, the phases of the rfft2 of
    a real white-noise field (Hermitian, so the result is real). It is added to the phases of
    every channel's spectrum (the channels keep their phase relations); then `iterations`
    rounds of (1) the amplitude spectrum |rfft2(s_c)| of each channel imposed on the current
    phases and (2) the values of s_c imposed by rank (the largest entries get the +1s, as many
    as s_c has; the smallest the -1s; zeros of s_c stay zeros in number). The error is
    || |F(surrogate)| - |F(s)| ||_2 / || |F(s)| ||_2 over the full 2-D spectra of all channels
    (0 where s is 0 throughout)."""
    if signs.dim() != 4 or phase.shape != (len(signs), signs.shape[2], signs.shape[3] // 2 + 1):
        raise ValueError(
            f"signs {tuple(signs.shape)} must be B x C x H x W and phase {tuple(phase.shape)} "
            "B x H x (W // 2 + 1)"
        )
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, not {iterations}")
    size = tuple(signs.shape[-2:])
    s = signs.double()
    spectrum = torch.fft.rfft2(s)
    amplitude = spectrum.abs()
    ordered = s.flatten(2).sort(dim=-1).values
    surrogate = s.clone()
    target = torch.polar(amplitude, spectrum.angle() + phase.double().unsqueeze(1))
    active = torch.arange(len(s))
    for round in range(iterations):
        field = torch.fft.irfft2(target, s=size)
        values = _impose_values(field.flatten(2), ordered[active]).view_as(field)
        # an image whose values no longer change is at IAAFT's fixed point: its next rounds
        # would repeat this one exactly, so it leaves the loop
        moved = round == 0 or (values != surrogate[active]).flatten(1).any(dim=1)
        surrogate[active] = values
        if round == iterations - 1:
            break
        if not isinstance(moved, bool):
            active, values = active[moved], values[moved]
            if len(active) == 0:
                break
        # (1): |rfft2(s_c)| on the current phases (phase 0 where the current amplitude is 0)
        current = torch.fft.rfft2(values)
        magnitude = current.abs()
        wanted = amplitude[active]
        scale = torch.where(magnitude > 0, wanted / magnitude, torch.zeros_like(magnitude))
        target = current.mul_(scale)
        target.real.add_(torch.where(magnitude > 0, torch.zeros_like(wanted), wanted))
    want = torch.fft.fft2(s).abs()
    miss = (torch.fft.fft2(surrogate).abs() - want).square().sum(dim=(1, 2, 3)).sqrt()
    norm = want.square().sum(dim=(1, 2, 3)).sqrt()
    error = torch.where(norm > 0, miss / norm.clamp_min(1e-300), torch.zeros_like(norm))
    return surrogate, error


def surrogate_phases(seed: int, count: int, size: tuple[int, int], generator=None) -> torch.Tensor:
    """`count` random phase fields (count x H x (W // 2 + 1)), float64: the phases of the rfft2
    of real white-noise H x W fields drawn one image at a time from a generator seeded with
    `seed` (or the `generator` given, which goes on from where it is)."""
    generator = torch.Generator().manual_seed(seed) if generator is None else generator
    noise = [torch.randn(size, generator=generator, dtype=torch.float64) for _ in range(count)]
    if not noise:
        return torch.zeros(0, size[0], size[1] // 2 + 1, dtype=torch.float64)
    return torch.fft.rfft2(torch.stack(noise)).angle()


def surrogate_signs(
    signs: torch.Tensor | Iterable[torch.Tensor],
    seed: int,
    iterations: int = DEFAULTS["surrogate_iterations"],
) -> Surrogate:
    """The surrogate perturbation of D^sur (method.md section 2, v4) of the sign perturbation
    s = sign(grad) of f (`signs`: B x C x H x W, or batches of it in image order; int8 or any
    real dtype, of which only the sign is taken): per image one random phase field, drawn from
    a generator seeded with `seed` one image at a time, added to the phases of every channel,
    then `iterations` IAAFT rounds (`surrogate_field`). Its spatial spectrum is that of s
    itself, and it aims nowhere. The images are worked in fixed chunks of SURROGATE_CHUNK, so
    the result does not depend on how `signs` is batched."""
    if isinstance(signs, torch.Tensor):
        signs = [signs]
    s = torch.cat([batch.cpu().sign().to(torch.int8) for batch in signs])
    if s.dim() != 4:
        raise ValueError(f"signs must be B x C x H x W, not {tuple(s.shape)}")
    generator = torch.Generator().manual_seed(seed)
    out, errors = torch.empty_like(s), torch.zeros(len(s), dtype=torch.float64)
    for start in range(0, len(s), SURROGATE_CHUNK):
        chunk = slice(start, start + SURROGATE_CHUNK)
        count = len(s[chunk])
        phase = surrogate_phases(seed, count, tuple(s.shape[-2:]), generator)
        field, errors[chunk] = surrogate_field(s[chunk], phase, iterations)
        out[chunk] = field.to(torch.int8)
    return Surrogate(out, errors, seed, iterations)


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
    _, (effect,), _ = _in_halves(
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
