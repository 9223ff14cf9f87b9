"""The fast scan gives the naive scan's numbers on every path (method.md section 3)."""

from collections import OrderedDict

import pytest
import torch
from oracles import naive_scan
from torch import nn

from fragile_neurons.attacks.adversarial import fgsm_sweep
from fragile_neurons.attacks.dropout import adaptive_scan, scan, with_clean
from fragile_neurons.network.gates import drop_gains, gated
from fragile_neurons.network.inference import accuracy_and_loss
from fragile_neurons.network.layers import find_scan_layer
from fragile_neurons.network.models import Normalize, build_model
from fragile_neurons.storage.records import ScanMeasurements

EPSILONS = [0.0, 0.05, 0.2]


pytestmark = pytest.mark.usefixtures("one_thread")


def randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, lo, hi in (
                (m.running_mean, -0.5, 0.5),
                (m.running_var, 0.5, 2.0),
                (m.weight.data, 0.5, 1.5),
                (m.bias.data, -0.5, 0.5),
            ):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


def small(kind: str) -> tuple[nn.Sequential, int, int]:
    """Tiny Sequentials with ReLU, pooling and BatchNorm between the scanned layer and the next."""
    torch.manual_seed(0)
    if kind == "bn_between_conv":  # neuron conv1; relu, BatchNorm, max-pool; dilated padded conv
        relu2 = nn.ReLU(inplace=True)  # in place, right after the next layer
        layers = [
            ("conv1", nn.Conv2d(1, 6, 3)),
            ("relu1", nn.ReLU()),
            ("bn1", nn.BatchNorm2d(6)),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(6, 5, 3, padding=2, dilation=2)),
            ("relu2", relu2),
            ("pool2", nn.AvgPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(5 * 3 * 3, 10)),
        ]
        channels, size = 1, 14
    elif kind == "bn_neuron_linear":  # neuron bn1; relu, max-pool, flatten, dropout, linear
        layers = [
            ("conv1", nn.Conv2d(3, 4, 3, bias=False)),
            ("bn1", nn.BatchNorm2d(4)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("dropout", nn.Dropout(0.5)),
            ("fc", nn.Linear(4 * 5 * 5, 10)),
        ]
        channels, size = 3, 12
    else:  # "strided": avg-pool, in-place ReLU, then a strided, padded conv
        layers = [
            ("conv1", nn.Conv2d(1, 5, 3, padding=1)),
            ("pool1", nn.AvgPool2d(2)),
            ("relu1", nn.ReLU(True)),
            ("conv2", nn.Conv2d(5, 4, 3, stride=2, padding=1)),
            ("bn2", nn.BatchNorm2d(4)),
            ("relu2", nn.ReLU()),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(4 * 4 * 4, 10)),
        ]
        channels, size = 1, 16
    normalize = Normalize([0.5] * channels, [0.3] * channels)
    model = nn.Sequential(OrderedDict([("normalize", normalize), *layers]))
    return randomise_batchnorm(model, 1), channels, size


