"""Hardening gains (method.md section 5) and the folded hardened network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import labels_record, targeting_record

from fragile_neurons.gates import fold, gated
from fragile_neurons.harden import gains, hardening, run, summarise, table
from fragile_neurons.inference import as_input, logits_of
from fragile_neurons.layers import find_scan_layer
from fragile_neurons.models import load_checkpoint, save_checkpoint
from fragile_neurons.records import Gains, ScanLayer

# Six neurons, worked by hand. Fragile = the two largest phi (0: 0.3, 5: 0.2); robust = the
# two smallest (3: -0.1, 2: 0.0); neutral 1 and 4. sum m = 12.
M = np.array([1.0, 2.0, 1.0, 4.0, 2.0, 2.0])
PHI = np.array([0.3, 0.1, 0.0, -0.1, 0.05, 0.2])
LABELS = ["fragile", "neutral", "robust", "robust", "neutral", "fragile"]


def test_proportional_gains_by_hand_conserve_magnitude():
    # c = 0.5: robust gains 0.5, freed M = 0.5 * (1 + 4) = 2.5;
    # w = (0.3, 0.2) / 0.5 = (0.6, 0.4): g0 = 1 + 2.5 * 0.6 / 1 = 2.5, g5 = 1 + 2.5 * 0.4 / 2 = 1.5
    result = hardening(M, PHI, LABELS, compress=0.5, mode="proportional", max_gain=4.0)
    np.testing.assert_allclose(result.gains, [2.5, 1.0, 0.5, 0.5, 1.0, 1.5])
    assert result.weighting == "proportional" and not result.capped.any()
    assert (result.gains * M).sum() == pytest.approx(M.sum())
    info = summarise(result, M)
    assert info == {
        "compressed": 2,
        "amplified": 2,
        "max_gain_applied": 2.5,
        "capped": False,
        "magnitude_ratio": pytest.approx(1.0),
        "weighting": "proportional",
    }


def test_uniform_gains_by_hand():
    # w = 1/2 each: g0 = 1 + 1.25 / 1 = 2.25, g5 = 1 + 1.25 / 2 = 1.625
    result = hardening(M, PHI, LABELS, compress=0.5, mode="uniform", max_gain=4.0)
    np.testing.assert_allclose(result.gains, [2.25, 1.0, 0.5, 0.5, 1.0, 1.625])
    assert result.weighting == "uniform"
    assert (result.gains * M).sum() == pytest.approx(M.sum())


def test_cap_lowers_gains_and_breaks_conservation():
    # max_gain 2: g0 = 2.5 is capped to 2; total magnitude 12 - 0.5 * 1
    result = hardening(M, PHI, LABELS, compress=0.5, mode="proportional", max_gain=2.0)
    np.testing.assert_allclose(result.gains, [2.0, 1.0, 0.5, 0.5, 1.0, 1.5])
    assert result.capped.tolist() == [True, False, False, False, False, False]
    info = summarise(result, M)
    assert info["capped"] and info["max_gain_applied"] == 2.0
    assert info["magnitude_ratio"] == pytest.approx(11.5 / 12)


def test_proportional_falls_back_to_uniform_when_a_fragile_phi_is_not_positive():
    phi = PHI.copy()
    phi[5] = 0.0  # a fragile neuron with phi <= 0: phi is no usable weight
    result = hardening(M, phi, LABELS, compress=0.5, mode="proportional", max_gain=4.0)
    assert result.weighting == "uniform"
    np.testing.assert_allclose(result.gains, [2.25, 1.0, 0.5, 0.5, 1.0, 1.625])


def test_inverse_swaps_roles():
    # fragile {0, 5} compressed: M = 0.5 * (1 + 2) = 1.5; robust {2, 3} amplified with their own
    # phi (0.0, -0.1) as weights: not positive, so uniform: g2 = 1 + 0.75 / 1, g3 = 1 + 0.75 / 4
    result = hardening(
        M, PHI, LABELS, compress=0.5, mode="proportional", max_gain=4.0, inverse=True
    )
    np.testing.assert_allclose(result.gains, [0.5, 1.0, 1.75, 1.1875, 1.0, 0.5])
    assert result.weighting == "uniform"
    assert (result.gains * M).sum() == pytest.approx(M.sum())


def test_edge_cases():
    # c = 1 frees nothing: the identity
    same = hardening(M, PHI, LABELS, compress=1.0, mode="proportional", max_gain=4.0)
    np.testing.assert_array_equal(same.gains, np.ones(6))
    # c = 0 silences the robust neurons and gives all their magnitude away
    zero = hardening(M, PHI, LABELS, compress=0.0, mode="uniform", max_gain=10.0)
    np.testing.assert_allclose(zero.gains, [3.5, 1.0, 0.0, 0.0, 1.0, 2.25])
    # a fragile neuron that never fires gets the cap (its output stays zero), not inf
    dead = M.copy()
    dead[0] = 0.0
    result = hardening(dead, PHI, LABELS, compress=0.5, mode="proportional", max_gain=4.0)
    assert result.gains[0] == 4.0 and result.capped[0] and np.isfinite(result.gains).all()


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        hardening(M, PHI, ["fragile"] * 5 + ["weird"], compress=0.5)
    with pytest.raises(ValueError, match="magnitudes"):
        hardening(-M, PHI, LABELS, compress=0.5)
    with pytest.raises(ValueError, match="both"):
        gains(M, PHI, [0, 1], [1, 2], compress=0.5)


def test_folded_hardened_model_gives_the_gated_logits(trained_mnist, mnist_splits, tmp_path):
    _, test = mnist_splits
    model = trained_mnist
    x = as_input(test["images"][:64], torch.device("cpu"))
    layer = find_scan_layer(model, x[:1])
    n = layer.channels
    rng = np.random.default_rng(0)
    labels = np.array(["neutral"] * n, dtype=object)
    labels[: n // 4], labels[-(n // 4) :] = "fragile", "robust"
    result = hardening(
        rng.uniform(0.1, 1.0, n), rng.normal(size=n), labels, compress=0.3, max_gain=4.0
    )
    g = torch.as_tensor(result.gains, dtype=torch.float32)
    with gated(model, layer, g):
        expected = logits_of(model, x, 32, torch.device("cpu"))
    path = tmp_path / "hardened.pt"
    save_checkpoint(
        path, fold(model, layer, g), {"arch": "mnist_cnn", "channels": 1, "size": 28, "classes": 10}
    )
    folded, spec = load_checkpoint(path, arch="mnist_cnn")
    got = logits_of(folded, x, 32, torch.device("cpu"))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    plain = logits_of(model, x, 32, torch.device("cpu"))
    assert (plain - expected).abs().max() > 1e-2  # the gains do change the network


def test_the_harden_stage_records_both_gain_vectors_at_full_precision():
    labels = labels_record(PHI, LABELS, fraction=0.34)
    phi = labels.phi
    assert labels.antifragile.tolist() == [False, False, False, True, False, False]
    d = torch.zeros(1, 6, dtype=torch.float64)
    targeting = targeting_record(d, M)
    layer = ScanLayer("conv", "conv", 6)
    record, info = run(labels, targeting, layer, compress=0.5, mode="proportional", max_gain=4.0)
    assert record.gain.tolist() == [2.5, 1.0, 0.5, 0.5, 1.0, 1.5]
    assert record.inverse_gain.tolist() == [0.5, 1.0, 1.75, 1.1875, 1.0, 0.5]
    assert torch.equal(record.magnitude, targeting.magnitude) and torch.equal(record.phi, phi)
    assert info["layer"] == "conv" and info["compress"] == 0.5 and info["amplified"] == 2
    assert info["inverse"]["weighting"] == "uniform"
    frame = table(record, labels)
    assert list(frame.columns) == ["neuron", "label", "magnitude", "phi", "gain", "inverse_gain"]
    assert frame["label"].tolist() == LABELS
    assert record.labels_resolved is True and info["labels_resolved"] is True


def test_the_gains_carry_unresolved_labels():
    labels = dataclasses.replace(
        labels_record(PHI, LABELS, fraction=0.34), warnings=["the robust cut-off is ..."]
    )
    d = torch.zeros(1, 6, dtype=torch.float64)
    targeting = targeting_record(d, M)
    settings = {"compress": 0.5, "mode": "proportional", "max_gain": 4.0}
    record, info = run(labels, targeting, ScanLayer("conv", "conv", 6), **settings)
    assert record.labels_resolved is False and info["labels_resolved"] is False
    assert Gains.from_dict(record.to_dict()).labels_resolved is False
