"""Fragility scores and labels follow method.md section 3, ties included, on a hand-made scan."""

import numpy as np
import pytest

from fragile_neurons.fragility import (
    impact_scores,
    label,
    label_count,
    neuron_table,
)

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


def labelled(score, fraction):
    table = neuron_table(impact_scores(INTACT, DROPPED, EPSILONS, 10), score, fraction)
    sets = {name: set(table.neuron[table.label == name]) for name in ("fragile", "robust")}
    return table, sets, set(table.neuron[table.antifragile])


def test_impacts_by_hand():
    scores = impact_scores(INTACT, DROPPED, EPSILONS, 10)
    np.testing.assert_allclose(scores.clean_impact, [0, 0.3, 0, 0.1, 0, 0.3, 0, 0.1])
    np.testing.assert_allclose(
        scores.adversarial_impact, [0, 0.15, 0.25, -0.05, 0.05, 0, -0.15, 0.1]
    )
    np.testing.assert_allclose(
        scores.difference_impact, [0, -0.15, 0.25, -0.15, 0.05, -0.3, -0.15, 0]
    )
    # equal counts give exactly equal scores, so ties are real ties
    d = scores.difference_impact.to_numpy()
    assert d[1] == d[3] == d[6]


def test_clean_labels_break_ties_by_index():
    table, sets, antifragile = labelled("clean", 0.25)  # n = 2
    assert sets == {"fragile": {1, 5}, "robust": {0, 2}}  # phi 0 ties: 0, 2, 4, 6
    assert antifragile == set()  # phi = 0 is not < 0
    assert list(table.label[[3, 4, 6, 7]]) == ["neutral"] * 4
    _, sets, _ = labelled("clean", 0.375)  # n = 3: phi .1 ties between 3 and 7
    assert sets == {"fragile": {1, 5, 3}, "robust": {0, 2, 4}}


def test_adversarial_and_difference_labels():
    _, sets, antifragile = labelled("adversarial", 0.25)
    assert sets == {"fragile": {2, 1}, "robust": {6, 3}}
    assert antifragile == {6, 3}
    _, sets, antifragile = labelled("difference", 0.25)  # -.15 ties: 1, 3, 6
    assert sets == {"fragile": {2, 4}, "robust": {5, 1}}
    assert antifragile == {5, 1}


def test_label_count_and_no_overlap():
    assert label_count(30, 0.1) == 3  # not ceil(3.0000000000000004) = 4
    assert label_count(32, 0.25) == 8
    assert label_count(10, 0.25) == 3
    labels, _ = label([5.0, 4.0, 3.0, 2.0, 1.0], 0.5)  # n = 3: robust from the rest
    assert list(labels) == ["fragile", "fragile", "fragile", "robust", "robust"]
    labels, antifragile = label([0.0] * 4, 0.25)  # all tied: the lowest indices win
    assert list(labels) == ["fragile", "robust", "neutral", "neutral"]
    assert not antifragile.any()


def test_bad_inputs():
    with pytest.raises(ValueError, match="exactly once"):
        impact_scores(INTACT, DROPPED, [0.05, 0.1, 0.3], 10)
    with pytest.raises(ValueError, match="counts"):
        impact_scores(INTACT, DROPPED, EPSILONS, 5)
    clean_only = impact_scores([10], [[9], [10]], [0.0], 10)
    assert list(neuron_table(clean_only, "clean", 0.5).label) == ["fragile", "robust"]
    with pytest.raises(ValueError, match="positive epsilon"):
        neuron_table(clean_only, "adversarial", 0.5)
    with pytest.raises(ValueError, match="score"):
        neuron_table(clean_only, "loss", 0.5)
    with pytest.raises(ValueError, match="label_fraction"):
        label([1.0, 2.0], 0.0)
