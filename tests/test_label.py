"""Fragility scores and labels follow method.md section 3, ties included, on a hand-made scan."""

import dataclasses
import math
import shutil

import matplotlib.colors
import numpy as np
import pytest
import torch
from conftest import ROOT, first_half, run_script, targeting_record
from scipy import stats

from fragile_neurons.network.models import build_model, save_checkpoint
from fragile_neurons.pipeline.correlate import label_table as table
from fragile_neurons.pipeline.label import (
    assign,
    impact_scores,
    loss_impacts,
    mcnemar_p,
    metrics,
    reliability,
    split_half,
)
from fragile_neurons.pipeline.label import labelled as run
from fragile_neurons.running import origin
from fragile_neurons.running.errors import DataError
from fragile_neurons.stats.ranking import top_count
from fragile_neurons.storage import io, paths
from fragile_neurons.storage.records import Labels, ScanLayer, ScanMeasurements

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


def measurements(
    intact=INTACT,
    dropped=DROPPED,
    epsilons=EPSILONS,
    samples=10,
    intact_loss=None,
    dropped_loss=None,
    lost=None,
    gained=None,
):
    """A scan's record; losses 0 unless given; discordant counts the fewest the clean counts
    allow (lost = the drop, gained = the rise) unless given."""
    n, e = len(dropped), len(epsilons)
    clean = list(epsilons).index(0.0) if 0.0 in epsilons else 0
    change = [row[clean] - intact[clean] for row in dropped]
    return ScanMeasurements(
        epsilons=list(epsilons),
        epsilon_labels=[f"{x:g}" for x in epsilons],
        samples=samples,
        path="naive",
        intact_correct=torch.tensor(intact),
        intact_loss=torch.zeros(e, dtype=torch.float64)
        if intact_loss is None
        else torch.tensor(intact_loss, dtype=torch.float64),
        dropped_correct=torch.tensor(dropped),
        dropped_loss=torch.zeros(n, e, dtype=torch.float64)
        if dropped_loss is None
        else torch.tensor(dropped_loss, dtype=torch.float64),
        dropped_lost=torch.tensor(lost if lost is not None else [max(-c, 0) for c in change]),
        dropped_gained=torch.tensor(gained if gained is not None else [max(c, 0) for c in change]),
        **first_half(
            {"intact_correct": intact, "dropped_correct": dropped},
            samples,
            None
            if intact_loss is None
            else {"intact_loss": intact_loss, "dropped_loss": dropped_loss},
        ),
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


# Loss of f^(-k) minus loss of f on the clean images: breaks the ties in the clean phi.
CLEAN_LOSS_RISE = [0.05, 0.9, 0.03, 0.2, -0.01, 0.8, 0.02, 0.4]
INTACT_LOSS = [0.1, 0.5, 1.0]


def with_losses(rise=CLEAN_LOSS_RISE):
    """The hand-made scan with losses: at epsilon 0 the intact loss plus `rise`, at 0.1 and 0.3
    twice and three times that."""
    dropped = [[INTACT_LOSS[e] + (1, 2, 3)[e] * r for e in range(3)] for r in rise]
    return measurements(intact_loss=INTACT_LOSS, dropped_loss=dropped)


def test_loss_impacts_by_hand():
    losses = loss_impacts(INTACT_LOSS, with_losses().dropped_loss, EPSILONS)
    rise = np.array(CLEAN_LOSS_RISE)
    np.testing.assert_allclose(losses["clean"], rise)
    np.testing.assert_allclose(losses["adversarial"], 2.5 * rise)  # mean of 2 and 3 times
    np.testing.assert_allclose(losses["difference"], 1.5 * rise)
    assert np.isnan(loss_impacts([0.1], [[0.2]], [0.0])["adversarial"]).all()  # no E+


def test_ties_in_phi_break_by_loss_impact():
    labels = run(with_losses(), "clean", 0.25)  # n = 2; phi 0 ties between 0, 2, 4, 6
    assert labels.members("fragile") == [1, 5]
    assert labels.members("robust") == [4, 6]  # the smallest loss impacts: -0.01, 0.02
    assert labels.resolved and labels.warnings == []
    assert labels.loss_impact.tolist() == pytest.approx(CLEAN_LOSS_RISE)
    labels = run(with_losses(), "clean", 0.375)  # n = 3; phi 0.1 ties between 3 and 7
    assert labels.members("fragile") == [1, 5, 7]  # 7: loss impact 0.4 > 0.2
    assert labels.members("robust") == [2, 4, 6]
    assert labels.resolved


def test_ties_in_phi_and_loss_break_by_index_and_leave_the_labels_unresolved():
    labels, sets, antifragile = labelled("clean", 0.25)  # n = 2; every loss impact 0
    assert sets == {"fragile": {1, 5}, "robust": {0, 2}}  # phi 0 ties: 0, 2, 4, 6
    assert antifragile == set()  # phi = 0 is not < 0
    assert [labels.label[k] for k in (3, 4, 6, 7)] == ["neutral"] * 4
    assert not labels.resolved
    assert labels.warnings == [  # the fragile cut-off (5 | 3: phi 0.3, 0.1) is resolved
        "the robust cut-off is decided by neuron index (phi and loss impact tie): "
        "neuron 2 is robust, neuron 4 is not"
    ]
    labels, sets, _ = labelled("clean", 0.375)  # n = 3: phi 0.1 ties between 3 and 7
    assert sets == {"fragile": {1, 5, 3}, "robust": {0, 2, 4}}
    assert [w.split(" cut-off")[0] for w in labels.warnings] == ["the fragile", "the robust"]
    # only a tie in both counts: the same phi with different loss impacts at the cut-off
    rise = [0.0, 0.0, 0.0, 0.0, 0.01, 0.0, 0.01, 0.0]  # ties within robust (0, 2), none across
    labels = run(with_losses(rise), "clean", 0.25)
    assert labels.members("robust") == [0, 2] and labels.resolved
    rise = [0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0]  # robust 0, 4; then 6 ties with 4
    labels = run(with_losses(rise), "clean", 0.25)
    assert labels.members("robust") == [0, 4] and not labels.resolved
    assert labels.warnings[0].endswith("neuron 4 is robust, neuron 6 is not")


def test_a_constant_phi_is_flagged():
    same = [list(INTACT)] * 4  # no neuron changes a prediction: phi 0 everywhere
    labels = run(measurements(dropped=same), "clean", 0.25)
    assert labels.phi.tolist() == [0.0] * 4
    assert labels.warnings[0] == (
        "phi is constant: every one of the 4 neurons has phi = 0, so phi tells no neuron from "
        "another (too few scan images?)"
    )
    assert len(labels.warnings) == 3  # both cut-offs, too: the losses are all 0
    losses = [[0.1, 0.5, 1.0], [0.3, 0.5, 1.0], [0.2, 0.5, 1.0], [0.4, 0.5, 1.0]]
    resolved_by_loss = measurements(dropped=same, intact_loss=INTACT_LOSS, dropped_loss=losses)
    labels = run(resolved_by_loss, "clean", 0.25)
    assert labels.label == ["robust", "neutral", "neutral", "fragile"]
    assert len(labels.warnings) == 1 and labels.warnings[0].startswith("phi is constant")
    one = run(measurements([10], [[9]], [0.0]), "clean", 0.5)  # one neuron is not "constant"
    assert one.resolved and one.label == ["fragile"]


def test_mcnemar_p_by_hand():
    # exact two-sided: 2 * P(Binomial(lost + gained, 1/2) <= min(lost, gained)), at most 1
    lost, gained = [3, 5, 0, 10, 2, 0], [0, 1, 0, 0, 2, 7]
    want = [2 / 2**3, 2 * (1 + 6) / 2**6, 1.0, 2 / 2**10, 1.0, 2 / 2**7]
    np.testing.assert_allclose(mcnemar_p(lost, gained), want, rtol=1e-12)
    labels = run(measurements(), "clean", 0.25)  # lost = the clean drop, gained = 0
    lost = [0, 3, 0, 1, 0, 3, 0, 1]
    np.testing.assert_allclose(labels.mcnemar_p.numpy(), [2 / 2**b if b else 1.0 for b in lost])


def test_adversarial_and_difference_labels():  # every loss impact 0: ties by index
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
    labels, _, warnings = assign([5.0, 4.0, 3.0, 2.0, 1.0], 0.5)  # n = 3: robust from the rest
    assert labels == ["fragile", "fragile", "fragile", "robust", "robust"] and warnings == []
    labels, antifragile, warnings = assign([0.0] * 4, 0.25)  # all tied: the lowest indices win
    assert labels == ["fragile", "robust", "neutral", "neutral"]
    assert not antifragile.any() and len(warnings) == 3
    assert warnings[1] == (
        "the fragile cut-off is decided by neuron index (phi ties): neuron 0 is fragile, "
        "neuron 1 is not"
    )
    labels, _, warnings = assign([0.0] * 4, 0.25, [0.1, 0.3, 0.2, 0.0])  # the loss decides
    assert labels == ["neutral", "fragile", "neutral", "robust"]
    assert len(warnings) == 1  # phi is constant


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
        "loss_impact",
        "loss_fragility",
        "mcnemar_p",
        "magnitude",
        "share",
    ]
    assert frame["share"].tolist() == pytest.approx([0.2] + [0.1] * 7)
    assert frame["magnitude"].tolist() == list(range(8))
    report = metrics(labels, measurements(), ScanLayer("conv1", "conv1", 8))
    assert report["fragile"] == [1, 5] and report["robust"] == [0, 2]
    assert report["label_count"] == 2 and report["adversarial"] == "transfer"
    assert report["intact_accuracy"] == {"0": 1.0, "0.1": 0.8, "0.3": 0.5}
    assert report["resolved"] is False and report["warnings"] == labels.warnings
    assert report["significant"] == 0  # p = 0.25 for the fragile 1 and 5 (3 images lost)
    # neuron 0 loses 6 of 10 images and gains none: p = 2 / 2**6 < 0.05
    scan = measurements(
        [10],
        [[4], [10], [9], [10]],
        [0.0],
        intact_loss=[0.1],
        dropped_loss=[[0.5], [0.1], [0.3], [0.2]],
    )
    labels = run(scan, "clean", 0.25)
    assert labels.label == ["fragile", "robust", "neutral", "neutral"]  # 1: loss impact 0 < 0.1
    zero = torch.zeros(1, 4, dtype=torch.float64)
    frame = table(labels, targeting_record(zero, zero[0] + 1, epsilons=[0.1]))
    assert frame["loss_impact"].tolist() == pytest.approx([0.4, 0.0, 0.2, 0.1])
    assert frame["loss_fragility"].tolist() == pytest.approx([0.4, 0.0, 0.2, 0.1])  # psi
    assert frame["mcnemar_p"].tolist() == pytest.approx([2 / 2**6, 1.0, 1.0, 1.0])
    report = metrics(labels, scan, ScanLayer("conv1", "conv1", 4))
    assert report["resolved"] is True and report["warnings"] == []
    assert (report["significant"], report["significant_fragile"], report["significant_robust"]) == (
        1,
        1,
        0,
    )


