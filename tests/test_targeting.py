"""Adversarial targeting T, R, D and the magnitude m (targeting.py, method.md section 2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fragile_neurons.attacks import targeting as targeting_module
from fragile_neurons.attacks.adversarial import fgsm_images
from fragile_neurons.attacks.targeting import (
    RELATIVE_FLOOR,
    excess_share,
    feature_maps,
    filter_gain,
    noise_share,
    noise_signs,
    surrogate_field,
    surrogate_signs,
    targeting,
)
from fragile_neurons.network.gates import gated
from fragile_neurons.network.layers import find_scan_layer
from fragile_neurons.network.models import build_model
from fragile_neurons.storage.records import ScanLayer

CPU = torch.device("cpu")


def one_responder(gain: float = 3.0) -> tuple[nn.Sequential, ScanLayer]:
    """A 1x1 convolution with four neurons of which only neuron 2 sees the input: the others are
    constants (their biases), so the perturbation moves neuron 2 alone."""
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[2] = gain
        conv.bias.copy_(torch.tensor([0.5, 1.0, -1.0, 2.0]))
    net = nn.Sequential()
    net.add_module("conv", conv)
    net.add_module("relu", nn.ReLU())
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(4 * 6 * 6, 10))
    return net.eval(), ScanLayer("conv", "conv", 4)


def unit_images(n: int, channels: int, size: int, seed: int, low=0.0, high=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, channels, size, size, generator=g)


def random_signs(shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, shape, generator=g).to(torch.int8)


def test_only_the_responding_neuron_is_targeted():
    net, layer = one_responder(gain=3.0)
    x = unit_images(10, 1, 6, seed=0, low=0.3, high=0.7)  # no clipping for eps <= 0.3
    signs = torch.where(random_signs(x.shape, 1) >= 0, 1, -1).to(torch.int8)
    eps = [0.05, 0.1, 0.3]
    result = targeting(net, layer, x, signs, eps, batch_size=4, device=CPU)
    assert result.effect.dtype == torch.float64 and result.effect.shape == (3, 4)
    expected_share = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.equal(result.share, expected_share.expand(3, 4))
    for i, e in enumerate(eps):  # |a_2(x') - a_2(x)| = 3 eps on every pixel
        assert result.effect[i, 2].item() == pytest.approx(3 * e, rel=1e-5)
        assert result.effect[i, [0, 1, 3]].abs().max() == 0
    m2 = (3 * x - 1).abs().mean().item()
    assert result.magnitude.tolist() == pytest.approx([0.5, 1.0, m2, 2.0], rel=1e-6)
    assert torch.allclose(result.relative_effect, result.effect / (result.magnitude + 1e-12))


def brute_force(neuron_output, x, signs, eps):
    """T, R, D, m straight from the definitions, one epsilon at a time, in float64."""
    clean = neuron_output(x).double()
    m = clean.abs().mean(dim=(0, 2, 3))
    effect = torch.stack(
        [
            (neuron_output(fgsm_images(x, signs, e)).double() - clean).abs().mean(dim=(0, 2, 3))
            for e in eps
        ]
    )
    return effect, effect / (m + 1e-12), effect / effect.sum(1, keepdim=True), m


def test_matches_the_definitions_on_a_batchnorm_neuron():
    """cifar_cnn: the neuron is bn1's channel k. Random BatchNorm statistics make it matter."""
    torch.manual_seed(0)
    net = build_model("cifar_cnn", 3, 32, 10, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]).eval()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.2, 0.2)
    x = (unit_images(12, 3, 32, seed=2) * 255).round().to(torch.uint8)
    signs = random_signs(x.shape, 3)
    layer = find_scan_layer(net, x[:1].float() / 255)
    assert layer.neuron_name == "bn1"
    eps = [1 / 255, 4 / 255, 16 / 255]
    result = targeting(net, layer, x, signs, eps, batch_size=5, device=CPU)

    def neuron_output(images):
        with torch.no_grad():
            return net.bn1(net.conv1(net.normalize(images)))

    effect, relative, share, m = brute_force(neuron_output, x.float() / 255, signs, eps)
    assert torch.allclose(result.effect, effect, rtol=1e-6, atol=0)
    assert torch.allclose(result.relative_effect, relative, rtol=1e-6, atol=0)
    assert torch.allclose(result.share, share, rtol=1e-6, atol=0)
    assert torch.allclose(result.magnitude, m, rtol=1e-6, atol=0)
    assert torch.allclose(result.share.sum(1), torch.ones(3, dtype=torch.float64))
    assert (result.effect[1:] > result.effect[:-1]).all()  # a larger step moves more


