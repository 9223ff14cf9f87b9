"""The channel gate: ones are the intact model, dropping equals zeroing by hand, folding equals
gating (method.md, "The channel gate")."""

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from fragile_neurons.network.gates import drop_gains, fold, gated
from fragile_neurons.network.layers import find_scan_layer
from fragile_neurons.network.models import build_model, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def make(arch, channels, size, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, channels, size, 10, [0.5] * channels, [0.25] * channels).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(4, channels, size, size, generator=torch.Generator().manual_seed(seed))
    return model, x


CASES = {  # architecture, input channels, size, scan.layer -> expected neuron module
    "mnist_cnn": ("mnist_cnn", 1, 28, None, "conv1"),
    "cifar_cnn": ("cifar_cnn", 3, 16, None, "bn1"),
    "resnet18": ("resnet18", 1, 16, None, "bn1"),
    "resnet18-nested": ("resnet18", 1, 16, "layer1.0.conv1", "layer1.0.bn1"),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    arch, channels, size, name, neuron = CASES[request.param]
    model, x = make(arch, channels, size)
    layer = find_scan_layer(model, x, name)
    assert layer.neuron_name == neuron
    return model, x, layer


@torch.no_grad()
def test_gate_of_ones_is_the_intact_model(case):
    model, x, layer = case
    with gated(model, layer, torch.ones(layer.channels)):
        gated_logits = model(x)
    assert torch.equal(gated_logits, model(x))


@torch.no_grad()
def test_dropping_neuron_equals_zeroing_it_by_hand(case):
    model, x, layer = case
    k = 3
    by_hand = copy.deepcopy(model)
    module = layer.neuron_module(by_hand)  # the conv's filter k, or the BatchNorm's affine k
    module.weight[k] = 0
    if module.bias is not None:
        module.bias[k] = 0
    seen = []
    hook = layer.neuron_module(model).register_forward_hook(lambda m, i, o: seen.append(o))
    with gated(model, layer, drop_gains(layer.channels, [k])[0]):
        dropped = model(x)
    hook.remove()
    assert not torch.equal(dropped, model(x))
    torch.testing.assert_close(dropped, by_hand(x), rtol=1e-5, atol=1e-5)
    assert layer.neuron_module(model)._forward_hooks == {}  # the gate is gone after the block
    assert seen[0][:, k].abs().sum() > 0  # the hook sees the module's own output


@torch.no_grad()
def test_fold_equals_gate(case):
    model, x, layer = case
    gains = torch.rand(layer.channels, generator=torch.Generator().manual_seed(1)) * 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold(model, layer, gains)
    with gated(model, layer, gains):
        expected = model(x)
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@torch.no_grad()
def test_folded_model_is_an_ordinary_checkpoint(tmp_path):
    model, x = make("cifar_cnn", 3, 16)
    layer = find_scan_layer(model, x)
    gains = drop_gains(layer.channels, [0])[0] * 2.0
    spec = {"arch": "cifar_cnn", "channels": 3, "size": 16, "classes": 10}
    save_checkpoint(tmp_path / "hardened.pt", fold(model, layer, gains), spec)
    loaded, _ = load_checkpoint(tmp_path / "hardened.pt", "cifar_cnn")
    with gated(model, layer, gains):
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_stacked_gates_equal_separate_gates():
    model, x = make("mnist_cnn", 1, 28)
    layer = find_scan_layer(model, x)
    gains = drop_gains(layer.channels, [0, 5, 31])
    gains[1, 7] = 2.5
    with gated(model, layer, gains):
        stacked = model(x.repeat(3, 1, 1, 1)).view(3, len(x), -1)
    for g in range(3):
        with gated(model, layer, gains[g]):
            torch.testing.assert_close(stacked[g], model(x), rtol=1e-5, atol=1e-5)


def test_bad_gains_are_refused():
    model, x = make("mnist_cnn", 1, 28)
    layer = find_scan_layer(model, x)
    with pytest.raises(ValueError, match="shape"), gated(model, layer, torch.ones(5)):
        pass
    with pytest.raises(ValueError, match="finite"):
        fold(model, layer, torch.full((layer.channels,), float("nan")))
    with pytest.raises(ValueError, match="one gate"):
        fold(model, layer, torch.ones(2, layer.channels))
    with pytest.raises(ValueError, match="equal copies"), gated(model, layer, torch.ones(3, 32)):
        model(x)
    assert torch.equal(drop_gains(4, [1, 3]), torch.tensor([[1.0, 0, 1, 1], [1, 1, 1, 0]]))


def test_a_gate_after_a_batchnorm_without_affine_cannot_be_folded():
    model = nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 4, 3)),
                ("bn1", nn.BatchNorm2d(4, affine=False)),
                ("relu1", nn.ReLU()),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(4 * 26 * 26, 10)),
            ]
        )
    ).eval()
    layer = find_scan_layer(model, torch.rand(1, 1, 28, 28))
    assert layer.neuron_name == "bn1"
    with pytest.raises(ValueError, match="no weight to scale"):
        fold(model, layer, torch.ones(4))
