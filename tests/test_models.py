"""The model registry and checkpoints."""

import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fragile_neurons.network.models import (
    ARCHITECTURES,
    Normalize,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from fragile_neurons.running.errors import DataError, ParamError
from fragile_neurons.storage import io


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_every_model_normalises_first_and_classifies(arch, channels, size):
    if arch == "mnist_cnn" and size != 28:
        size = 28
    model = build_model(arch, channels, size, 10, [0.5] * channels, [0.25] * channels).eval()
    first_name, first = next(iter(model.named_children()))
    assert first_name == "normalize" and isinstance(first, Normalize)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == channels and convs[0].out_channels >= 32
    assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_resnet18_mnist_stem_is_the_papers():
    model = build_model("resnet18", 1, 28, 10, [0.1], [0.3])
    conv1 = model.conv1
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride) == (
        1,
        64,
        (7, 7),
        (2, 2),
    )


@pytest.mark.parametrize(("arch", "channels", "size"), [("mnist_cnn", 1, 28), ("cifar_cnn", 3, 32)])
def test_pooling_before_relu_is_the_usual_relu_then_pool_bit_for_bit(arch, channels, size):
    """The small CNNs max-pool before the ReLU (less work); logits and input gradients are those
    of the conventional order exactly."""
    torch.manual_seed(0)
    model = build_model(arch, channels, size, 10, [0.5] * channels, [0.25] * channels).eval()
    names = [name for name, _ in model.named_children()]
    conventional = list(model.named_children())
    for i, name in enumerate(names):
        if name.startswith("pool") and names[i + 1].startswith("relu"):
            conventional[i], conventional[i + 1] = conventional[i + 1], conventional[i]
    assert [n for n, _ in conventional] != names
    reference = nn.Sequential(OrderedDict(conventional)).eval()
    x = torch.rand(16, channels, size, size)
    labels = torch.arange(16) % 10

    def logits_and_gradient(net):
        image = x.clone().requires_grad_(True)
        logits = net(image)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), image)
        return logits.detach(), grad

    ours, theirs = logits_and_gradient(model), logits_and_gradient(reference)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_models_run_channels_last_and_save_the_standard_layout(tmp_path):
    model = build_model("cifar_cnn", 3, 32, 10, [0.5] * 3, [0.25] * 3)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    save_checkpoint(
        tmp_path / "m.pt", model, {"arch": "cifar_cnn", "channels": 3, "size": 32, "classes": 10}
    )
    saved = io.load_tensors(tmp_path / "m.pt")["state_dict"]
    assert all(t.is_contiguous() for t in saved.values())
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert loaded.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_normalize_is_mean_std():
    norm = Normalize([0.5, 0.25], [0.5, 0.25])
    x = torch.rand(1, 2, 3, 3)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25], dim=1)
    assert torch.allclose(norm(x), expected)


def test_checkpoint_round_trip_and_arch_check(tmp_path):
    spec = {"arch": "cifar_cnn", "channels": 3, "size": 32, "classes": 10}
    model = build_model(**spec, mean=[0.4, 0.5, 0.6], std=[0.2, 0.2, 0.3]).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, spec)
    loaded, loaded_spec = load_checkpoint(path, arch="cifar_cnn")
    x = torch.rand(3, 3, 32, 32)
    assert loaded_spec == spec and not loaded.training
    assert torch.equal(model(x), loaded(x))
    with pytest.raises(DataError, match="holds a 'cifar_cnn' model, not 'resnet18'"):
        load_checkpoint(path, arch="resnet18")


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_load_weights_only(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "marker"
    torch.save({"spec": Evil(marker)}, path)
    with pytest.raises(DataError, match=r"evil.pt asks the unpickler for .*nothing in it ran"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path):
    spec = {"arch": "mnist_cnn", "channels": 1, "size": 28, "classes": 10}
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(**spec, mean=[0.1], std=[0.3]), spec)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="model.pt is truncated or corrupt") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


