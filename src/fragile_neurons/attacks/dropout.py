"""The nodal-dropout scan (method.md section 3): every neuron dropped in turn, measured.

For each neuron k the dropped network f^(-k) (gate 1 - e_k) is evaluated on the scan set, clean
and on its FGSM images at every epsilon, next to the intact network f. `scan` gives the numbers of
the naive way (the whole network once per neuron, the neuron dropped by a forward hook: the
oracle of tests/oracles.py) at a fraction of its cost, by one of three paths:

Each path is a plan (`_Delta`, `_Prefix`, `_Hooks`) with one interface: `elements` sizes the
passes, `step` runs the intact and the dropped networks on one batch (the slice `s` of the scan
set) at one epsilon.

- `delta`, when the neuron module is a top-level child of an ``nn.Sequential`` followed only by
  channel-wise operations (ReLU, BatchNorm, pooling, eval dropout; a flatten right before a
  linear layer) up to the next ``nn.Conv2d`` or ``nn.Linear`` layer P. Everything up to P's
  pre-activation z runs once. Dropping neuron k changes P's input in channel k only, from h_k to
  h0_k (the channel-wise operations applied to a zero map: not 0 where a BatchNorm lies between),
  so z^(-k) = z + P_k(h0_k - h_k), where P_k is P without bias restricted to input channel k:
  1/N of P's cost, computed as one batched matrix product for several k. Only the rest of the
  network runs once per neuron.
- `prefix`, otherwise when the neuron module is top-level (ResNet: a residual block comes next):
  the network up to the neuron module runs once; the rest runs on gated copies of its output.
- `hooks`, for a nested neuron module: stacked copies of the images, each copy gated by its own
  gains (`gates.gated` with G x N gains).

Several dropped networks share a forward pass, whose size BATCH_ELEMENTS bounds (see
benchmarks/README.md). The intact network's numbers come from the same path.
Accuracies are kept as counts of correct predictions (integers, so equal scores are exactly
equal); losses are mean cross-entropies. Each half of the scan set (its first samples // 2
images and the rest, in its seeded order) also gets its own tallies, at every epsilon: the first
half's correct counts (the second's are the totals minus these) and each half's summed
cross-entropy, so that every score, accuracy or loss (phi, and the loss fragility psi of
method.md section 3), can be computed on each half for its split-half reliability; the totals
are tallied as before, not from the halves. On the clean images every path also counts, per neuron,
the images that f gets right and f^(-k) wrong (`dropped_lost`) and the reverse
(`dropped_gained`): the discordant pairs of the label stage's McNemar test. So the scan set needs
epsilon 0 (`with_clean` adds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..datasets.splits import halves
from ..network.gates import apply_gate, drop_gains, gated
from ..network.inference import as_input, batch_slices
from ..running.config import epsilon_label
from ..storage.records import ScanLayer, ScanMeasurements
from .adversarial import fgsm_images, input_gradient

# Operations that act on each channel separately in eval mode, so that dropping neuron k
# changes channel k only. After a flatten, only element-wise ones may follow.
ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
    nn.Identity,
)
CHANNELWISE = ELEMENTWISE + (
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout2d,
)

# Elements of the largest per-network tensor of one pass (networks x images x features): passes
# of a few MB stay in a CPU's caches; a GPU prefers large ones.
BATCH_ELEMENTS = {"cpu": 2**21, "cuda": 2**26}


def with_clean(epsilons: Sequence[float], labels: Sequence[str]) -> tuple[list, list]:
    """The scan's epsilons and their labels: `attack.epsilons`, with 0 (the clean images, for
    the clean impact) put first where the grid lacks it."""
    if 0.0 in epsilons:
        return list(epsilons), list(labels)
    return [0.0, *epsilons], ["0", *labels]


class _Tally:
    """Correct predictions and summed cross-entropy; row 0 the intact network, row k + 1 the
    network without neuron k; one column per epsilon. The same per half of the scan set (images
    [0, half) and [half, samples)): the first half's correct predictions, and each half's summed
    cross-entropy. On the clean images (epsilon 0) also the
    discordant counts against the intact network, per neuron: `lost`, the images the intact
    network classifies correctly and the network without neuron k does not, and `gained`, the
    reverse. The intact network's batch must be added before the dropped networks' batches of
    the same images."""

    def __init__(self, channels: int, epsilons: Sequence[float], samples: int):
        self.correct = torch.zeros(channels + 1, len(epsilons), dtype=torch.int64)
        self.half = halves(samples)[0].stop  # the first half of the scan set: images [0, half)
        self.first_correct = torch.zeros(channels + 1, len(epsilons), dtype=torch.int64)
        self.loss = torch.zeros(channels + 1, len(epsilons), dtype=torch.float64)
        self.half_loss = torch.zeros(2, channels + 1, len(epsilons), dtype=torch.float64)
        self.clean = list(epsilons).index(0.0)  # _check: epsilon 0 is there once
        self.intact_hits = torch.zeros(samples, dtype=torch.bool)  # per image, clean
        self.intact_seen = torch.zeros(samples, dtype=torch.bool)
        self.lost = torch.zeros(channels, dtype=torch.int64)
        self.gained = torch.zeros(channels, dtype=torch.int64)

    def add(
        self,
        neurons: Sequence[int] | None,
        images: slice,
        e: int,
        logits: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        """logits of G stacked networks on the same B labels y of the scan set's `images`,
        (G * B) x classes, for the networks without `neurons` (G of them), or of the intact
        network (None)."""
        rows = [0] if neurons is None else [k + 1 for k in neurons]
        logits = logits.float().view(len(rows), len(y), logits.shape[-1])
        labels = y.expand(len(rows), -1)
        hits = logits.argmax(dim=2) == labels  # G x B
        loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        self.correct[rows, e] += hits.sum(dim=1).cpu()
        first = max(0, min(images.stop, self.half) - images.start)  # of this batch's images
        self.first_correct[rows, e] += hits[:, :first].sum(dim=1).cpu()
        self.loss[rows, e] += loss.double().sum(dim=1).cpu()
        if first:
            self.half_loss[0, rows, e] += loss[:, :first].double().sum(dim=1).cpu()
        if first < len(y):
            self.half_loss[1, rows, e] += loss[:, first:].double().sum(dim=1).cpu()
        if e != self.clean:
            return
        if neurons is None:
            self.intact_hits[images] = hits[0].cpu()
            self.intact_seen[images] = True
            return
        if not self.intact_seen[images].all():
            raise RuntimeError("the scan added a dropped network before the intact one")
        intact = self.intact_hits[images].to(hits.device)
        self.lost[list(neurons)] += (intact & ~hits).sum(dim=1).cpu()
        self.gained[list(neurons)] += (~intact & hits).sum(dim=1).cpu()

    def result(
        self, epsilons: Sequence[float], labels: Sequence[str] | None, samples: int, path: str
    ) -> ScanMeasurements:
        mean = self.loss / samples
        return ScanMeasurements(
            epsilons=list(epsilons),
            epsilon_labels=list(labels or map(epsilon_label, epsilons)),
            samples=samples,
            path=path,
            intact_correct=self.correct[0].clone(),
            intact_loss=mean[0].clone(),
            dropped_correct=self.correct[1:].clone(),
            dropped_loss=mean[1:].clone(),
            dropped_lost=self.lost.clone(),
            dropped_gained=self.gained.clone(),
            half_samples=self.half,
            first_half_intact_correct=self.first_correct[0].clone(),
            first_half_dropped_correct=self.first_correct[1:].clone(),
            first_half_intact_loss_sum=self.half_loss[0, 0].clone(),
            first_half_dropped_loss_sum=self.half_loss[0, 1:].clone(),
            second_half_intact_loss_sum=self.half_loss[1, 0].clone(),
            second_half_dropped_loss_sum=self.half_loss[1, 1:].clone(),
        )


def _check(images, labels, signs, epsilons) -> None:
    if list(epsilons).count(0.0) != 1:
        raise ValueError(
            f"epsilons {list(epsilons)} must hold 0 (the clean images) once: with_clean adds it"
        )
    if images.dim() != 4 or labels.shape != (len(images),):
        raise ValueError(
            f"images must be N x C x H x W with N labels, got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if signs.shape != images.shape:
        raise ValueError(f"signs {tuple(signs.shape)} must match images {tuple(images.shape)}")


def _pass_size(
    elements: int, batch_size: int, group: int | None, device: torch.device, samples: int
):
    """(images, networks) per pass for networks whose largest tensor has `elements` per image:
    `group` networks on `batch_size` images when group is given, else as many as fit. A set of
    fewer than `batch_size` images leaves room for more networks in a pass."""
    if group is not None:
        return batch_size, group
    fit = max(1, BATCH_ELEMENTS.get(device.type, BATCH_ELEMENTS["cuda"]) // elements)
    images = min(batch_size, fit, samples)
    return images, max(1, fit // images)


def _batches(n: int, size: int, what: str):
    """batch_slices with a progress bar on stderr, shown on a terminal only (tqdm's
    disable=None), so a log or a captured stderr gets none."""
    return tqdm(list(batch_slices(n, size)), desc=what, unit="batch", disable=None, leave=False)


def _groups(channels: int, size: int) -> list[range]:
    return [range(s, min(s + size, channels)) for s in range(0, channels, size)]


def _run(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in modules:
        x = module(x)
    return x


def _stack(x: torch.Tensor, copies: int) -> torch.Tensor:
    """`copies` copies of the batch `x`, one after another, in x's memory layout: a channels-last
    activation stays so (`repeat` returns the standard layout, in which the convolutions after
    it ran 1.5x slower on the CPU; benchmarks/README.md)."""
    return torch.cat([x] * copies)


# --- where the network is cut ------------------------------------------------------------------


@dataclass
class _Split:
    """A top-level Sequential cut after the neuron module: prefix (through the neuron module),
    the channel-wise part, the next layer P (Conv2d or Linear; None: no delta path) and the
    suffix after P (after the neuron module when P is None)."""

    prefix: list[nn.Module]
    channelwise: list[nn.Module]
    next_layer: nn.Conv2d | nn.Linear | None
    suffix: list[nn.Module]
    flattened: bool


def _split(model: nn.Module, layer: ScanLayer) -> _Split | None:
    """Cut `model` after the neuron module; None where it is not a top-level child of an
    nn.Sequential."""
    if not isinstance(model, nn.Sequential):
        return None
    names = [name for name, _ in model.named_children()]
    if layer.neuron_name not in names:
        return None
    modules = list(model.children())
    i = names.index(layer.neuron_name)
    prefix, after = modules[: i + 1], modules[i + 1 :]
    channelwise, flattened = [], False
    for j, module in enumerate(after):
        if isinstance(module, nn.Conv2d) and not flattened:
            plain = module.groups == 1 and module.padding_mode == "zeros"
            if plain and isinstance(module.padding, tuple):  # not "same" or "valid"
                return _Split(prefix, channelwise, module, after[j + 1 :], flattened)
            break
        if isinstance(module, nn.Linear):
            if flattened:
                return _Split(prefix, channelwise, module, after[j + 1 :], flattened)
            break
        if isinstance(module, nn.Flatten) and not flattened:
            if (module.start_dim, module.end_dim) != (1, -1):
                break
            flattened = True
        elif not isinstance(module, ELEMENTWISE if flattened else CHANNELWISE):
            break
        channelwise.append(module)
    return _Split(prefix, [], None, after, False)


# --- the three paths: each runs one batch of B images at one epsilon --------------------------


def _delta_rows(layer: nn.Module, diff: torch.Tensor) -> torch.Tensor:
    """The change of P's input, B x G x (H x W or P features) for G neurons, as G x R x K rows
    that multiply P's weights of one input channel: convolution patches (R = B x output
    positions, K = kernel taps), or the flattened features of the channel (R = B)."""
    if not isinstance(layer, nn.Conv2d):
        return diff.transpose(0, 1)
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = (
        layer.kernel_size,
        layer.stride,
        layer.dilation,
        layer.padding,
    )
    d = diff.transpose(0, 1)  # G x B x H x W
    if ph or pw:
        d = F.pad(d, (pw, pw, ph, ph))
    height = (d.shape[2] - dh * (kh - 1) - 1) // sh + 1  # P's output size
    width = (d.shape[3] - dw * (kw - 1) - 1) // sw + 1

    def tap(u: int, v: int) -> torch.Tensor:  # the inputs that kernel tap (u, v) multiplies
        top, left = u * dh, v * dw
        return d[
            :, :, top : top + sh * (height - 1) + 1 : sh, left : left + sw * (width - 1) + 1 : sw
        ]

    taps = torch.stack([tap(u, v) for u in range(kh) for v in range(kw)], dim=1)  # G x K x B...
    return taps.flatten(2).transpose(1, 2)


def _delta_weights(layer: nn.Module, neurons: range, channels: int) -> torch.Tensor:
    """P's weights on input channel k, without bias, for each k in `neurons`: G x K x M."""
    if isinstance(layer, nn.Conv2d):
        return layer.weight[:, neurons.start : neurons.stop].flatten(2).permute(1, 2, 0)
    weight = layer.weight.view(layer.out_features, channels, -1)
    return weight[:, neurons.start : neurons.stop].permute(1, 2, 0)


