"""Finding the scanned layer L and its neuron module (layers.py, method.md notation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fragile_neurons.network.layers import convolutions, find_scan_layer
from fragile_neurons.network.models import build_model
from fragile_neurons.storage.records import ScanLayer


def model(arch: str, channels: int = 1, size: int = 28) -> nn.Sequential:
    torch.manual_seed(0)
    return build_model(arch, channels, size, 10, [0.5] * channels, [0.25] * channels).eval()


class Reordered(nn.Module):
    """`late` is registered first but runs second: module order is not execution order."""

    def __init__(self):
        super().__init__()
        self.late = nn.Conv2d(4, 6, 3)
        self.early = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(6 * 24 * 24, 10)

    def forward(self, x):
        return self.head(self.late(self.early(x)).flatten(1))


class ReluThenBatchNorm(nn.Module):
    """conv -> ReLU -> BatchNorm: the BatchNorm does not take L's output directly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(torch.relu(self.conv(x)))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(1, 4, 3)
        self.spare = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.used(x)


def example(channels: int = 1, size: int = 28) -> torch.Tensor:
    return torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_default_is_the_first_convolution_the_forward_pass_runs():
    layer = find_scan_layer(Reordered(), example())
    assert layer == ScanLayer(conv_name="early", neuron_name="early", channels=4)
    named = find_scan_layer(Reordered(), example(), "late")
    assert named == ScanLayer(conv_name="late", neuron_name="late", channels=6)


def test_mnist_cnn_neurons_are_conv1_itself():
    net = model("mnist_cnn")
    layer = find_scan_layer(net, example())
    assert layer == ScanLayer("conv1", "conv1", 32)
    assert layer.conv(net) is net.conv1 and layer.neuron_module(net) is net.conv1
    assert find_scan_layer(net, example(), "conv2") == ScanLayer("conv2", "conv2", 64)


def test_a_following_batchnorm_owns_the_neuron():
    net = model("cifar_cnn", 3, 32)
    assert find_scan_layer(net, example(3, 32)) == ScanLayer("conv1", "bn1", 32)
    assert find_scan_layer(net, example(3, 32), "conv3") == ScanLayer("conv3", "bn3", 128)
    layer = find_scan_layer(net, example(3, 32))
    assert layer.neuron_module(net) is net.bn1


def test_resnet18_stem_blocks_and_downsample():
    net = model("resnet18", 3, 32)
    x = example(3, 32)
    assert find_scan_layer(net, x) == ScanLayer("conv1", "bn1", 64)
    assert find_scan_layer(net, x, "layer1.0.conv2") == ScanLayer(
        "layer1.0.conv2", "layer1.0.bn2", 64
    )
    assert find_scan_layer(net, x, "layer2.0.downsample.0") == ScanLayer(
        "layer2.0.downsample.0", "layer2.0.downsample.1", 128
    )
    one_channel = model("resnet18", 1, 28)
    assert find_scan_layer(one_channel, example(1, 28)) == ScanLayer("conv1", "bn1", 64)


def test_a_batchnorm_after_an_activation_does_not_own_the_neuron():
    assert find_scan_layer(ReluThenBatchNorm(), example()) == ScanLayer("conv", "conv", 4)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("conv9", "'conv9' is not a module"),
        ("fc1", "'fc1' is not an nn.Conv2d"),
        ("relu1", "'relu1' is not an nn.Conv2d"),
    ],
)
def test_a_bad_name_is_a_clear_error_listing_the_candidates(name, message):
    with pytest.raises(ValueError, match=message) as err:
        find_scan_layer(model("mnist_cnn"), example(), name)
    assert "['conv1', 'conv2']" in str(err.value)


def test_a_convolution_that_never_runs_is_a_clear_error():
    with pytest.raises(ValueError, match="'spare' never runs.*\\['used'\\]"):
        find_scan_layer(Unused(), example(), "spare")


def test_a_model_without_convolutions_is_a_clear_error():
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        find_scan_layer(net, example())
    assert convolutions(net) == []


def test_the_search_leaves_the_model_as_it_was():
    net = model("cifar_cnn", 3, 32).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    find_scan_layer(net, example(3, 32))
    assert net.training and all(m.training for m in net.modules())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm stats untouched
    assert all(not m._forward_hooks for m in net.modules())


def test_convolutions_lists_every_conv_in_module_order():
    assert convolutions(model("cifar_cnn", 3, 32)) == ["conv1", "conv2", "conv3"]
    assert convolutions(Reordered()) == ["late", "early"]


def test_a_layer_of_one_neuron_or_a_stateless_batchnorm_after_it_cannot_be_scanned():
    """Issue 35: a scan ranks neurons against each other (at least 2), and a BatchNorm after L
    without running statistics makes every logit depend on the batch."""
    one = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(26 * 26, 10))
    with pytest.raises(ValueError, match="'0' has 1 neuron: a scan ranks neurons"):
        find_scan_layer(one.eval(), torch.zeros(1, 1, 28, 28))
    stateless = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4, track_running_stats=False),
        nn.Flatten(),
        nn.Linear(4 * 26 * 26, 10),
    )
    with pytest.raises(ValueError, match="BatchNorm 1 after scan.layer = '0' keeps no running"):
        find_scan_layer(stateless.eval(), torch.zeros(2, 1, 28, 28))
