"""Finding the scanned layer L and the module whose output channels are its neurons.

By default L is the first ``nn.Conv2d`` that the forward pass executes (found by running the
model on an example, not by guessing from module order); `scan.layer` may name another
convolution by its name in ``model.named_modules()``. Where L's output goes straight into a
BatchNorm2d over the same channels, the neuron's output is that BatchNorm's channel k, so that
zeroing and scaling are not undone by normalisation (method.md, notation). The attack stage
resolves the layer once and records it (records.ScanLayer); the other stages read the record.
"""

from __future__ import annotations

import torch
from torch import nn

from ..running.errors import ParamError
from ..storage.records import ScanLayer


class Unscannable(ValueError):
    """A convolution the model runs that cannot be scanned: fewer than 2 neurons, or a
    BatchNorm after it without running statistics."""


def _execution_trace(model: nn.Module, example: torch.Tensor) -> list[tuple]:
    """(name, module, input, output) of every Conv2d and BatchNorm2d, in the order they run in
    one forward pass on `example`."""
    trace, handles = [], []

    def hook(name):
        def record(module, inputs, output):
            trace.append((name, module, inputs[0], output))  # tensors kept alive: `is` is safe

        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return trace


def convolutions(model: nn.Module) -> list[str]:
    """Names of the model's ``nn.Conv2d`` modules, the candidates for `scan.layer`."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def find_scan_layer(
    model: nn.Module, example: torch.Tensor, layer: str | None = None, *, key: str = "scan.layer"
) -> ScanLayer:
    """Resolve `scan.layer` (None: the first Conv2d executed) on a model and one example batch.

    Raises ValueError naming the candidates when `layer` is unknown or not a convolution (its
    message calls the setting `key`).
    """
    convs = convolutions(model)
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules or not isinstance(modules[layer], nn.Conv2d):
            what = "is not a module" if layer not in modules else "is not an nn.Conv2d"
            raise ValueError(f"{key} = {layer!r} {what}; convolutions: {convs}")
    trace = _execution_trace(model, example)
    ran = [(n, m, i, o) for n, m, i, o in trace if isinstance(m, nn.Conv2d)]
    if not ran:
        raise ValueError("the model runs no nn.Conv2d: there is no layer to scan")
    if layer is None:
        layer = ran[0][0]
    position = next((k for k, (n, *_) in enumerate(trace) if n == layer), None)
    if position is None:
        ran_names = [n for n, *_ in ran]
        raise ValueError(f"{key} = {layer!r} never runs in the forward pass; ran: {ran_names}")
    conv, conv_out = trace[position][1], trace[position][3]
    if conv.out_channels < 2:
        raise Unscannable(
            f"{key} = {layer!r} has {conv.out_channels} neuron: a scan ranks neurons against "
            "each other and needs at least 2"
        )
    stale = [
        n
        for n, m, *_ in trace[position + 1 :]
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is None
    ]
    if stale:
        raise Unscannable(
            f"the BatchNorm {stale[0]} after {key} = {layer!r} keeps no running statistics "
            "(track_running_stats=False): the logits would depend on the batch size and the "
            "recalibrated arm has nothing to re-estimate"
        )
    neuron = layer
    if position + 1 < len(trace):
        name, module, bn_in, _ = trace[position + 1]
        if (
            isinstance(module, nn.BatchNorm2d)
            and bn_in is conv_out
            and module.num_features == conv.out_channels
        ):
            neuron = name
    return ScanLayer(conv_name=layer, neuron_name=neuron, channels=conv.out_channels)


def resolve_layer(model: nn.Module, example: torch.Tensor, layer: str | None) -> ScanLayer:
    """:func:`find_scan_layer` for the value of `scan.layer`: a name that is not a convolution
    the model runs is a ParamError naming the candidates."""
    try:
        return find_scan_layer(model, example, layer)
    except ValueError as err:
        if isinstance(err, Unscannable):
            raise ParamError("scan.layer", layer, f"a layer that can be scanned: {err}") from None
        trace = _execution_trace(model, example)
        ran = [name for name, module, *_ in trace if isinstance(module, nn.Conv2d)]
        allowed = f"null or the name of an nn.Conv2d the model runs: {ran}"
        raise ParamError("scan.layer", layer, allowed) from err