class _Delta:
    """The delta path: z^(-k) = z + P_k(h0_k - h_k) for G neurons in one batched product."""

    name = "delta"

    def __init__(self, split: _Split, channels: int):
        self.split, self.channels = split, channels

    def elements(self, x: torch.Tensor) -> int:
        """Elements per image of P's output, the largest tensor held per dropped network."""
        split = self.split
        return split.next_layer(_run(split.channelwise, _run(split.prefix, x[:1])))[0].numel()

    def step(self, x, y, s: slice, e: int, tally: _Tally, networks: int) -> None:
        split, channels = self.split, self.channels
        a = _run(split.prefix, x)
        h = _run(split.channelwise, a)
        h0 = _run(split.channelwise, torch.zeros_like(a[:1]))  # what a dropped channel becomes
        z = split.next_layer(h)
        tally.add(None, s, e, _run(split.suffix, z.clone()), y)  # a copy: may work in place
        if split.flattened:  # channel k owns a contiguous block of the flattened features
            h, h0 = h.view(len(h), channels, -1), h0.view(1, channels, -1)
        # z as rows of P's outputs (a convolution's: one row per image and position, channels
        # last) so that z^(-k) = z + rows_k @ weights_k for G neurons k in one batched product.
        conv = isinstance(split.next_layer, nn.Conv2d)
        z_rows = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) if conv else z
        for neurons in _groups(channels, networks):
            part = slice(neurons.start, neurons.stop)
            rows = _delta_rows(split.next_layer, h0[:, part] - h[:, part])
            weights = _delta_weights(split.next_layer, neurons, channels)
            z_dropped = torch.baddbmm(z_rows.unsqueeze(0), rows, weights)  # G x R x M
            if conv:  # G*B x M x H x W, held in channels-last memory order
                z_dropped = z_dropped.view(-1, *z.shape[2:], z.shape[1]).permute(0, 3, 1, 2)
            tally.add(neurons, s, e, _run(split.suffix, z_dropped.reshape(-1, *z.shape[1:])), y)