def test_outputs_are_written_atomically(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": 1})

    def fail(path):
        path.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        io.write_with(target, fail)
    assert io.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# --- builders of one's own: runs.<name>.arch = 'package.module:function' ----------------------

BUILDERS = """
from torch import nn


def tiny(channels, size, classes):
    side = (size - 2) // 2
    return [
        ("conv1", nn.Conv2d(channels, 4, 3)),
        ("bn1", nn.BatchNorm2d(4)),
        ("pool1", nn.MaxPool2d(2)),
        ("relu1", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * side * side, classes)),
    ]


def no_conv(channels, size, classes):
    return [("flatten", nn.Flatten()), ("fc", nn.Linear(channels * size * size, classes))]


def a_module(channels, size, classes):
    return nn.Conv2d(channels, 4, 3)


def dotted(channels, size, classes):
    return [("conv.1", nn.Conv2d(channels, 4, 3))]


def mismatched(channels, size, classes):
    return [("conv1", nn.Conv2d(channels, 4, 3)), ("flat", nn.Flatten()), ("fc", nn.Linear(7, 2))]


def wrong_classes(channels, size, classes):
    return [("conv1", nn.Conv2d(channels, 2, size)), ("flatten", nn.Flatten())]


def broken(channels, size, classes):
    raise RuntimeError("no such\\nwidth")


NOT_CALLABLE = 3
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory (the current one, as for a stage) with archs/builders.py, and no
    trace of it in sys.modules before or after."""
    (tmp_path / "archs").mkdir()
    (tmp_path / "archs" / "__init__.py").write_text("")
    (tmp_path / "archs" / "builders.py").write_text(BUILDERS)
    (tmp_path / "loose.py").write_text(BUILDERS)
    monkeypatch.chdir(tmp_path)

    def forget():
        for name in [n for n in sys.modules if n == "archs" or n.startswith("archs.")]:
            del sys.modules[name]
        sys.modules.pop("loose", None)

    forget()
    yield tmp_path
    forget()


def test_a_builder_path_builds_a_normalising_model(project):
    model = build_model("archs.builders:tiny", 1, 28, 10, [0.1], [0.3], key="runs.x.arch")
    assert [name for name, _ in model.named_children()][:3] == ["normalize", "conv1", "bn1"]
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.training  # as fresh as a registry model: the probe left its mode alone
    assert model.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert not (project / "archs" / "__pycache__").exists()  # DVC hashes the sources only


@pytest.mark.parametrize(
    ("arch", "problem"),
    [
        ("archs.missing:tiny", "archs.missing does not import (ModuleNotFoundError: No module"),
        ("archs.builders:nope", "module archs.builders has no function 'nope'"),
        ("archs.builders:NOT_CALLABLE", "has no function 'NOT_CALLABLE'"),
        ("archs.builders:no_conv", "returned no nn.Conv2d"),
        ("archs.builders:a_module", "returned a Conv2d, not a list of (name, nn.Module) pairs"),
        ("archs.builders:dotted", "without '.'"),
        ("archs.builders:mismatched", "its model fails on a 1 x 1 x 28 x 28 input (RuntimeError"),
        ("archs.builders:wrong_classes", "gives (1, 2) for one image, not (1, 10) logits"),
        ("archs.builders:broken", "(1, 28, 10) raised RuntimeError: no such width"),
        ("loose:tiny", "loose.py is in the project but not under archs/"),
        ("vgg", "'mnist_cnn' or 'cifar_cnn' or 'resnet18' or a builder"),
    ],
)
def test_a_bad_builder_is_one_line_naming_the_key(project, arch, problem):
    with pytest.raises(ParamError) as err:
        build_model(arch, 1, 28, 10, [0.1], [0.3], key="runs.x.arch")
    message = str(err.value)
    assert message.startswith(f"params: runs.x.arch = {arch!r} is not allowed; expected ")
    assert problem in message and "\n" not in message


def test_a_checkpoint_imports_a_builder_only_when_the_caller_names_it(project):
    spec = {"arch": "archs.builders:tiny", "channels": 1, "size": 28, "classes": 10}
    model = build_model(**spec, mean=[0.1], std=[0.3]).eval()
    save_checkpoint(project / "m.pt", model, spec)
    loaded, loaded_spec = load_checkpoint(project / "m.pt", arch="archs.builders:tiny")
    x = torch.rand(3, 1, 28, 28)
    assert loaded_spec == spec and torch.equal(loaded(x), model(x))
    with pytest.raises(
        DataError,
        match=r"holds a 'archs.builders:tiny' model, not one of .* only where the caller names it",
    ):
        load_checkpoint(project / "m.pt")  # a file's word is not enough to import code
    with pytest.raises(DataError, match="not 'archs.builders:no_conv'"):
        load_checkpoint(project / "m.pt", arch="archs.builders:no_conv")
    (project / "archs" / "builders.py").unlink()  # the builder is gone: the key, not the file
    for name in ("archs.builders", "archs"):
        sys.modules.pop(name, None)
    with pytest.raises(ParamError, match="runs.x.arch = 'archs.builders:tiny'.*does not import"):
        load_checkpoint(project / "m.pt", arch="archs.builders:tiny", key="runs.x.arch")
