"""Independent oracles the tests and benchmarks compare the pipeline with (not part of the package:
no stage runs them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fragile_neurons.attacks.adversarial import fgsm_images
from fragile_neurons.attacks.dropout import _check, _Tally
from fragile_neurons.network.gates import drop_gains, gated
from fragile_neurons.network.inference import as_input, batch_slices
from fragile_neurons.storage.records import ScanLayer, ScanMeasurements


@torch.no_grad()
def naive_scan(
    model: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    labels: torch.Tensor,
    signs: torch.Tensor,
    epsilons: Sequence[float],
    epsilon_labels: Sequence[str] | None = None,
    *,
    batch_size: int,
    device: torch.device,
) -> ScanMeasurements:
    """The oracle of `attacks.dropout.scan`: the whole network once per neuron and epsilon on
    batches of
    `batch_size` images, neuron k dropped by a forward hook (`gates.gated`)."""
    _check(images, labels, signs, epsilons)
    model.eval().to(device)
    x_all = as_input(images, torch.device("cpu"))
    tally = _Tally(layer.channels, epsilons, len(images))
    for neuron in [None, *range(layer.channels)]:
        gains = (
            torch.ones(layer.channels)
            if neuron is None
            else drop_gains(layer.channels, [neuron])[0]
        )
        with gated(model, layer, gains):
            for e, eps in enumerate(epsilons):
                for s in batch_slices(len(images), batch_size):
                    x = fgsm_images(x_all[s], signs[s], eps).to(device)
                    dropped = None if neuron is None else [neuron]
                    tally.add(dropped, s, e, model(x), labels[s].to(device))
    return tally.result(epsilons, epsilon_labels, len(images), "naive")