class _Prefix:
    """The prefix path: the network up to the neuron module once, the rest on gated copies."""

    name = "prefix"

    def __init__(self, split: _Split, channels: int):
        self.split, self.channels = split, channels

    def elements(self, x: torch.Tensor) -> int:
        """Elements per image of the neuron module's output."""
        return _run(self.split.prefix, x[:1])[0].numel()

    def step(self, x, y, s: slice, e: int, tally: _Tally, networks: int) -> None:
        a = _run(self.split.prefix, x)
        tally.add(None, s, e, _run(self.split.suffix, a.clone()), y)  # a copy: may work in place
        for neurons in _groups(self.channels, networks):
            gated_a = apply_gate(_stack(a, len(neurons)), drop_gains(self.channels, neurons))
            tally.add(neurons, s, e, _run(self.split.suffix, gated_a), y)


class _Hooks:
    """The hooks path: stacked copies of the images, each gated by its own gains."""

    name = "hooks"

    def __init__(self, model: nn.Module, layer: ScanLayer):
        self.model, self.layer = model, layer

    def elements(self, x: torch.Tensor) -> int:
        """Elements per image of the neuron module's output."""
        sizes = []
        handle = self.layer.neuron_module(self.model).register_forward_hook(
            lambda module, inputs, output: sizes.append(output[0].numel())
        )
        try:
            self.model(x[:1])
        finally:
            handle.remove()
        return sizes[0]

    def step(self, x, y, s: slice, e: int, tally: _Tally, networks: int) -> None:
        model, layer = self.model, self.layer
        tally.add(None, s, e, model(x), y)
        for neurons in _groups(layer.channels, networks):
            with gated(model, layer, drop_gains(layer.channels, neurons)):
                tally.add(neurons, s, e, model(_stack(x, len(neurons))), y)


