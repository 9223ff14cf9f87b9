"""The classifiers, by name: `mnist_cnn`, `cifar_cnn` and torchvision's `resnet18`.

Every model is an ``nn.Sequential`` of named modules whose first module normalises by the
dataset's per-channel mean and std, so inputs stay in [0, 1] and epsilons are in pixel units.
Names are stable (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so `scan.layer` can name a layer
and a checkpoint's keys read like the architecture. The small CNNs max-pool before the ReLU:
max commutes with the monotone ReLU, so the function and its gradients are the same bit for bit
as ReLU-then-pool, at a quarter of the ReLU work (benchmarks/README.md has the timings).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .errors import DataError
from .io import load_tensors, rerun_advice, save_tensors


class Normalize(nn.Module):
    """(x - mean) / std per channel, the model's own first operation."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def mnist_cnn(channels: int, size: int, classes: int) -> list[tuple[str, nn.Module]]:
    """Two 3x3 convolutions (32, 64 neurons) with max-pooling and ReLU, two linear layers."""
    side = ((size - 2) // 2 - 2) // 2
    return [
        ("conv1", nn.Conv2d(channels, 32, 3)),
        ("pool1", nn.MaxPool2d(2)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 64, 3)),
        ("pool2", nn.MaxPool2d(2)),
        ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * side * side, 128)),
        ("relu3", nn.ReLU()),
        ("dropout", nn.Dropout(0.25)),
        ("fc2", nn.Linear(128, classes)),
    ]


def cifar_cnn(channels: int, size: int, classes: int) -> list[tuple[str, nn.Module]]:
    """Three conv-BatchNorm-maxpool-ReLU blocks (32, 64, 128 neurons), a linear classifier."""
    layers, width_in = [], channels
    for i, width in enumerate((32, 64, 128), start=1):
        layers += [
            (f"conv{i}", nn.Conv2d(width_in, width, 3, padding=1, bias=False)),
            (f"bn{i}", nn.BatchNorm2d(width)),
            (f"pool{i}", nn.MaxPool2d(2)),
            (f"relu{i}", nn.ReLU()),
        ]
        width_in = width
    side = size // 8
    return layers + [
        ("flatten", nn.Flatten()),
        ("dropout", nn.Dropout(0.2)),
        ("fc", nn.Linear(128 * side * side, classes)),
    ]


def resnet18(channels: int, size: int, classes: int) -> list[tuple[str, nn.Module]]:
    """torchvision's ResNet-18 as the paper's authors used it.

    One-channel data (MNIST): the stem is a 1-channel 7x7 stride-2 convolution with 64 filters;
    three channels (CIFAR-10): torchvision's standard stem. The top-level modules are laid out in
    the order torchvision's forward runs them, with the flatten made explicit.
    """
    # imported here: torchvision.models imports torch._dynamo, which slows every stage's start-up
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(num_classes=classes)
    if channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
    return [(n, getattr(net, n)) for n in names] + [("flatten", nn.Flatten()), ("fc", net.fc)]


ARCHITECTURES: dict[str, Callable[[int, int, int], list[tuple[str, nn.Module]]]] = {
    "mnist_cnn": mnist_cnn,
    "cifar_cnn": cifar_cnn,
    "resnet18": resnet18,
}


def build_model(
    arch: str,
    channels: int,
    size: int,
    classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Sequential:
    """A fresh model of architecture `arch` for `channels` x `size` x `size` inputs.

    Its convolution weights are laid out channels-last, so activations flow in that layout
    (faster on the CPU; same values up to the last bits of float rounding). Checkpoints are saved
    in the standard layout."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    layers = ARCHITECTURES[arch](channels, size, classes)
    model = nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), *layers]))
    return model.to(memory_format=torch.channels_last)


def save_checkpoint(path: str | Path, model: nn.Sequential, spec: dict) -> None:
    """Save `model` with the spec that rebuilds it (arch, channels, size, classes), atomically."""
    state = {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }
    save_tensors(path, {"spec": dict(spec), "state_dict": state})


def load_checkpoint(path: str | Path, arch: str | None = None) -> tuple[nn.Sequential, dict]:
    """Rebuild a saved model in eval mode; `arch`, when given, must match the checkpoint's.

    The file is untrusted: it loads with ``weights_only`` (see :func:`io.load_tensors`), and a
    spec or state that does not rebuild the architecture is a one-line DataError naming the file.
    """
    blob = load_tensors(path, keys=("spec", "state_dict"))
    spec, state = blob["spec"], blob["state_dict"]
    fields = {"arch": str, "channels": int, "size": int, "classes": int}
    if not isinstance(spec, dict) or any(not isinstance(spec.get(k), t) for k, t in fields.items()):
        raise DataError(f"{path}: its spec is not {fields}; {rerun_advice(path)}")
    if spec["arch"] not in ARCHITECTURES or (arch is not None and spec["arch"] != arch):
        wanted = arch or f"one of {sorted(ARCHITECTURES)}"
        raise DataError(
            f"{path} holds a {spec['arch']!r} model, not {wanted!r}; {rerun_advice(path)}"
        )
    try:
        model = build_model(
            spec["arch"],
            spec["channels"],
            spec["size"],
            spec["classes"],
            state["normalize.mean"].flatten(),
            state["normalize.std"].flatten(),
        )
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        first = " ".join(str(err).split())[:160]
        raise DataError(
            f"{path} does not hold a {spec['arch']} state ({first}); {rerun_advice(path)}"
        ) from None
    return model.eval(), spec