def test_measurements_that_cannot_be_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="counts"):
        measurements(samples=5)
    measurements(epsilons=[0.05, 0.1, 0.3]).save("data/scan/run/measurements.pt")
    with pytest.raises(DataError, match="not the clean images .* `dvc repro --force scan@run`"):
        ScanMeasurements.load("data/scan/run/measurements.pt", neurons=8)
    clean_only = run(measurements([10], [[9], [10]], [0.0]), "clean", 0.5)
    assert clean_only.label == ["fragile", "robust"]


@pytest.mark.parametrize("tied", [True, False])
def test_the_label_stage_says_on_stderr_why_labels_are_unresolved(
    tied, tmp_path, monkeypatch, capsys
):
    """The stage script on a hand-made scan of mnist_cnn's 32 neurons (n = 8): 10 neurons lose
    one image each (phi 0.1), 22 none (phi 0). With every loss impact 0 both cut-offs fall within
    a tie that only the index decides: two warnings on stderr, exit status 0, label.json says
    so. With distinct loss impacts, none."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", "params.yaml")
    torch.manual_seed(0)
    spec = {"arch": "mnist_cnn", "channels": 1, "size": 28, "classes": 10}
    n = 32
    zero = torch.zeros(1, n, dtype=torch.float64)
    rise = [0.0] * n if tied else [0.001 * k for k in range(n)]
    with origin.within("mnist", "mnist"):  # as the run's train, attack and scan would write them
        model = build_model("mnist_cnn", 1, 28, 10, [0.5], [0.3])
        save_checkpoint(paths.model("mnist"), model, spec)
        ScanLayer("conv1", "conv1", n).save(paths.layer_record("mnist"))
        targeting_record(zero, zero[0] + 1, epsilons=[0.1]).save(paths.targeting_record("mnist"))
        measurements(
            [20, 12],
            [[19, 12]] * 10 + [[20, 12]] * 22,
            [0.0, 0.1],
            samples=20,
            intact_loss=[0.2, 1.0],
            dropped_loss=[[0.2 + r, 1.0] for r in rise],
        ).save(paths.scan_record("mnist"))
    capsys.readouterr()
    run_script("label", "mnist")  # no SystemExit: exit status 0
    stderr = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    report = io.read_json(paths.details("mnist", "label"))
    labels = Labels.load(paths.labels_record("mnist"))
    assert report["resolved"] is (not tied) is labels.resolved
    if tied:
        assert stderr == [
            "warning: the fragile cut-off is decided by neuron index (phi and loss impact tie): "
            "neuron 7 is fragile, neuron 8 is not",
            "warning: the robust cut-off is decided by neuron index (phi and loss impact tie): "
            "neuron 17 is robust, neuron 18 is not",
        ]
        assert report["warnings"] == [line.removeprefix("warning: ") for line in stderr]
    else:
        assert stderr == [] and report["warnings"] == []
        assert labels.members("fragile") == list(range(2, 10))  # the largest loss impacts
        assert labels.members("robust") == list(range(10, 18))  # the smallest


def test_the_impact_figure_shows_the_clean_impact_on_its_own_scale(tmp_path):
    from fragile_neurons.figures.label import impact_figure

    measured = measurements()
    impact = measured.impact()
    fig = impact_figure(measured, run(measured, "clean", 0.25), "test")
    clean, adversarial = (ax.images[0] for ax in fig.axes[:2])
    assert clean.get_array().shape == (8, 1) and adversarial.get_array().shape == (8, 2)
    assert clean.get_clim() == pytest.approx((-abs(impact[:, 0]).max(), abs(impact[:, 0]).max()))
    assert adversarial.get_clim()[1] == pytest.approx(abs(impact[:, 1:]).max())


def _antifragile_labels():
    """The hand-made scan's labels with neuron 0 robust and antifragile (phi < 0)."""
    labelled = run(measurements(), "clean", 0.25)
    phi, antifragile = labelled.phi.clone(), torch.zeros(len(labelled.label), dtype=torch.bool)
    phi[0], antifragile[0] = -0.1, True
    label = ["robust", *labelled.label[1:]]
    return dataclasses.replace(labelled, phi=phi, label=label, antifragile=antifragile)


