"""Hardening gains (method.md section 5) and the folded hardened network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import labels_record, targeting_record

from fragile_neurons.network.gates import fold, gated
from fragile_neurons.network.inference import as_input, logits_of
from fragile_neurons.network.layers import find_scan_layer
from fragile_neurons.network.models import load_checkpoint, save_checkpoint
from fragile_neurons.pipeline.harden import (
    arms,
    gains,
    hardening,
    random_gains,
    summarise,
    table,
)
from fragile_neurons.pipeline.harden import harden_gains as run
from fragile_neurons.storage.records import Gains, ScanLayer

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
        hardening(M, PHI, ["fragile"] * 5 + ["weird"], compress=0.5, mode="uniform", max_gain=4.0)
    with pytest.raises(ValueError, match="magnitudes"):
        hardening(-M, PHI, LABELS, compress=0.5, mode="uniform", max_gain=4.0)
    with pytest.raises(ValueError, match="both"):
        gains(M, PHI, [0, 1], [1, 2], compress=0.5, mode="uniform", max_gain=4.0)


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
        rng.uniform(0.1, 1.0, n),
        rng.normal(size=n),
        labels,
        compress=0.3,
        mode="proportional",
        max_gain=4.0,
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
    rule = {"compress": 0.5, "mode": "proportional", "max_gain": 4.0}
    record, info = run(labels, targeting, layer, 3, torch.Generator().manual_seed(0), 0.1, **rule)
    assert record.gain.tolist() == [2.5, 1.0, 0.5, 0.5, 1.0, 1.5]
    # the random controls: the rule on random sets of the sizes of F and R, seeded
    again = run(labels, targeting, layer, 3, torch.Generator().manual_seed(0), 0.1, **rule)[0]
    assert record.random_gain.shape == (3, 6) and torch.equal(record.random_gain, again.random_gain)
    assert ((record.random_gain == 0.5).sum(dim=1) == 2).all()
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
    args = (labels, targeting, ScanLayer("conv", "conv", 6), 1, torch.Generator(), 0.1)
    record, info = run(*args, **settings)
    assert record.labels_resolved is False and info["labels_resolved"] is False
    assert Gains.from_dict(record.to_dict()).labels_resolved is False


def _draws(magnitude, fragile, robust, draws, tolerance, seed=0, compress=0.5):
    m = torch.as_tensor(magnitude, dtype=torch.float64)
    phi = torch.linspace(0.1, 0.4, len(m), dtype=torch.float64)
    sets = (m, phi, torch.tensor(fragile), torch.tensor(robust))
    rule = {"compress": compress, "mode": "proportional", "max_gain": 4.0}
    return random_gains(*sets, draws, torch.Generator().manual_seed(seed), **rule,
                        tolerance=tolerance)  # fmt: skip


def test_random_draws_are_matched_on_the_moved_magnitude():
    """Every kept draw moves M' within 10% of the hardening's M = (1 - c) sum_R m; its M'/M is
    recorded, and recomputed here from the draw's compressed set."""
    m = torch.linspace(0.2, 3.0, 24, dtype=torch.float64)
    fragile, robust = list(range(6)), list(range(18, 24))  # R holds the largest magnitudes
    moved = 0.5 * float(m[robust].sum())
    matched = _draws(m, fragile, robust, 12, tolerance=0.1)
    assert matched.matched and matched.gains.shape == (12, 24)
    assert (matched.ratio - 1).abs().max().item() <= 0.1
    for g, ratio in zip(matched.gains, matched.ratio, strict=True):
        compressed = torch.nonzero(g == 0.5).flatten()
        assert len(compressed) == 6
        assert 0.5 * float(m[compressed].sum()) / moved == pytest.approx(ratio.item())
    # unmatched, the draws move less than R does on average: the bias the matching removes
    free = _draws(m, fragile, robust, 200, tolerance=None)
    assert free.ratio.mean().item() < 0.8 and (free.ratio - 1).abs().max().item() > 0.1
    assert torch.equal(matched.gains, _draws(m, fragile, robust, 12, tolerance=0.1).gains)


def test_when_too_few_candidates_qualify_the_closest_are_kept_and_it_says_so():
    """R holds the only large magnitudes: a random R' of 8 of 32 neurons almost never moves
    as much (M'/M within 10% needs R' = R, 1 in 10 million), so the closest are kept."""
    m = torch.ones(32, dtype=torch.float64)
    robust = list(range(24, 32))
    m[robust] = 100.0
    draws = _draws(m, list(range(8)), robust, 3, tolerance=0.1)
    assert draws.matched is False and draws.gains.shape == (3, 32)
    distance = (draws.ratio - 1).abs()
    assert (distance > 0.1).all() and torch.equal(distance, distance.sort().values)


def test_the_one_sided_arms_by_hand():
    """compress-only: c on R, 1 elsewhere; amplify-only: the hardened gains on F, 1 elsewhere
    (method.md section 5), in the record the stage writes."""
    gain = np.array([2.5, 1.0, 0.5, 0.5, 1.0, 1.5])
    got = arms(gain, fragile=[0, 5], robust=[2, 3], compress=0.5)
    assert got["compress_only"].tolist() == [1.0, 1.0, 0.5, 0.5, 1.0, 1.0]
    assert got["amplify_only"].tolist() == [2.5, 1.0, 1.0, 1.0, 1.0, 1.5]
    labels = labels_record(PHI, LABELS, fraction=0.34)
    targeting = targeting_record(torch.zeros(1, 6, dtype=torch.float64), M)
    rule = {"compress": 0.5, "mode": "proportional", "max_gain": 4.0}
    record, _ = run(
        labels, targeting, ScanLayer("conv", "conv", 6), 2, torch.Generator(), 1.0, **rule
    )
    assert record.compress_only_gain.tolist() == [1.0, 1.0, 0.5, 0.5, 1.0, 1.0]
    assert record.amplify_only_gain.tolist() == [2.5, 1.0, 1.0, 1.0, 1.0, 1.5]