def _plan(model: nn.Module, layer: ScanLayer) -> _Delta | _Prefix | _Hooks:
    """The fastest path that gives the naive scan's numbers for this model and layer."""
    split = _split(model, layer)
    if split is None:
        return _Hooks(model, layer)
    if split.next_layer is None:
        return _Prefix(split, layer.channels)
    return _Delta(split, layer.channels)


@torch.no_grad()
def scan(
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
    group: int | None = None,
) -> ScanMeasurements:
    """The transfer scan: the intact and every dropped network on the FGSM images
    x'_eps = fgsm_images(x, signs, eps) for each eps in `epsilons` (which hold 0, the clean
    images, once), the signs crafted on the intact network.

    At most `batch_size` images per pass; `group` dropped networks per pass (None: passes of
    BATCH_ELEMENTS). The numbers of the naive scan (tests/oracles.py): the same accuracies (up to
    an argmax tie broken differently by float rounding), losses to float tolerance.
    """
    _check(images, labels, signs, epsilons)
    model.eval().to(device)
    plan = _plan(model, layer)
    x_all = as_input(images, torch.device("cpu"))
    elements = plan.elements(x_all[:1].to(device))
    size, networks = _pass_size(elements, batch_size, group, device, len(images))
    tally = _Tally(layer.channels, epsilons, len(images))
    for s in _batches(len(images), size, "scan"):
        y = labels[s].to(device)
        for e, eps in enumerate(epsilons):
            x = fgsm_images(x_all[s], signs[s], eps).to(device)
            plan.step(x, y, s, e, tally, networks)
    return tally.result(epsilons, epsilon_labels, len(images), plan.name)


