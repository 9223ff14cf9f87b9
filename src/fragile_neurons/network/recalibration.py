"""BatchNorm recalibration (method.md section 5, the `hardened+recalibrated` arm): the running
statistics of every BatchNorm that runs after the scanned layer's neurons, re-estimated on the
scan set S, so that a later BatchNorm no longer normalises with the statistics of the network
before the hardening.

The re-estimate: a copy of the network in eval mode with only those BatchNorms in train mode,
their statistics reset and their momentum None (the cumulative average over every batch), and
forward passes over S in its order, `batch_size` images at a time, without labels or gradients;
no weight is touched. The same is done to the original network, the arm's baseline, so that the
arm's gain measures the hardening and not the recalibration. On the CPU it is deterministic.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..storage.records import ScanLayer
from .inference import as_input, batch_slices

STATISTICS = ("running_mean", "running_var")  # what is re-estimated; num_batches_tracked counts


def later_batchnorms(model: nn.Module, layer: ScanLayer, example: torch.Tensor) -> list[str]:
    """The names of the BatchNorm modules that run after L's neuron module in a forward pass of
    `example`, in the order they run (none: the arm is absent for this network)."""
    order, handles = [], []
    for name, module in model.named_modules():
        if name == layer.neuron_name or isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_hook(lambda m, i, o, n=name: order.append(n)))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    if layer.neuron_name not in order:
        raise ValueError(f"{layer.neuron_name} does not run in a forward pass")
    later = order[order.index(layer.neuron_name) + 1 :]
    return list(dict.fromkeys(n for n in later if n != layer.neuron_name))


def recalibrate(
    model: nn.Module,
    names: list[str],
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> nn.Module:
    """A copy of `model` whose BatchNorms `names` hold statistics re-estimated on `images` (the
    module docstring); the copy is in eval mode."""
    recalibrated = copy.deepcopy(model).eval().to(device)
    modules = dict(recalibrated.named_modules())
    momentum = {}
    for name in names:
        bn = modules[name]
        momentum[name] = bn.momentum
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over all batches
        bn.train()
    with torch.no_grad():
        for s in batch_slices(len(images), batch_size):
            recalibrated(as_input(images[s], device))
    for name in names:
        modules[name].momentum = momentum[name]
        modules[name].eval()
    return recalibrated


def statistics(model: nn.Module, names: list[str]) -> torch.Tensor:
    """The running means and variances of the BatchNorms `names`, concatenated (float64, CPU)."""
    modules = dict(model.named_modules())
    parts = [getattr(modules[n], s).detach().double().cpu() for n in names for s in STATISTICS]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def with_statistics(model: nn.Module, names: list[str], values: torch.Tensor) -> nn.Module:
    """A copy of `model` (eval mode) whose BatchNorms `names` hold the statistics `values` (as
    `statistics` concatenates them)."""
    out = copy.deepcopy(model).eval()
    modules, start = dict(out.named_modules()), 0
    for name in names:
        for stat in STATISTICS:
            buffer = getattr(modules[name], stat)
            size = buffer.numel()
            if start + size > len(values):
                raise ValueError(f"{len(values)} statistics do not fill the BatchNorms {names}")
            buffer.copy_(values[start : start + size].view_as(buffer).to(buffer.dtype))
            start += size
    if start != len(values):
        raise ValueError(f"{len(values)} statistics for BatchNorms of {start}")
    return out
