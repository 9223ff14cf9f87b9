"""The hardened+recalibrated arm's BatchNorm recalibration (method.md section 5): which
BatchNorms it touches, that it touches nothing else, that it is seeded and deterministic, and
that the evaluate stage rebuilds exactly the recalibrated network from the record."""

from __future__ import annotations

import torch
from conftest import gains_record

from fragile_neurons.network.gates import fold
from fragile_neurons.network.inference import as_input
from fragile_neurons.network.layers import find_scan_layer
from fragile_neurons.network.models import build_model
from fragile_neurons.network.recalibration import (
    STATISTICS,
    later_batchnorms,
    recalibrate,
    statistics,
    with_statistics,
)
from fragile_neurons.pipeline.harden import recalibrated

CPU = torch.device("cpu")


def _cifar_cnn():
    torch.manual_seed(0)
    model = build_model("cifar_cnn", 3, 32, 10, [0.5] * 3, [0.25] * 3).eval()
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))  # fmt: skip
    layer = find_scan_layer(model, as_input(images[:1], CPU))
    return model, layer, images


def test_the_batchnorms_after_the_neurons_are_recalibrated_and_nothing_else():
    model, layer, images = _cifar_cnn()
    assert layer.neuron_name == "bn1"  # conv1's BatchNorm carries the neurons
    names = later_batchnorms(model, layer, as_input(images[:1], CPU))
    assert names == ["bn2", "bn3"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = recalibrate(model, names, images, batch_size=16, device=CPU)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy
    after = out.state_dict()
    touched = {f"{n}.{s}" for n in names for s in (*STATISTICS, "num_batches_tracked")}
    for key, value in before.items():
        if key in touched:
            continue
        assert torch.equal(value, after[key]), key  # every weight, bias and bn1's statistics
    for name in names:
        for stat in STATISTICS:
            assert not torch.equal(before[f"{name}.{stat}"], after[f"{name}.{stat}"])
    assert not out.training and not any(m.training for m in out.modules())
    assert all(out.get_submodule(n).momentum == model.get_submodule(n).momentum for n in names)
    # the re-estimate is the mean of the batch means (equal batches) over S
    again = recalibrate(model, names, images, batch_size=16, device=CPU)
    assert torch.equal(statistics(out, names), statistics(again, names))  # deterministic
    other = recalibrate(model, names, images[:20], batch_size=16, device=CPU)
    assert not torch.equal(statistics(out, names), statistics(other, names))


def test_a_network_without_a_later_batchnorm_has_no_recalibrated_arm():
    torch.manual_seed(0)
    model = build_model("mnist_cnn", 1, 28, 10, [0.5], [0.25]).eval()
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    layer = find_scan_layer(model, as_input(images[:1], CPU))
    assert later_batchnorms(model, layer, as_input(images[:1], CPU)) == []
    record = gains_record(torch.ones(layer.channels))
    hardened = fold(model, layer, record.gain)
    assert recalibrated(record, model, hardened, layer, images, 8, CPU) is record


def test_the_record_rebuilds_the_recalibrated_networks():
    model, layer, images = _cifar_cnn()
    gain = torch.linspace(0.5, 2.0, layer.channels, dtype=torch.float64)
    record = recalibrated(
        gains_record(gain), model, fold(model, layer, gain), layer, images, 16, CPU
    )
    names = record.recalibrated_modules
    assert names == ["bn2", "bn3"] and len(record.recalibrated_hardened) == 2 * (64 + 128)
    hardened = fold(model, layer, gain)
    direct = recalibrate(hardened, names, images, 16, CPU)
    rebuilt = with_statistics(hardened, names, record.recalibrated_hardened)
    x = as_input(images, CPU)
    with torch.no_grad():
        assert torch.equal(direct(x), rebuilt(x))
    # its baseline: the original recalibrated the same way, which differs from the hardened's
    original = with_statistics(model, names, record.recalibrated_original)
    assert torch.equal(statistics(original, names), record.recalibrated_original)
    assert not torch.equal(record.recalibrated_original, record.recalibrated_hardened)