def adaptive_scan(
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
    label_mode: str = "true",
    group: int | None = None,
) -> ScanMeasurements:
    """The adaptive scan: each dropped network is attacked with FGSM images crafted anew against
    itself (one input gradient per image and network; `label_mode` as in
    adversarial.input_gradient); the intact network with `signs`, the attack crafted on it.
    Several dropped networks share a pass, as stacked copies of the images gated by a hook."""
    _check(images, labels, signs, epsilons)
    model.eval().to(device)
    x_all = as_input(images, torch.device("cpu"))
    with torch.no_grad():
        elements = _Hooks(model, layer).elements(x_all[:1].to(device))
    size, networks = _pass_size(elements, batch_size, group, device, len(images))
    tally = _Tally(layer.channels, epsilons, len(images))
    for s in _batches(len(images), size, "adaptive scan"):
        x0, y = x_all[s].to(device), labels[s].to(device)
        with torch.no_grad():
            for e, eps in enumerate(epsilons):
                tally.add(None, s, e, model(fgsm_images(x0, signs[s], eps)), y)
        for neurons in _groups(layer.channels, networks):
            stacked = _stack(x0, len(neurons))
            with gated(model, layer, drop_gains(layer.channels, neurons)):
                own_signs = input_gradient(model, stacked, _stack(y, len(neurons)), label_mode)
                with torch.no_grad():
                    for e, eps in enumerate(epsilons):
                        x = fgsm_images(stacked, own_signs.sign(), eps)
                        tally.add(neurons, s, e, model(x), y)
    return tally.result(epsilons, epsilon_labels, len(images), "adaptive")