def test_the_impact_figure_is_saved_with_its_legend_outside(tmp_path):
    from test_figures import check_saved, legends_overlapping_axes

    from fragile_neurons.figures.label import impact_figure

    measured, labelled = measurements(), _antifragile_labels()
    fig = impact_figure(measured, labelled, "test")
    assert [t.get_text() for t in fig.legends[0].get_texts()][-1].startswith("robust, antifragile")
    assert legends_overlapping_axes(fig) == []
    check_saved(lambda: impact_figure(measured, labelled, "test"), tmp_path, "impact")


@pytest.mark.parametrize("channels", [1, 3])
def test_the_filters_figure_frames_each_filter_and_is_saved(tmp_path, channels):
    from test_figures import check_saved, legends_overlapping_axes

    from fragile_neurons.figures.label import COLOURS, filters_figure

    labelled = _antifragile_labels()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, len(labelled.label), 3)
    fig = filters_figure(conv, labelled, "test")
    assert [ax.get_title() for ax in fig.axes][:2] == ["0: -0.100", "1: +0.300"]
    frame = fig.axes[0].spines["top"].get_edgecolor()
    assert matplotlib.colors.to_hex(frame) == COLOURS["antifragile"]
    assert legends_overlapping_axes(fig) == []
    check_saved(lambda: filters_figure(conv, labelled, "test"), tmp_path, "filters")