def test_does_not_depend_on_the_batch_size():
    torch.manual_seed(1)
    net = build_model("mnist_cnn", 1, 28, 10, [0.13], [0.3]).eval()
    layer = find_scan_layer(net, torch.zeros(1, 1, 28, 28))
    x = unit_images(11, 1, 28, seed=4)
    signs = random_signs(x.shape, 5)
    a = targeting(net, layer, x, signs, [0.1, 0.2], batch_size=11, device=CPU)
    b = targeting(net, layer, x, signs, [0.1, 0.2], batch_size=3, device=CPU)
    for name in ("effect", "relative_effect", "share", "magnitude"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0), name


def test_epsilon_zero_has_no_effect_and_no_share():
    net, layer = one_responder()
    x = unit_images(4, 1, 6, seed=0)
    result = targeting(net, layer, x, random_signs(x.shape, 1), [0.0], batch_size=4, device=CPU)
    assert result.effect.abs().max() == 0
    assert result.share.isnan().all()


def test_a_silent_neuron_has_a_finite_relative_effect():
    net, layer = one_responder()
    with torch.no_grad():
        net.conv.bias[0] = 0.0  # neuron 0: weight 0, bias 0, always exactly zero
    x = unit_images(4, 1, 6, seed=0)
    result = targeting(net, layer, x, random_signs(x.shape, 1), [0.1], batch_size=4, device=CPU)
    assert result.magnitude[0] == 0 and result.relative_effect[0, 0] == 0
    assert math.isfinite(result.relative_effect.sum().item())
    assert RELATIVE_FLOOR == 1e-12


def test_frame_has_one_row_per_neuron_and_epsilon():
    net, layer = one_responder()
    x = unit_images(4, 1, 6, seed=0, low=0.3, high=0.7)
    signs = torch.ones_like(x, dtype=torch.int8)
    result = targeting(
        net, layer, x, signs, [0.05, 0.1], ["0.05", "1/10"], batch_size=4, device=CPU
    )
    frame = result.frame()
    assert list(frame.columns) == [
        "neuron",
        "epsilon",
        "epsilon_label",
        "effect",
        "relative_effect",
        "share",
        "noise_share",
        "reference_share",
        "placebo_share",
        "surrogate_share",
        "magnitude",
        "excess_share",
        "null_excess",
        "filter_gain",
        "reference_excess",
        "placebo_excess",
        "surrogate_excess",
    ]
    assert len(frame) == 8
    assert frame["neuron"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert frame["epsilon_label"].tolist() == ["0.05", "1/10"] * 4
    row = frame[(frame.neuron == 2) & (frame.epsilon_label == "1/10")].iloc[0]
    assert row.effect == pytest.approx(0.3) and row.share == 1.0
    assert row.magnitude == pytest.approx(result.magnitude[2].item())
    assert frame.groupby("neuron")["magnitude"].nunique().eq(1).all()
    with pytest.raises(ValueError, match="lengths differ"):
        targeting(net, layer, x, signs, [0.05, 0.1], ["0.05"], batch_size=4, device=CPU)


def test_feature_maps_stop_at_the_neuron_module_and_leave_no_hook():
    net, layer = one_responder()

    def boom(*_):
        raise AssertionError("the forward pass went past the neuron module")

    net.fc.register_forward_hook(boom)
    x = unit_images(2, 1, 6, seed=0)
    out = feature_maps(net, net.conv, x)
    assert torch.equal(out, net.conv(x))
    assert not net.conv._forward_hooks


def test_feature_maps_see_a_gate_on_the_neuron_module():
    net, layer = one_responder()
    x = unit_images(2, 1, 6, seed=0)
    gains = torch.tensor([1.0, 0.0, 2.0, 1.0])
    with gated(net, layer, gains):
        out = feature_maps(net, net.conv, x)
    assert torch.allclose(out, net.conv(x) * gains.view(1, -1, 1, 1))


def test_bad_inputs_are_clear_errors():
    net, layer = one_responder()
    x = unit_images(4, 1, 6, seed=0)
    signs = torch.ones_like(x, dtype=torch.int8)
    with pytest.raises(ValueError, match="do not match"):
        targeting(net, layer, x, signs[:2], [0.1], batch_size=4, device=CPU)
    with pytest.raises(ValueError, match="empty"):
        targeting(net, layer, x[:0], signs[:0], [0.1], batch_size=4, device=CPU)
    with pytest.raises(ValueError, match="not B x 5"):
        targeting(net, ScanLayer("conv", "conv", 5), x, signs, [0.1], batch_size=4, device=CPU)
    with pytest.raises(ValueError, match="did not run"):
        feature_maps(net, nn.Conv2d(1, 1, 1), x)


# --- the controls: noise share N, excess share X, filter gain G (method.md section 2) ---------


def pair_filters(bn: nn.BatchNorm2d | None = None) -> tuple[nn.Sequential, ScanLayer]:
    """A 1x2 convolution with three chosen filters, w0 = (1, 1), w1 = (1, -1), w2 = (2, 0): under
    a perturbation eps * s (no clipping) neuron 0 moves by eps |s_p + s_p+1| at each position,
    neuron 1 by eps |s_p - s_p+1|, neuron 2 by 2 eps, whatever s is."""
    conv = nn.Conv2d(1, 3, (1, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0], [2.0, 0.0]]).view(3, 1, 1, 2))
        conv.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    net = nn.Sequential()
    net.add_module("conv", conv)
    if bn is not None:
        net.add_module("bn", bn)
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(3 * 4 * 4, 10))
    neuron = "conv" if bn is None else "bn"
    return net.eval(), ScanLayer("conv", neuron, 3)


