"""Independent oracles the tests and benchmarks compare the pipeline with (not part of the package:
no stage runs them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
    batches of `batch_size` images, neuron k dropped by a forward hook (`gates.gated`). The
    halves' loss sums are not the tally's: each image's cross-entropy is kept, and the first
    len(images) // 2 of them and the rest are summed apart."""
    _check(images, labels, signs, epsilons)
    model.eval().to(device)
    x_all = as_input(images, torch.device("cpu"))
    tally = _Tally(layer.channels, epsilons, len(images))
    half = len(images) // 2
    sums = torch.zeros(2, layer.channels + 1, len(epsilons), dtype=torch.float64)
    for neuron in [None, *range(layer.channels)]:
        gains = (
            torch.ones(layer.channels)
            if neuron is None
            else drop_gains(layer.channels, [neuron])[0]
        )
        with gated(model, layer, gains):
            for e, eps in enumerate(epsilons):
                losses = []  # per image
                for s in batch_slices(len(images), batch_size):
                    x = fgsm_images(x_all[s], signs[s], eps).to(device)
                    dropped = None if neuron is None else [neuron]
                    logits = model(x)
                    tally.add(dropped, s, e, logits, labels[s].to(device))
                    y = labels[s].to(device)
                    losses.append(F.cross_entropy(logits.float(), y, reduction="none").cpu())
                per_image = torch.cat(losses).double()
                row = 0 if neuron is None else neuron + 1
                sums[0, row, e], sums[1, row, e] = per_image[:half].sum(), per_image[half:].sum()
    measured = tally.result(epsilons, epsilon_labels, len(images), "naive")
    return dataclasses.replace(
        measured,
        first_half_intact_loss_sum=sums[0, 0].clone(),
        first_half_dropped_loss_sum=sums[0, 1:].clone(),
        second_half_intact_loss_sum=sums[1, 0].clone(),
        second_half_dropped_loss_sum=sums[1, 1:].clone(),
    )
