"""The channel gate: one primitive for the nodal-dropout scan and for hardening (method.md).

A gate is a vector g of N multipliers on the neuron outputs, a_k -> g_k * a_k: g = 1 is the
intact model, g = 1 - e_k drops neuron k, and hardening sets g_k to a neuron's gain. `gated`
applies a gate with a forward hook, without copying the model; a gate of shape G x N applies G
gates at once to a batch made of G stacked copies of the same images (several dropped networks
in one forward pass). `fold` writes a gate into the weights of a copy of the model, giving an
ordinary model of the same architecture with the same logits.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..storage.records import ScanLayer


def _check_gains(layer: ScanLayer, gains: torch.Tensor) -> None:
    if gains.dim() not in (1, 2) or gains.shape[-1] != layer.channels:
        raise ValueError(
            f"gains must have shape ({layer.channels},) or (G, {layer.channels}) for "
            f"{layer.neuron_name!r}, got {tuple(gains.shape)}"
        )
    if not torch.isfinite(gains).all():
        raise ValueError("gains must be finite")


def apply_gate(output: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Multiply channel k of `output` (B x N x ...) by gains[k], or, for G x N gains, the g-th
    of G equal slices of the batch by gains[g]."""
    gains = gains.to(output.device, output.dtype)
    tail = (1,) * (output.dim() - 2)
    if gains.dim() == 1:
        return output * gains.view(1, -1, *tail)
    groups = gains.shape[0]
    if output.shape[0] % groups:
        raise ValueError(f"batch of {output.shape[0]} is not {groups} equal copies")
    split = output.view(groups, output.shape[0] // groups, *output.shape[1:])
    return (split * gains.view(groups, 1, -1, *tail)).view_as(output)


@contextmanager
def gated(model: nn.Module, layer: ScanLayer, gains: torch.Tensor) -> Iterator[nn.Module]:
    """Within the block, `model` runs with neuron k's output multiplied by gains[k]."""
    _check_gains(layer, gains)
    handle = layer.neuron_module(model).register_forward_hook(
        lambda module, inputs, output: apply_gate(output, gains)
    )
    try:
        yield model
    finally:
        handle.remove()


def drop_gains(channels: int, neurons: torch.Tensor | list[int]) -> torch.Tensor:
    """One gate per neuron in `neurons`, each 1 - e_k: a len(neurons) x channels matrix."""
    neurons = torch.as_tensor(neurons, dtype=torch.long)
    gains = torch.ones(len(neurons), channels)
    gains[torch.arange(len(neurons)), neurons] = 0.0
    return gains


@torch.no_grad()
def fold(model: nn.Module, layer: ScanLayer, gains: torch.Tensor) -> nn.Module:
    """A copy of `model` with the gate folded into its weights: channel k of the BatchNorm's
    weight and bias (when one follows L) or of L's weight and bias, multiplied by gains[k]."""
    _check_gains(layer, gains)
    if gains.dim() != 1:
        raise ValueError("fold takes one gate of shape (N,)")
    if getattr(layer.neuron_module(model), "weight", None) is None:
        raise ValueError(
            f"cannot fold a gate into {layer.neuron_name!r}: it has no weight to scale "
            "(a BatchNorm with affine=False); use `gated` instead"
        )
    folded = copy.deepcopy(model)
    module = layer.neuron_module(folded)
    g = gains.to(module.weight.device, module.weight.dtype)
    module.weight.mul_(g.view(-1, *([1] * (module.weight.dim() - 1))))
    if module.bias is not None:
        module.bias.mul_(g)
    return folded