def by_hand(signs: torch.Tensor, eps: float) -> torch.Tensor:
    """T of `pair_filters` under eps * signs: eps * (2 q, 2 (1 - q), 2), q the share of
    horizontally adjacent pixel pairs whose signs agree."""
    s = signs.double()
    agree = (s[..., :-1] == s[..., 1:]).double().mean().item()
    return eps * torch.tensor([2 * agree, 2 * (1 - agree), 2.0], dtype=torch.float64)


def test_noise_signs_are_seeded_signs_of_one_draw():
    a = noise_signs((6, 1, 4, 5), seed=3)
    assert a.dtype == torch.int8 and a.shape == (6, 1, 4, 5)
    assert set(a.unique().tolist()) == {-1, 1}
    assert torch.equal(a, noise_signs((6, 1, 4, 5), seed=3))
    assert not torch.equal(a, noise_signs((6, 1, 4, 5), seed=4))
    assert abs(a.double().mean().item()) < 0.2  # about as many of each


def test_attack_and_noise_shares_match_a_hand_computation():
    net, layer = pair_filters()
    x = 0.3 + 0.4 * torch.rand(6, 1, 4, 5, generator=torch.Generator().manual_seed(0))
    eps = [0.05, 0.2]  # no clipping: x +- 0.2 stays in [0.1, 0.9]
    constant = torch.ones_like(x, dtype=torch.int8)  # an attack that moves every pixel up
    attack = targeting(net, layer, x, constant, eps, batch_size=4, device=CPU)
    for i, e in enumerate(eps):
        assert torch.allclose(attack.effect[i], by_hand(constant, e), rtol=1e-5, atol=1e-6)
    half = torch.tensor([[0.5, 0.0, 0.5]] * 2, dtype=torch.float64)
    assert torch.allclose(attack.share, half, atol=1e-6)  # float32 rounding: 1e-8, not 0

    noise = noise_share(net, layer, x, eps, seed=7, batch_size=4, device=CPU)
    t = by_hand(noise_signs(x.shape, 7), 1.0)
    assert torch.allclose(noise, (t / t.sum()).expand(2, 3), rtol=1e-5, atol=0)
    assert torch.equal(noise, noise_share(net, layer, x, eps, seed=7, batch_size=6, device=CPU))

    excess = excess_share(attack.share, noise)
    expected = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64) / (t / t.sum())
    assert torch.allclose(excess, expected, rtol=1e-5, atol=1e-6)


def test_the_targeting_record_holds_the_controls_of_the_primitives():
    """The attack stage's record carries N (seeded), X, the null of X and G: on the one-neuron
    case the noise moves neuron 2 alone, so N = D = 1 there, X = 1 and its null = 1; the others
    never move (X undefined); G is the filters' norms."""
    net, layer = one_responder(gain=3.0)
    x = unit_images(10, 1, 6, seed=0, low=0.3, high=0.7)
    eps = [0.05, 0.1]
    signs = torch.ones_like(x, dtype=torch.int8)
    record = targeting(net, layer, x, signs, eps, noise_seed=5, batch_size=4, device=CPU)
    noise = noise_share(net, layer, x, eps, seed=5, batch_size=4, device=CPU)
    assert torch.equal(record.noise_share, noise) and record.noise_seed == 5
    assert torch.equal(record.excess_share.isnan(), torch.tensor([True, True, False, True]))
    assert record.excess_share[2] == 1.0 and record.null_excess[2] == 1.0
    assert record.filter_gain.tolist() == pytest.approx([0.0, 0.0, 3.0, 0.0])
    other = targeting(net, layer, x, signs, eps, noise_seed=6, batch_size=4, device=CPU)
    assert torch.equal(other.share, record.share)