def data(model, channels, size, n=12, seed=0):
    """Images, and as labels the intact model's own predictions (so dropping neurons hurts)."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, channels, size, size, generator=g) * 255).to(torch.uint8)
    signs = torch.randint(-1, 2, images.shape, generator=g, dtype=torch.int8)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(dim=1)
    return images, labels, signs


def assert_same(fast: ScanMeasurements, naive: ScanMeasurements, flips: bool = True):
    assert torch.equal(fast.intact_correct, naive.intact_correct)
    assert torch.equal(fast.dropped_correct, naive.dropped_correct)
    assert torch.equal(fast.dropped_lost, naive.dropped_lost)
    assert torch.equal(fast.dropped_gained, naive.dropped_gained)
    assert torch.equal(fast.first_half_intact_correct, naive.first_half_intact_correct)
    assert torch.equal(fast.first_half_dropped_correct, naive.first_half_dropped_correct)
    torch.testing.assert_close(fast.intact_loss, naive.intact_loss, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.dropped_loss, naive.dropped_loss, rtol=0, atol=1e-5)
    for name in (
        "first_half_intact_loss_sum",
        "first_half_dropped_loss_sum",
        "second_half_intact_loss_sum",
        "second_half_dropped_loss_sum",
    ):  # sums over up to half the images: the tolerance of a mean times the images
        tolerance = 1e-5 * max(fast.samples - fast.half_samples, 1)
        got, oracle = getattr(fast, name), getattr(naive, name)
        torch.testing.assert_close(got, oracle, rtol=0, atol=tolerance)
    for m, exact in ((fast, True), (naive, False)):  # the halves add up to the whole
        whole = torch.cat([m.intact_loss[None], m.dropped_loss]) * m.samples
        halves = torch.cat(
            [m.first_half_intact_loss_sum[None], m.first_half_dropped_loss_sum]
        ) + torch.cat([m.second_half_intact_loss_sum[None], m.second_half_dropped_loss_sum])
        # the scan sums the same float32 losses twice; the oracle's halves are its own losses
        tolerance = 1e-12 if exact else 1e-6
        torch.testing.assert_close(halves, whole, rtol=tolerance, atol=tolerance)
    # not vacuous: dropping neurons changes the losses and (flips) some predictions
    assert (naive.dropped_loss - naive.intact_loss).abs().max() > 1e-3
    assert not flips or (naive.dropped_correct != naive.intact_correct).any()


CPU = torch.device("cpu")


@pytest.mark.parametrize("kind", ["bn_between_conv", "bn_neuron_linear", "strided"])
@pytest.mark.parametrize("group", [None, 2])
def test_fast_scan_equals_naive_scan_on_small_models(kind, group):
    model, channels, size = small(kind)
    images, labels, signs = data(model, channels, size)
    layer = find_scan_layer(model, images[:2].float() / 255)
    assert layer.neuron_name == ("bn1" if kind == "bn_neuron_linear" else "conv1")
    fast = scan(
        model, layer, images, labels, signs, EPSILONS, batch_size=5, device=CPU, group=group
    )
    assert fast.path == "delta"
    assert_same(
        fast, naive_scan(model, layer, images, labels, signs, EPSILONS, batch_size=7, device=CPU)
    )


@pytest.mark.parametrize("n", [12, 13])
def test_the_first_half_counts_are_a_scan_of_the_first_half_alone(n):
    """The split-half reliability's counts: the scan of S records, for its first n // 2 images
    (a half that ends inside a batch), exactly what a scan of those images alone counts."""
    model, channels, size = small("bn_between_conv")
    images, labels, signs = data(model, channels, size, n=n)
    layer = find_scan_layer(model, images[:2].float() / 255)
    whole = scan(model, layer, images, labels, signs, EPSILONS, batch_size=5, device=CPU)
    half = n // 2
    alone = scan(
        model, layer, images[:half], labels[:half], signs[:half], EPSILONS, batch_size=5,
        device=CPU,
    )  # fmt: skip
    assert whole.half_samples == half
    assert torch.equal(whole.first_half_intact_correct, alone.intact_correct)
    assert torch.equal(whole.first_half_dropped_correct, alone.dropped_correct)
    assert (whole.dropped_correct - whole.first_half_dropped_correct).max() <= n - half
    # and the halves' summed losses are those of a scan of each half alone
    rest = scan(
        model, layer, images[half:], labels[half:], signs[half:], EPSILONS, batch_size=5,
        device=CPU,
    )  # fmt: skip
    for name, part in (("first", alone), ("second", rest)):
        for net in ("intact", "dropped"):
            got = getattr(whole, f"{name}_half_{net}_loss_sum")
            mean = getattr(part, f"{net}_loss")
            torch.testing.assert_close(got / part.samples, mean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["mnist_cnn", "cifar_cnn"])
def test_fast_scan_equals_naive_scan_on_pipeline_models(arch):
    channels, size = (1, 28) if arch == "mnist_cnn" else (3, 16)
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(arch, channels, size, 10, [0.5], [0.3]), 2)
    images, labels, signs = data(model, channels, size, n=6)
    layer = find_scan_layer(model, images[:2].float() / 255)
    fast = scan(model, layer, images, labels, signs, EPSILONS, batch_size=6, device=CPU)
    assert fast.path == "delta"
    naive = naive_scan(model, layer, images, labels, signs, EPSILONS, batch_size=6, device=CPU)
    assert_same(fast, naive, flips=False)  # 32 random neurons: one alone may flip nothing


@pytest.mark.parametrize("name, path", [(None, "prefix"), ("layer1.0.conv1", "hooks")])
def test_fast_scan_equals_naive_scan_on_resnet18(name, path):
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model("resnet18", 1, 16, 10, [0.5], [0.3]), 3)
    images, labels, signs = data(model, 1, 16, n=4)
    layer = find_scan_layer(model, images[:2].float() / 255, name)
    eps = [0.0, 0.1]
    fast = scan(model, layer, images, labels, signs, eps, batch_size=4, device=CPU, group=24)
    assert fast.path == path
    naive = naive_scan(model, layer, images, labels, signs, eps, batch_size=4, device=CPU)
    assert_same(fast, naive, flips=False)


def test_stacked_copies_keep_the_channels_last_layout():
    """The prefix and hooks paths run the rest of the network on stacked copies: in the
    layout the model's activations have (channels-last), or its convolutions run slower."""
    from fragile_neurons.attacks.dropout import _stack

    a = torch.rand(3, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    stacked = _stack(a, 4)
    assert stacked.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(stacked, a.repeat(4, 1, 1, 1))
    assert torch.equal(_stack(torch.arange(3), 2), torch.tensor([0, 1, 2, 0, 1, 2]))


def test_intact_row_is_the_plain_model():
    model, channels, size = small("bn_between_conv")
    images, labels, signs = data(model, channels, size)
    layer = find_scan_layer(model, images[:2].float() / 255)
    result = scan(model, layer, images, labels, signs, [0.0], batch_size=100, device=CPU)
    with torch.no_grad():
        accuracy, loss = accuracy_and_loss(model(images.float() / 255), labels)
    assert result.intact_correct.item() == len(labels) == round(accuracy * len(labels))
    assert result.intact_loss.item() == pytest.approx(loss, abs=1e-6)


def test_intact_accuracies_are_the_attack_stages():
    """The same images and signs give the attack stage's accuracies (robustness.fgsm_sweep)."""
    model, channels, size = small("bn_neuron_linear")
    images, labels, _ = data(model, channels, size, n=10)
    labels = labels.roll(1)  # some wrong, so the accuracies are not all 1
    sweep = fgsm_sweep(model, images, labels, EPSILONS, batch_size=4, device=CPU)
    layer = find_scan_layer(model, images[:2].float() / 255)
    result = scan(model, layer, images, labels, sweep.signs, EPSILONS, batch_size=3, device=CPU)
    assert result.intact_accuracy.tolist() == sweep.accuracy
    assert result.intact_loss.tolist() == pytest.approx(sweep.loss, abs=1e-6)


def test_adaptive_scan_attacks_each_dropped_network():
    model, channels, size = small("bn_between_conv")
    images, labels, signs = data(model, channels, size, n=8)
    layer = find_scan_layer(model, images[:2].float() / 255)
    result = adaptive_scan(
        model, layer, images, labels, signs, EPSILONS, batch_size=8, device=CPU, group=4
    )
    transfer = scan(model, layer, images, labels, signs, EPSILONS, batch_size=8, device=CPU)
    assert torch.equal(result.intact_correct, transfer.intact_correct)
    assert torch.equal(result.dropped_correct[:, 0], transfer.dropped_correct[:, 0])  # clean
    assert torch.equal(result.dropped_lost, transfer.dropped_lost)
    assert torch.equal(result.dropped_gained, transfer.dropped_gained)
    x = images.float() / 255
    for k in range(layer.channels):  # by hand: FGSM against the dropped network itself
        with gated(model, layer, drop_gains(layer.channels, [k])[0]):
            x_req = x.clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(x_req), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_req)
            with torch.no_grad():
                for e, eps in enumerate(EPSILONS):
                    adv = (x + eps * grad.sign()).clamp(0, 1)
                    correct = (model(adv).argmax(dim=1) == labels).sum().item()
                    assert result.dropped_correct[k, e].item() == correct
    assert not torch.equal(result.dropped_correct, transfer.dropped_correct)


