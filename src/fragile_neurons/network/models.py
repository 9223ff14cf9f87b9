"""The classifiers, by name: `mnist_cnn`, `cifar_cnn` and torchvision's `resnet18`.

Every model is an ``nn.Sequential`` of named modules whose first module normalises by the
dataset's per-channel mean and std, so inputs stay in [0, 1] and epsilons are in pixel units.
Names are stable (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so `scan.layer` can name a layer
and a checkpoint's keys read like the architecture. The small CNNs max-pool before the ReLU:
max commutes with the monotone ReLU, so the function and its gradients are the same bit for bit
as ReLU-then-pool, at a quarter of the ReLU work (benchmarks/README.md has the timings).

`arch` may also be a builder of one's own, ``package.module:function`` with the registry's
signature ``(channels, size, classes) -> [(name, nn.Module), ...]``. Within the project it must
live under ``archs/`` (BUILDERS), the folder that dvc.yaml makes a dependency of every stage
that builds a model, so an edited builder retrains; an installed package may hold it too.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..running.config import ARCH_ALLOWED, CLASSES, IMAGE_SHAPES, is_builder
from ..running.errors import DataError, ParamError
from ..storage.io import admit, load_metadata, load_tensors, rerun_advice, save_tensors
from ..storage.paths import model as model_path


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


Builder = Callable[[int, int, int], list[tuple[str, nn.Module]]]
BUILDERS = "archs"  # the project's folder of builders: a dvc.yaml dependency of every model stage
BUILDER_ALLOWED = (
    f"an importable builder 'package.module:function' (in {BUILDERS}/ or an installed package) "
    "returning [(name, nn.Module), ...] with an nn.Conv2d"
)


def _one_line(err: BaseException) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= 160 else text[:155] + " ...>"


def import_builder(arch: str, key: str = "arch") -> Builder:
    """The function a builder path `package.module:function` names, imported. A module that does
    not import, lies in the project outside `archs/` (where DVC would not see it change), or
    lacks the function is a one-line ParamError naming `key` and `arch`."""

    def refuse(problem: str) -> ParamError:
        return ParamError(key, arch, f"{BUILDER_ALLOWED}: {problem}")

    module_name, _, function = arch.partition(":")
    project = Path.cwd().resolve()
    # The project's own modules import from its root, as `python -m` would find them; no
    # bytecode is written, so the dependency folder holds exactly the sources DVC hashes.
    sys.path.insert(0, str(project))
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a missing module, a syntax error, an error while importing
        raise refuse(f"{module_name} does not import ({_one_line(err)})") from None
    finally:
        sys.dont_write_bytecode = dont_write
        sys.path.remove(str(project))
    where = Path(getattr(module, "__file__", None) or "").resolve()
    if project in where.parents and (project / BUILDERS) not in where.parents:
        shown = where.relative_to(project).as_posix()
        raise refuse(
            f"{shown} is in the project but not under {BUILDERS}/, the folder dvc.yaml tracks "
            f"(move it there and name it '{BUILDERS}.{module_name}:{function}')"
        )
    builder = getattr(module, function, None)
    if not callable(builder):
        raise refuse(f"module {module_name} has no function {function!r}")
    return builder


def _built_layers(arch: str, key: str, channels: int, size: int, classes: int) -> list:
    """A builder's layers, checked: a list of (name, nn.Module) pairs, names unique and
    without dots, with an nn.Conv2d among them."""
    call = f"{arch}({channels}, {size}, {classes})"

    def refuse(problem: str) -> ParamError:
        return ParamError(key, arch, f"{BUILDER_ALLOWED}: {problem}")

    try:
        layers = import_builder(arch, key)(channels, size, classes)
    except ParamError:
        raise
    except Exception as err:
        raise refuse(f"{call} raised {_one_line(err)}") from None
    pairs = isinstance(layers, list | tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], nn.Module) for p in layers
    )
    if not pairs or not layers:
        what = type(layers).__name__
        raise refuse(f"{call} returned a {what}, not a list of (name, nn.Module) pairs")
    names = [name for name, _ in layers]
    bad = [n for n in names if not isinstance(n, str) or not n or "." in n or n == "normalize"]
    if bad or len(set(names)) != len(names):
        raise refuse(
            f"{call} returned names {names}: they must be unique non-empty strings without '.', "
            "other than 'normalize'"
        )
    if not any(isinstance(m, nn.Conv2d) for _, layer in layers for m in layer.modules()):
        raise refuse(f"{call} returned no nn.Conv2d (there would be no layer to scan)")
    return list(layers)


def build_model(
    arch: str,
    channels: int,
    size: int,
    classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    key: str = "arch",
) -> nn.Sequential:
    """A fresh model of architecture `arch` for `channels` x `size` x `size` inputs: a name of
    the registry, or a builder path `package.module:function` (see `import_builder`), whose
    model must take a 1 x channels x size x size batch to 1 x classes logits. A builder that
    fails any of this is a one-line ParamError naming `key` (the run's `runs.<name>.arch`).

    Its convolution weights are laid out channels-last, so activations flow in that layout
    (faster on the CPU; same values up to the last bits of float rounding). Checkpoints are saved
    in the standard layout."""
    if arch in ARCHITECTURES:
        layers = ARCHITECTURES[arch](channels, size, classes)
    elif is_builder(arch):
        layers = _built_layers(arch, key, channels, size, classes)
    else:
        raise ParamError(key, arch, ARCH_ALLOWED)
    model = nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), *layers]))
    if arch not in ARCHITECTURES:
        _probe(model, arch, key, channels, size, classes)
    return model.to(memory_format=torch.channels_last)


# The batch-size independence check: PROBE_IMAGES random images in one batch and in two halves
# must give the same logits up to float rounding (different batch sizes may sum in another
# order: a few units in the last place), far below what batch statistics change (0.2 in issue 35).
PROBE_IMAGES = 8
PROBE_TOLERANCE = 1e-3


def _without_running_stats(model: nn.Module) -> str | None:
    """The name of a BatchNorm that keeps no running statistics (track_running_stats=False): in
    eval mode it normalises by each batch's own statistics, so an image's logits depend on the
    batch it is in, and the recalibrated arm has nothing to re-estimate."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            return name
    return None


@torch.no_grad()
def _probe(model: nn.Module, arch: str, key: str, channels: int, size: int, classes: int):
    """A builder's model must map one zero image to one row of `classes` logits, keep eval mode
    when asked (no module left training), keep every BatchNorm's running statistics, and give an
    image the same logits whatever batch it is in (PROBE_IMAGES images at once and in two
    halves, in eval mode): a model whose numbers depend on the batch size makes every number of
    the pipeline depend on it."""

    def refuse(problem: str) -> ParamError:
        return ParamError(key, arch, f"{BUILDER_ALLOWED}: {problem}")

    was_training = model.training
    try:
        model.eval()
        training = [name or "the model" for name, m in model.named_modules() if m.training]
        if training:
            raise refuse(f"its modules {training[:3]} stay in train mode after .eval()")
        bn = _without_running_stats(model)
        if bn is not None:
            raise refuse(
                f"its BatchNorm {bn} keeps no running statistics (track_running_stats=False): "
                "in eval mode each image's logits would depend on its batch"
            )
        try:
            out = model(torch.zeros(1, channels, size, size))
        except Exception as err:
            problem = f"its model fails on a 1 x {channels} x {size} x {size} input"
            raise refuse(f"{problem} ({_one_line(err)})") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise refuse(f"its model gives {shape} for one image, not (1, {classes}) logits")
        if out.is_meta:  # shapes only (load_checkpoint's first build): no values to compare
            return
        generator = torch.Generator().manual_seed(0)  # the global generators are left alone
        images = torch.rand(PROBE_IMAGES, channels, size, size, generator=generator)
        try:
            whole = model(images)
            halves = torch.cat([model(half) for half in images.chunk(2)])
        except Exception as err:
            problem = f"its model fails on a batch of {PROBE_IMAGES} images"
            raise refuse(f"{problem} ({_one_line(err)})") from None
        gap = float((whole - halves).abs().max()) if whole.shape == halves.shape else math.inf
        scale = 1.0 + float(whole.abs().max()) if whole.numel() else 1.0
        if not gap <= PROBE_TOLERANCE * scale:
            raise refuse(
                f"in eval mode its logits of {PROBE_IMAGES} images differ by {gap:.3g} between "
                f"one batch and two of {PROBE_IMAGES // 2} (they must not depend on the batch "
                "size: a BatchNorm left in train mode, or batch statistics?)"
            )
    finally:
        model.train(was_training)


# A batch's memory, roughly: every module's output for every image, kept for the backward pass,
# their gradients, and as much again for the workspace of the kernels.
ACTIVATION_COPIES = 3


@torch.no_grad()
def activation_bytes(model: nn.Module, channels: int, size: int) -> int:
    """Bytes of every module's output for one image (one eval pass of a zero image on the CPU,
    the model left as it was)."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, out: (
                sizes.append(out.numel() * out.element_size())
                if isinstance(out, torch.Tensor)
                else None
            )
        )
        for m in model.modules()
        if not list(m.children())
    ]
    was_training, device = model.training, next(model.parameters()).device
    try:
        model.eval()(torch.zeros(1, channels, size, size, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sum(sizes)


def check_batch_memory(
    model: nn.Module, channels: int, size: int, batch_size: int, key: str, device: torch.device
) -> None:
    """A ParamError naming `key` where a batch of `batch_size` images cannot fit the memory this
    stage may still take on `device`, by an estimate (ACTIVATION_COPIES x the activations of one
    image x the batch, plus the weights); checked before any work, instead of an out-of-memory
    error (or the kernel's OOM killer) halfway."""
    from ..running.runtime import available_memory

    per_image = ACTIVATION_COPIES * activation_bytes(model, channels, size)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    need, available = batch_size * per_image + 2 * weights, available_memory(device)
    if need > available:
        fits = max((available - 2 * weights) // max(per_image, 1), 0)
        raise ParamError(
            key,
            batch_size,
            f"a batch that fits this machine's memory: at most about {fits} images of this "
            f"model on {device.type} (a batch of {batch_size} needs about "
            f"{need / 2**30:.1f} GiB, estimated as {ACTIVATION_COPIES} x "
            f"{per_image // ACTIVATION_COPIES} bytes of activations per image; "
            f"{available / 2**30:.1f} GiB is available)",
        )


def save_checkpoint(path: str | Path, model: nn.Sequential, spec: dict) -> None:
    """Save `model` with the spec that rebuilds it (arch, channels, size, classes), atomically."""
    state = {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }
    save_tensors(path, {"spec": dict(spec), "state_dict": state})


# What a checkpoint's archive holds besides its weights: the pickled spec and names, and torch's
# small records (version, byte order); generous, so only absurd sizes are refused.
CHECKPOINT_SLACK = 1 << 20


def _layout_problem(state: dict, expected: dict) -> str | None:
    """What is wrong with a state dict's layout, read from its archive's metadata alone (meta
    tensors: nothing allocated), against the model its spec builds (`expected`, meta too): a key
    missing or extra, a dtype or shape that differs, or a storage that holds other than exactly
    the weight's elements (a weight of 10 numbers whose storage claims 10**9)."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        return f"its weights lack {missing[:3]} or have extra {extra[:3]}"
    for name, want in expected.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != want.shape:
            given = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            return f"its weight {name} is {given}, not {tuple(want.shape)} as its spec builds it"
        if tensor.dtype != want.dtype:
            return f"its weight {name} is {tensor.dtype}, not {want.dtype} as its spec builds it"
        stored = tensor.untyped_storage().nbytes()
        if stored != tensor.numel() * tensor.element_size() or tensor.storage_offset() != 0:
            return (
                f"its weight {name} of {tensor.numel()} elements lies in a storage of {stored} "
                f"bytes, not of exactly its {tensor.numel() * tensor.element_size()}"
            )
    return None


def _weights_problem(state: dict) -> str | None:
    """What is wrong with loaded weights of the right layout: a non-finite weight, a
    normalisation std <= 0."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"its weight {name} is not finite (NaN or inf)"
    std = state["normalize.std"]
    if not (std > 0).all():
        return f"its normalisation std {[round(v, 6) for v in std.flatten().tolist()]} is not > 0"
    return None


def load_checkpoint(
    path: str | Path, arch: str | None = None, *, key: str = "arch", dataset: str | None = None
) -> tuple[nn.Sequential, dict]:
    """Rebuild a saved model in eval mode; `arch`, when given, must match the checkpoint's, and
    `dataset`, when given, its images (channels, size) and classes.

    The file is untrusted. Its archive's metadata is read first (`io.load_metadata`: every
    tensor's dtype, shape and storage size, nothing allocated): its spec is checked against
    `dataset`, and every weight's dtype, shape and storage size against the model its spec
    builds (built on torch's meta device, which allocates nothing); only then is it loaded, with
    ``weights_only`` (see :func:`io.load_tensors`), the archive at most the size of those
    weights; every weight must be finite and the normalisation std positive. Anything wrong is a
    one-line DataError naming the file and the stage that rewrites it. A builder path is imported
    only when the caller names it as `arch` (from params.yaml, which is trusted), never because
    a file says so; a builder that no longer imports is a ParamError naming `key`.
    """
    blob = load_metadata(path)
    missing = [k for k in ("spec", "state_dict") if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise DataError(
            f"{path} lacks {missing}: not a file this pipeline wrote; {rerun_advice(path)}"
        )
    spec, state = blob["spec"], blob["state_dict"]
    fields = {"arch": str, "channels": int, "size": int, "classes": int}
    if not isinstance(spec, dict) or any(
        type(spec.get(k)) is not t for k, t in fields.items()
    ):  # type(...) is: a bool is no count
        raise DataError(f"{path}: its spec is not {fields}; {rerun_advice(path)}")
    named = arch is not None and spec["arch"] == arch and is_builder(arch)
    if not (spec["arch"] in ARCHITECTURES or named) or (arch is not None and spec["arch"] != arch):
        wanted = repr(arch) if arch else f"one of {sorted(ARCHITECTURES)}"
        if arch is None and is_builder(spec["arch"]):
            wanted += " (a builder is imported only where the caller names it as `arch`)"
        raise DataError(
            f"{path} holds a {spec['arch']!r} model, not {wanted}; {rerun_advice(path)}"
        )
    given = (spec["channels"], spec["size"], spec["classes"])
    if dataset is not None and given != (*IMAGE_SHAPES[dataset], CLASSES):
        channels, size = IMAGE_SHAPES[dataset]
        raise DataError(
            f"{path} is a model of {given[0]} x {given[1]} x {given[1]} images and {given[2]} "
            f"classes, not of {dataset}'s {channels} x {size} x {size} images and {CLASSES} "
            f"classes; {rerun_advice(path)}"
        )
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DataError(f"{path}: its state_dict is not a mapping of names; {rerun_advice(path)}")
    if not all(isinstance(state.get(k), torch.Tensor) for k in ("normalize.mean", "normalize.std")):
        raise DataError(f"{path} lacks its normalisation mean and std; {rerun_advice(path)}")

    def build(mean, std):
        return build_model(
            spec["arch"], spec["channels"], spec["size"], spec["classes"], mean, std, key=key
        )

    try:
        with torch.device("meta"):  # shapes only: a spec of absurd sizes allocates nothing
            stats = torch.zeros(spec["channels"])
            expected = build(stats, stats).state_dict()
        problem = _layout_problem(state, expected)
        if problem is None:
            weights = sum(t.numel() * t.element_size() for t in expected.values())
            state = load_tensors(path, limit=weights + CHECKPOINT_SLACK)["state_dict"]
            problem = _weights_problem(state)
        if problem is None:
            model = build(state["normalize.mean"].flatten(), state["normalize.std"].flatten())
            model.load_state_dict(state)
    except (ParamError, DataError):
        raise
    except (
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        AttributeError,
        NotImplementedError,
    ) as err:
        first = " ".join(str(err).split())[:160]
        problem = f"does not hold a {spec['arch']} state ({first})"
    if problem is not None:
        raise DataError(f"{path}: {problem}; {rerun_advice(path)}")
    admit(path, blob)
    return model.eval(), spec


def load_trained(name: str, run: dict) -> tuple[nn.Sequential, dict]:
    """Run `name`'s trained model (models/<name>/model.pt, the train stage's), its architecture
    checked against `run`'s (params: runs.<name>.arch, which an error names) and its images and
    classes against the run's dataset."""
    return load_checkpoint(
        model_path(name), arch=run["arch"], key=f"runs.{name}.arch", dataset=run["dataset"]
    )


def degenerate(logits: torch.Tensor, labels: torch.Tensor) -> str | None:
    """What makes a model's `logits` on images of `labels` useless to scan, if anything: a
    non-finite logit, or one answer for every image where the labels hold several classes (a
    dead or collapsed model, e.g. a zeroed last layer: its gradients vanish and the attack share
    is undefined)."""
    if not torch.isfinite(logits).all():
        return f"gives non-finite logits on {len(logits)} images"
    predicted = logits.argmax(dim=1)
    if len(torch.unique(labels)) > 1 and bool((predicted == predicted[0]).all()):
        return f"predicts class {int(predicted[0])} for every one of {len(logits)} images"
    return None
