"""Fragility scores and labels follow method.md section 3, ties included, on a hand-made scan."""

import numpy as np
import pytest
import torch
from conftest import targeting_record

from fragile_neurons.errors import DataError
from fragile_neurons.label import assign, impact_scores, metrics, run, table
from fragile_neurons.ranking import top_count
from fragile_neurons.records import ScanLayer, ScanMeasurements

# 10 scan images; epsilons 0, 0.1, 0.3; the intact network gets 10, 8 and 5 right.
EPSILONS = [0.0, 0.1, 0.3]
INTACT = [10, 8, 5]
DROPPED = [  # correct counts of the network without neuron k, at each epsilon
    [10, 8, 5],  # 0: c 0,   a 0,     d 0
    [7, 6, 4],  # 1: c .3,  a .15,   d -.15
    [10, 6, 2],  # 2: c 0,   a .25,   d .25
    [9, 8, 6],  # 3: c .1,  a -.05,  d -.15
    [10, 7, 5],  # 4: c 0,   a .05,   d .05
    [7, 8, 5],  # 5: c .3,  a 0,     d -.3
    [10, 9, 7],  # 6: c 0,   a -.15,  d -.15
    [9, 7, 4],  # 7: c .1,  a .1,    d 0
]


def measurements(intact=INTACT, dropped=DROPPED, epsilons=EPSILONS, samples=10):
    n, e = len(dropped), len(epsilons)
    return ScanMeasurements(
        epsilons=list(epsilons),
        epsilon_labels=[f"{x:g}" for x in epsilons],
        samples=samples,
        path="naive",
        intact_correct=torch.tensor(intact),
        intact_loss=torch.zeros(e, dtype=torch.float64),
        dropped_correct=torch.tensor(dropped),
        dropped_loss=torch.zeros(n, e, dtype=torch.float64),
    )


def labelled(score, fraction):
    labels = run(measurements(), score, fraction)
    sets = {name: set(labels.members(name)) for name in ("fragile", "robust")}
    antifragile = {k for k, flag in enumerate(labels.antifragile.tolist()) if flag}
    return labels, sets, antifragile


def test_impacts_by_hand():
    scores = impact_scores(INTACT, DROPPED, EPSILONS, 10)
    np.testing.assert_allclose(scores["clean"], [0, 0.3, 0, 0.1, 0, 0.3, 0, 0.1])
    np.testing.assert_allclose(scores["adversarial"], [0, 0.15, 0.25, -0.05, 0.05, 0, -0.15, 0.1])
    np.testing.assert_allclose(scores["difference"], [0, -0.15, 0.25, -0.15, 0.05, -0.3, -0.15, 0])
    # equal counts give exactly equal scores, so ties are real ties
    d = scores["difference"]
    assert d[1] == d[3] == d[6]


def test_clean_labels_break_ties_by_index():
    labels, sets, antifragile = labelled("clean", 0.25)  # n = 2
    assert sets == {"fragile": {1, 5}, "robust": {0, 2}}  # phi 0 ties: 0, 2, 4, 6
    assert antifragile == set()  # phi = 0 is not < 0
    assert [labels.label[k] for k in (3, 4, 6, 7)] == ["neutral"] * 4
    _, sets, _ = labelled("clean", 0.375)  # n = 3: phi .1 ties between 3 and 7
    assert sets == {"fragile": {1, 5, 3}, "robust": {0, 2, 4}}


def test_adversarial_and_difference_labels():
    labels, sets, antifragile = labelled("adversarial", 0.25)
    assert sets == {"fragile": {2, 1}, "robust": {6, 3}}
    assert antifragile == {6, 3}
    assert labels.phi.tolist() == pytest.approx([0, 0.15, 0.25, -0.05, 0.05, 0, -0.15, 0.1])
    _, sets, antifragile = labelled("difference", 0.25)  # -.15 ties: 1, 3, 6
    assert sets == {"fragile": {2, 4}, "robust": {5, 1}}
    assert antifragile == {5, 1}


def test_label_count_and_no_overlap():
    assert top_count(30, 0.1) == 3  # not ceil(3.0000000000000004) = 4
    assert top_count(32, 0.25) == 8
    assert top_count(10, 0.25) == 3
    labels, _ = assign([5.0, 4.0, 3.0, 2.0, 1.0], 0.5)  # n = 3: robust from the rest
    assert labels == ["fragile", "fragile", "fragile", "robust", "robust"]
    labels, antifragile = assign([0.0] * 4, 0.25)  # all tied: the lowest indices win
    assert labels == ["fragile", "robust", "neutral", "neutral"]
    assert not antifragile.any()


def test_the_label_stage_tables_and_metrics():
    labels = run(measurements(), "clean", 0.25)
    share = torch.tensor([[0.1] * 8, [0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]], dtype=torch.float64)
    targeting = targeting_record(share, torch.arange(8), epsilons=[0.1, 0.3])
    frame = table(labels, targeting)
    assert list(frame.columns) == [
        "neuron",
        "phi",
        "label",
        "antifragile",
        "clean_impact",
        "adversarial_impact",
        "difference_impact",
        "magnitude",
        "share",
    ]
    assert frame["share"].tolist() == pytest.approx([0.2] + [0.1] * 7)
    assert frame["magnitude"].tolist() == list(range(8))
    report = metrics(labels, measurements(), ScanLayer("conv1", "conv1", 8))
    assert report["fragile"] == [1, 5] and report["robust"] == [0, 2]
    assert report["label_count"] == 2 and report["adversarial"] == "transfer"
    assert report["intact_accuracy"] == {"0": 1.0, "0.1": 0.8, "0.3": 0.5}


def test_measurements_that_cannot_be_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="counts"):
        measurements(samples=5)
    measurements(epsilons=[0.05, 0.1, 0.3]).save("data/scan/run/measurements.pt")
    with pytest.raises(DataError, match="not the clean images .* `dvc repro --force scan@run`"):
        ScanMeasurements.load("data/scan/run/measurements.pt", neurons=8)
    clean_only = run(measurements([10], [[9], [10]], [0.0]), "clean", 0.5)
    assert clean_only.label == ["fragile", "robust"]