def test_table_and_checks():
    model, channels, size = small("strided")
    images, labels, signs = data(model, channels, size, n=4)
    layer = find_scan_layer(model, images[:2].float() / 255)
    names = ["0", "0.05", "1/5"]
    result = scan(model, layer, images, labels, signs, EPSILONS, names, batch_size=4, device=CPU)
    table = result.frame()
    assert len(table) == layer.channels * len(EPSILONS)
    row = table[(table.neuron == 2) & (table.epsilon_label == "1/5")].iloc[0]
    assert row.impact == pytest.approx(row.accuracy_intact - row.accuracy_dropped)
    assert row.accuracy_dropped == result.dropped_correct[2, 2].item() / 4
    assert ScanMeasurements.from_dict(result.to_dict()).dropped_loss.equal(result.dropped_loss)
    assert with_clean([0.1, 0.2], ["0.1", "0.2"]) == ([0.0, 0.1, 0.2], ["0", "0.1", "0.2"])
    assert with_clean([0.0, 0.2], ["0", "0.2"]) == ([0.0, 0.2], ["0", "0.2"])
    with pytest.raises(ValueError, match="signs"):
        scan(model, layer, images, labels, signs[:2], EPSILONS, batch_size=4, device=CPU)
    with pytest.raises(ValueError, match="epsilon"):
        scan(model, layer, images, labels, signs, [0.0, 1.5], batch_size=4, device=CPU)
    with pytest.raises(ValueError, match=r"must hold 0 \(the clean images\) once"):
        naive_scan(model, layer, images, labels, signs, [0.05, 0.2], batch_size=4, device=CPU)