def test_the_null_draw_is_the_second_draw_of_the_noise_generator():
    first, second = noise_signs((3, 1, 4, 4), seed=2, draws=2)
    assert torch.equal(first, noise_signs((3, 1, 4, 4), seed=2))
    assert not torch.equal(first, second)


def test_excess_share_is_the_ratio_of_means_and_undefined_without_noise():
    share = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0]], dtype=torch.float64)
    noise = torch.tensor([[0.2, 0.8, 0.0], [0.2, 0.8, 0.0]], dtype=torch.float64)
    excess = excess_share(share, noise)
    assert excess[:2].tolist() == pytest.approx([0.4 / 0.2, 0.6 / 0.8])
    assert excess[2].isnan()
    with pytest.raises(ValueError, match="E x N"):
        excess_share(share, noise[:1])


def test_filter_gain_is_the_filter_norm_times_the_batchnorm_scale():
    net, layer = pair_filters()
    root2 = math.sqrt(2)
    assert filter_gain(net, layer).tolist() == pytest.approx([root2, root2, 2.0])

    bn = nn.BatchNorm2d(3, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
        bn.running_var.copy_(torch.tensor([3.0, 0.0, 1.0]))
        bn.running_mean.copy_(torch.tensor([5.0, 5.0, 5.0]))  # shifts do not scale
    net, layer = pair_filters(bn)
    assert find_scan_layer(net, torch.zeros(1, 1, 4, 5)) == layer
    expected = [
        root2 * 2 / math.sqrt(3.001),
        root2 * 1 / math.sqrt(0.001),
        2.0 * 0.5 / math.sqrt(1.001),
    ]
    gain = filter_gain(net, layer)
    assert gain.dtype == torch.float64 and gain.tolist() == pytest.approx(expected, rel=1e-6)

    net, layer = pair_filters(nn.BatchNorm2d(3, affine=False))  # gamma = 1, var = 1
    assert filter_gain(net, layer).tolist() == pytest.approx(
        [root2 / math.sqrt(1 + 1e-5), root2 / math.sqrt(1 + 1e-5), 2 / math.sqrt(1 + 1e-5)]
    )
    net, layer = pair_filters(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        filter_gain(net, layer)


def structured_gradient(images: int, channels: int, height: int, width: int, seed: int = 0):
    """A gradient with spatial structure (smoothed noise and a blob), odd and even sides."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images, channels, height, width, generator=generator)
    smooth = (noise + noise.roll(1, -1) + noise.roll(1, -2) + noise.roll((1, 1), (-2, -1))) / 2
    smooth[:, :, 2:5, 2:5] += 2.0
    return smooth


def amplitude_error(surrogate: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """|| |F(sur)| - |F(s)| ||_2 / || |F(s)| ||_2 per image, over all channels (full fft2)."""
    want = torch.fft.fft2(signs.double()).abs()
    got = torch.fft.fft2(surrogate.double()).abs()
    return (got - want).flatten(1).norm(dim=1) / want.flatten(1).norm(dim=1)


def test_the_surrogate_matches_the_spectrum_of_the_signs_better_with_more_iterations():
    """(a) The reported error is the surrogate's relative amplitude error against s = sign(grad),
    and it falls with the IAAFT rounds: never up, and lower at 20 rounds than at 1."""
    gradient = structured_gradient(6, 3, 9, 8)
    s = gradient.sign().to(torch.int8)
    errors = []
    for iterations in (1, 2, 5, 20):
        surrogate = surrogate_signs(gradient, seed=5, iterations=iterations)
        assert surrogate.iterations == iterations and surrogate.seed == 5
        assert surrogate.error.dtype == torch.float64 and surrogate.error.shape == (6,)
        assert torch.allclose(surrogate.error, amplitude_error(surrogate.signs, s), atol=1e-12)
        errors.append(surrogate.error)
    means = [e.mean().item() for e in errors]
    assert all(a >= b - 1e-12 for a, b in zip(means[:-1], means[1:], strict=True)), means
    assert means[-1] < means[0] and means[-1] < 0.5, means
    assert (errors[-1] <= errors[0] + 1e-12).all()


def test_the_surrogate_keeps_the_channels_phase_relations():
    """(b) One phase field per image, added to every channel: identical channels stay identical,
    and a channel that is a shifted copy of another stays that shifted copy of it."""
    one = structured_gradient(4, 1, 10, 10)
    same = surrogate_signs(one.expand(4, 3, 10, 10), seed=2, iterations=20).signs
    assert torch.equal(same[:, 0], same[:, 1]) and torch.equal(same[:, 0], same[:, 2])
    shifted = torch.cat([one, one.roll((2, 3), (-2, -1)), one.roll(-4, -1)], dim=1)
    for iterations in (1, 20):
        signs = surrogate_signs(shifted, seed=2, iterations=iterations).signs
        assert torch.equal(signs[:, 1], signs[:, 0].roll((2, 3), (-2, -1)))
        assert torch.equal(signs[:, 2], signs[:, 0].roll(-4, -1))
    # so the cross-channel phase differences of the spectrum are those of s
    spectrum = torch.fft.fft2(signs.double())
    original = torch.fft.fft2(shifted.sign().double())
    strong = (spectrum[:, 0].abs() > 1e-6) & (original[:, 0].abs() > 1e-6)
    got = (spectrum[:, 1] * spectrum[:, 0].conj()).angle()[strong]
    want = (original[:, 1] * original[:, 0].conj()).angle()[strong]
    assert torch.allclose(torch.polar(torch.ones_like(got), got - want).real, torch.ones_like(got))


def test_the_surrogate_is_plus_minus_one_with_the_counts_of_s_and_other_signs():
    """(c) and (e): values exactly -1 and +1 (int8) with each channel's count of +1 that of s,
    and a substantial share of the pixels differs from s; zeros of s stay zeros in number."""
    gradient = structured_gradient(6, 3, 9, 8)
    s = gradient.sign().to(torch.int8)
    surrogate = surrogate_signs([gradient], seed=5).signs
    assert surrogate.dtype == torch.int8 and surrogate.shape == s.shape
    assert set(surrogate.unique().tolist()) == {-1, 1}
    assert torch.equal((surrogate == 1).sum(dim=(2, 3)), (s == 1).sum(dim=(2, 3)))
    differ = (surrogate != s).double().mean().item()
    assert 0.25 < differ < 0.75, differ
    gradient[:, :, 0, :] = 0.0  # a row of exact zeros
    zeros = surrogate_signs(gradient, seed=5).signs
    for value in (-1, 0, 1):
        count = (gradient.sign() == value).sum(dim=(2, 3))
        assert torch.equal((zeros == value).sum(dim=(2, 3)), count)
    flat = torch.zeros(2, 1, 4, 4)  # no perturbation at all: none, with no error
    nothing = surrogate_signs(flat, seed=5)
    assert torch.equal(nothing.signs, flat.to(torch.int8)) and (nothing.error == 0).all()


def test_the_surrogate_is_seeded_and_does_not_depend_on_the_batches(monkeypatch):
    """(d) The same seed gives the same bytes, however the images are batched or chunked
    inside; another seed, other signs."""
    gradient = structured_gradient(11, 3, 9, 8)
    whole = surrogate_signs(gradient, seed=5)
    batched = surrogate_signs([gradient[:2], gradient[2:5], gradient[5:]], seed=5)
    assert torch.equal(batched.signs, whole.signs) and torch.equal(batched.error, whole.error)
    as_signs = surrogate_signs(gradient.sign().to(torch.int8), seed=5)  # only the sign counts
    assert torch.equal(as_signs.signs, whole.signs)
    monkeypatch.setattr(targeting_module, "SURROGATE_CHUNK", 3)
    chunked = surrogate_signs([gradient[:4], gradient[4:]], seed=5)
    assert torch.equal(chunked.signs, whole.signs) and torch.equal(chunked.error, whole.error)
    assert not torch.equal(surrogate_signs(gradient, seed=6).signs, whole.signs)


def test_the_surrogate_field_checks_its_inputs():
    signs = torch.ones(2, 3, 6, 5)
    phase = torch.zeros(2, 6, 3, dtype=torch.float64)
    field, error = surrogate_field(signs, phase, 1)
    assert field.dtype == torch.float64 and error.shape == (2,)
    with pytest.raises(ValueError, match="B x H"):
        surrogate_field(signs, phase[:, :, :2], 1)
    with pytest.raises(ValueError, match="iterations"):
        surrogate_field(signs, phase, 0)
    with pytest.raises(ValueError, match="B x C x H x W"):
        surrogate_signs(torch.ones(3, 6, 5), seed=1)