def test_split_half_reliability_by_hand():
    """r is the Spearman rho of the halves' scores, the reliability 2r / (1 + r); a score
    constant on a half has none (NaN), as has a half of no images."""
    got = split_half([0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.4, 0.3])
    r = stats.spearmanr([0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.4, 0.3]).statistic
    assert got["split_half_rho"] == pytest.approx(r) == pytest.approx(0.6)
    assert got["spearman_brown"] == pytest.approx(2 * 0.6 / 1.6)
    opposite = split_half([1, 2, 3], [3, 2, 1])
    assert opposite["split_half_rho"] == pytest.approx(-1.0)
    assert math.isnan(opposite["spearman_brown"])
    assert math.isnan(split_half([0.1, 0.1, 0.1], [0.1, 0.2, 0.3])["split_half_rho"])


def test_reliability_sets_the_halves_of_the_scan_set_against_each_other():
    """Hand-made counts, 10 images, halves of 5: the first half's clean drops are 0, 1, 2 (of
    5) and the second's 0, 2, 1: r = 0.5 for the clean score; the adversarial score is the same
    ranking in both halves: r = 1."""
    m = ScanMeasurements(
        epsilons=[0.0, 0.1],
        epsilon_labels=["0", "0.1"],
        samples=10,
        path="naive",
        intact_correct=torch.tensor([10, 8]),
        intact_loss=torch.zeros(2, dtype=torch.float64),
        dropped_correct=torch.tensor([[10, 8], [7, 6], [7, 4]]),
        dropped_loss=torch.zeros(3, 2, dtype=torch.float64),
        dropped_lost=torch.tensor([0, 3, 3]),
        dropped_gained=torch.tensor([0, 0, 0]),
        half_samples=5,
        first_half_intact_correct=torch.tensor([5, 4]),
        first_half_dropped_correct=torch.tensor([[5, 4], [4, 3], [3, 2]]),
        **{  # no loss moves: psi is constant on each half, with no reliability
            f"{half}_half_{net}_loss_sum": torch.zeros(shape, dtype=torch.float64)
            for half in ("first", "second")
            for net, shape in (("intact", (2,)), ("dropped", (3, 2)))
        },
    )
    got = reliability(m)
    assert set(got) == {"clean", "adversarial", "difference", "loss"}
    assert math.isnan(got["loss"]["split_half_rho"])
    assert got["clean"]["split_half_rho"] == pytest.approx(0.5)
    assert got["clean"]["spearman_brown"] == pytest.approx(2 / 3)
    assert got["adversarial"]["split_half_rho"] == pytest.approx(1.0)
    assert got["adversarial"]["spearman_brown"] == pytest.approx(1.0)