def half_right(model, images, n_right):
    """Labels the intact model gets right on the first `n_right` images; on the others, its
    second choice, the class a dropped neuron most likely turns the prediction to."""
    with torch.no_grad():
        top2 = model(images.float() / 255).topk(2, dim=1).indices
    return torch.cat([top2[:n_right, 0], top2[n_right:, 1]])


@pytest.mark.parametrize("kind", ["bn_between_conv", "strided"])
def test_discordant_counts_by_hand_on_every_path(kind):
    """lost: images the intact network gets right and the one without neuron k wrong; gained:
    the reverse, on the clean images; the same from the fast, the naive and the adaptive scan."""
    model, channels, size = small(kind)
    images, _, signs = data(model, channels, size, n=16)
    labels = half_right(model, images, 8)
    layer = find_scan_layer(model, images[:2].float() / 255)
    x = images.float() / 255
    with torch.no_grad():
        intact = model(x).argmax(dim=1) == labels
        lost, gained = [], []
        for k in range(layer.channels):
            with gated(model, layer, drop_gains(layer.channels, [k])[0]):
                dropped = model(x).argmax(dim=1) == labels
            lost.append(int((intact & ~dropped).sum()))
            gained.append(int((~intact & dropped).sum()))
    assert sum(lost) > 0 and sum(gained) > 0  # both kinds of disagreement occur
    options = {"batch_size": 5, "device": CPU}
    eps = [0.1, 0.0, 0.2]  # the clean column need not come first
    for result in (
        scan(model, layer, images, labels, signs, eps, **options),
        scan(model, layer, images, labels, signs, eps, **options, group=2),
        naive_scan(model, layer, images, labels, signs, eps, **options),
        adaptive_scan(model, layer, images, labels, signs, eps, **options, group=3),
    ):
        assert result.dropped_lost.tolist() == lost, result.path
        assert result.dropped_gained.tolist() == gained, result.path
        assert result.intact_correct[1].item() == int(intact.sum()) < len(images)