def halves_scan(seed: int = 0, neurons: int = 6, samples: int = 9) -> ScanMeasurements:
    """A scan of `samples` images whose every image has its own (random) cross-entropy for the
    intact network and each dropped one, at epsilons 0 and 0.1, with random correct/wrong
    predictions: the record the scan would make of them, and the per-image losses."""
    g = torch.Generator().manual_seed(seed)
    half = samples // 2
    loss = torch.rand(neurons + 1, 2, samples, generator=g, dtype=torch.float64) * 3
    hits = torch.rand(neurons + 1, 2, samples, generator=g) < 0.7
    hits[:, :, 0] = True  # some image the intact network and every dropped one get right
    right = hits[0, 0]
    lost = (right & ~hits[1:, 0]).sum(dim=1)
    gained = (~right & hits[1:, 0]).sum(dim=1)
    m = ScanMeasurements(
        epsilons=[0.0, 0.1],
        epsilon_labels=["0", "0.1"],
        samples=samples,
        path="naive",
        intact_correct=hits[0].sum(dim=1),
        intact_loss=loss[0].sum(dim=1) / samples,
        dropped_correct=hits[1:].sum(dim=2),
        dropped_loss=loss[1:].sum(dim=2) / samples,
        dropped_lost=lost,
        dropped_gained=gained,
        half_samples=half,
        first_half_intact_correct=hits[0, :, :half].sum(dim=1),
        first_half_dropped_correct=hits[1:, :, :half].sum(dim=2),
        first_half_intact_loss_sum=loss[0, :, :half].sum(dim=1),
        first_half_dropped_loss_sum=loss[1:, :, :half].sum(dim=2),
        second_half_intact_loss_sum=loss[0, :, half:].sum(dim=1),
        second_half_dropped_loss_sum=loss[1:, :, half:].sum(dim=2),
    )
    return m, loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psi_is_the_clean_loss_impact_and_its_reliability_that_of_its_halves(seed):
    """psi_k = mean cross-entropy of f^(-k) minus that of f on S (clean); its reliability the
    Spearman-Brown value of the Spearman rho of psi on the first half against the second,
    computed here from the per-image losses with scipy."""
    m, loss = halves_scan(seed)
    labels = run(m, "clean", 0.25)
    clean = loss[:, 0]  # networks x images
    psi = (clean[1:] - clean[0]).mean(dim=1)
    np.testing.assert_allclose(labels.loss_fragility.numpy(), psi.numpy(), rtol=0, atol=1e-12)
    half = m.half_samples
    first = (clean[1:, :half] - clean[0, :half]).mean(dim=1).numpy()
    second = (clean[1:, half:] - clean[0, half:]).mean(dim=1).numpy()
    r = stats.spearmanr(first, second).statistic
    got = reliability(m)["loss"]
    assert got["split_half_rho"] == pytest.approx(r, abs=1e-12)
    assert got["spearman_brown"] == pytest.approx(2 * r / (1 + r), abs=1e-12)
    report = metrics(labels, m, ScanLayer("conv1", "conv1", 6))
    assert report["loss_reliability"] == report["headline"]["loss_reliability"]
    assert report["loss_reliability"] == pytest.approx(2 * r / (1 + r), abs=1e-12)
    assert report["reliability"]["loss"] == got
    # psi is secondary: phi, the labels and phi's reliability are those of the counts alone
    counts_only = measurements(
        m.intact_correct.tolist(), m.dropped_correct.tolist(), m.epsilons, m.samples,
        lost=m.dropped_lost.tolist(), gained=m.dropped_gained.tolist(),
        intact_loss=m.intact_loss.tolist(), dropped_loss=m.dropped_loss.tolist(),
    )  # fmt: skip
    again = run(counts_only, "clean", 0.25)
    assert torch.equal(again.phi, labels.phi) and again.label == labels.label


def test_the_halves_loss_sums_must_add_up_to_the_whole():
    m, _ = halves_scan()
    blob = m.to_dict()
    blob["second_half_dropped_loss_sum"] = blob["second_half_dropped_loss_sum"] + 0.5
    with pytest.raises(ValueError, match="must add up"):
        ScanMeasurements.from_dict(blob)
