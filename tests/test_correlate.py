"""Correlating fragility with the attack share (method.md section 4)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import labels_record, targeting_record
from scipy import stats

from fragile_neurons.pipeline.correlate import (
    association,
    association_where_defined,
    json_ready,
    most_targeted,
    overlap,
)
from fragile_neurons.pipeline.correlate import correlations as run
from fragile_neurons.stats.ranking import top_count
from fragile_neurons.storage import headline

# a hand-made table of 8 neurons: fragility and mean attack share
PHI = np.array([0.30, 0.02, -0.01, 0.12, 0.00, 0.25, 0.05, 0.08])
SHARE = np.array([0.20, 0.05, 0.10, 0.15, 0.08, 0.22, 0.12, 0.08])


def test_association_equals_scipy():
    result = association(PHI, SHARE)
    pearson = stats.pearsonr(PHI, SHARE)
    spearman = stats.spearmanr(PHI, SHARE)
    kendall = stats.kendalltau(PHI, SHARE)
    assert result["pearson_r"] == pytest.approx(pearson.statistic, abs=1e-12)
    assert result["pearson_p"] == pytest.approx(pearson.pvalue, abs=1e-12)
    assert result["spearman_rho"] == pytest.approx(spearman.statistic, abs=1e-12)
    assert result["spearman_p"] == pytest.approx(spearman.pvalue, abs=1e-12)
    assert result["kendall_tau"] == pytest.approx(kendall.statistic, abs=1e-12)
    assert result["kendall_p"] == pytest.approx(kendall.pvalue, abs=1e-12)


def test_association_by_hand():
    # ranks 1..5 against 2,1,4,3,5: sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8;
    # 8 concordant and 2 discordant pairs: tau = 6/10
    result = association([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert result["spearman_rho"] == pytest.approx(0.8)
    assert result["kendall_tau"] == pytest.approx(0.6)
    assert result["pearson_r"] == pytest.approx(0.8)  # ranks are the values here
    down = association([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1])
    assert down["spearman_rho"] == pytest.approx(-1.0)
    assert down["kendall_tau"] == pytest.approx(-1.0)


def test_constant_phi_gives_nan_not_a_crash():
    result = association(np.zeros(6), np.arange(6.0))
    assert all(math.isnan(v) for v in result.values())
    assert json_ready(result) == dict.fromkeys(result)


def test_association_rejects_bad_input():
    with pytest.raises(ValueError):
        association([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        association([1.0], [1.0])
    with pytest.raises(ValueError):
        association([1.0, float("nan")], [1.0, 2.0])


def test_most_targeted_counts_and_breaks_ties_by_index():
    # ceil(0.25 * 8) = 2: the two largest shares are neurons 5 (0.22) and 0 (0.20)
    assert most_targeted(SHARE, 0.25).tolist() == [0, 5]
    # ceil(0.5 * 8) = 4: 0.22, 0.20, 0.15, 0.12
    assert most_targeted(SHARE, 0.5).tolist() == [0, 3, 5, 6]
    # ceil(0.75 * 8) = 6: the 6th place is a tie of neurons 4 and 7 (0.08); the lower index wins
    assert most_targeted(SHARE, 0.75).tolist() == [0, 2, 3, 4, 5, 6]
    assert top_count(30, 0.1) == 3 and top_count(32, 0.25) == 8 and top_count(10, 0.25) == 3


def test_overlap_by_hand():
    # N = 8, fragile {0, 1}, targeted {1, 2}: overlap 1, union 3;
    # P(X >= 1) = 1 - C(6,2)/C(8,2) = 13/28
    result = overlap([0, 1], [1, 2], 8)
    assert result["overlap"] == 1
    assert result["jaccard"] == pytest.approx(1 / 3)
    assert result["jaccard_p"] == pytest.approx(13 / 28)
    none = overlap([0, 1], [2, 3], 8)
    assert none["jaccard"] == 0 and none["jaccard_p"] == pytest.approx(1.0)
    full = overlap([0, 1], [0, 1], 8)  # P(X >= 2) = 1/C(8,2)
    assert full["jaccard"] == 1 and full["jaccard_p"] == pytest.approx(1 / 28)
    with pytest.raises(ValueError):
        overlap([8], [0], 8)


def _records(phi=PHI):
    """The label and attack stages' records for 8 neurons: labels by phi, shares at 2 epsilons."""
    rng = np.random.default_rng(0)
    n = len(phi)
    raw = np.abs(rng.normal(size=(2, n))) + 0.1
    share = raw / raw.sum(axis=1, keepdims=True)
    order = np.lexsort((np.arange(n), -np.asarray(phi)))
    label = np.full(n, "neutral", dtype=object)
    label[order[:2]], label[order[-2:]] = "fragile", "robust"
    labels = labels_record(phi, [str(x) for x in label])
    targeting = targeting_record(
        torch.from_numpy(share), torch.ones(n), epsilons=[0.1, 0.2], effect=torch.from_numpy(raw)
    )
    return labels, targeting, share.T


def test_correlate_summary_per_epsilon_and_mean():
    labels, targeting, share = _records()
    summary, table = run(labels, targeting, 0.25)
    mean = share.mean(axis=1)
    assert summary["spearman_rho"] == pytest.approx(stats.spearmanr(PHI, mean).statistic)
    assert summary["kendall_p"] == pytest.approx(stats.kendalltau(PHI, mean).pvalue)
    assert list(summary["by_epsilon"]) == ["0.1", "0.2"]
    for i, label in enumerate(["0.1", "0.2"]):
        per = summary["by_epsilon"][label]
        assert per["pearson_r"] == pytest.approx(stats.pearsonr(PHI, share[:, i]).statistic)
        expected = overlap([0, 5], most_targeted(share[:, i], 0.25), 8)
        assert per["jaccard"] == pytest.approx(expected["jaccard"])
        assert per["jaccard_p"] == pytest.approx(expected["jaccard_p"])
    assert summary["fragile"] == 2 and summary["targeted"] == 2 and summary["neurons"] == 8
    assert list(table["neuron"]) == list(range(8))
    assert list(table.columns) == [
        "neuron", "label", "antifragile", "phi", "share", "targeted", "excess_share",
        "null_excess", "noise_share", "filter_gain", "reference_excess", "reference_share",
        "placebo_excess", "surrogate_excess", "clean_impact", "adversarial_impact",
        "difference_impact",
    ]  # fmt: skip
    assert table["targeted"].sum() == 2
    assert table.loc[table["targeted"], "neuron"].tolist() == most_targeted(mean, 0.25).tolist()
    json.dumps(json_ready(summary), allow_nan=False)


def test_correlate_constant_phi_reports_null():
    labels, targeting, _ = _records(np.zeros(8))
    summary, _ = run(labels, targeting, 0.25)
    clean = json_ready(summary)
    assert clean["spearman_rho"] is None and clean["by_epsilon"]["0.1"]["kendall_p"] is None
    assert clean["jaccard"] is not None  # the overlap is still defined
    json.dumps(clean, allow_nan=False)


def test_every_score_is_set_against_d_x_n_and_g_and_the_headline_is_x():
    """A hand-made layer where D follows the filters (N) while phi follows X = D / N: the
    headline (phi against X) is +1, phi against D is not, and each score gets all four."""
    noise = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]], dtype=torch.float64)
    excess = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    share = noise * excess
    share = share / share.sum(dim=1, keepdim=True)
    gain = torch.tensor([4.0, 3.0, 2.0, 1.0])
    targeting = targeting_record(share, torch.ones(4), noise=noise, gain=gain)
    phi = [0.0, 0.1, 0.2, 0.3]  # rises with X
    labels = labels_record(phi, ["robust", "neutral", "neutral", "fragile"])
    summary, table = run(labels, targeting, 0.25)
    head = summary["headline"]
    x = targeting.excess_share.numpy()
    assert x[0] < x[1] < x[2] < x[3]  # X keeps the order of the hand-made excess
    headline.check("correlate", head)  # the declared keys and types
    assert summary["score"] == "clean" and head["excess_spearman_rho"] == pytest.approx(1.0)
    assert summary["labels_resolved"] is True
    assert head["noise_spearman_rho"] == pytest.approx(-1.0)
    assert head["filter_gain_spearman_rho"] == pytest.approx(-1.0)
    d_rho = stats.spearmanr(phi, share.numpy().mean(axis=0)).statistic
    assert head["share_spearman_rho"] == pytest.approx(d_rho) == summary["spearman_rho"]
    assert set(summary["scores"]) == {"clean", "adversarial", "difference", "loss"}
    assert set(summary["secondary_scores"]) == {"loss"}  # psi: secondary
    for per_score in summary["scores"].values():
        assert set(per_score) == {
            "D",
            "excess",
            "noise",
            "filter_gain",
            "reference_excess",
            "reference_share",
            "placebo_excess",
            "surrogate_excess",
        }
        assert per_score["excess"]["neurons"] == 4
    assert table["excess_share"].tolist() == pytest.approx(x.tolist())


def test_neurons_without_a_defined_excess_share_are_left_out_and_counted():
    noise = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    share = torch.tensor([[0.4, 0.3, 0.2, 0.1]], dtype=torch.float64)
    targeting = targeting_record(share, torch.ones(4), noise=noise)
    labels = labels_record([0.3, 0.2, 0.1, 0.0], ["fragile", "neutral", "neutral", "robust"])
    summary, _ = run(labels, targeting, 0.25)
    excess = summary["scores"]["clean"]["excess"]
    assert excess["neurons"] == 2 and math.isnan(excess["spearman_rho"])
    assert math.isnan(summary["headline"]["excess_spearman_rho"])


def _figure_case():
    """Six neurons, every label and an antifragile one (robust, phi < 0), X from 0.5 to 2."""
    noise = torch.tensor([[0.4, 0.3, 0.2, 0.1, 0.1, 0.2]] * 2, dtype=torch.float64)
    share = noise * torch.tensor([0.5, 1.0, 1.5, 2.0, 0.7, 1.2], dtype=torch.float64)
    targeting = targeting_record(share / share.sum(dim=1, keepdim=True), torch.ones(6), noise=noise)
    labels = labels_record(
        [-0.1, 0.1, 0.2, 0.3, 0.05, 0.0],
        ["robust", "neutral", "neutral", "fragile", "robust", "neutral"],
    )
    return run(labels, targeting, 0.25)


def test_the_figure_shows_x_against_phi_with_the_noise_band_and_its_draws(tmp_path):
    from fragile_neurons.figures.correlate import correlation_figure

    summary, table = _figure_case()
    fig = correlation_figure(table, summary, "test")
    assert len(fig.axes) == 2  # D and X; no per-epsilon panel
    excess = fig.axes[1]
    assert excess.patches, "no noise band"
    nulls = [c for c in excess.collections if c.get_label() == "X of random noise, per neuron"]
    assert len(nulls) == 1 and len(nulls[0].get_offsets()) == table["null_excess"].notna().sum()


def test_the_figure_marks_each_label_alike_in_both_panels_with_one_legend_outside(tmp_path):
    """One marker per label (LABEL_STYLES), the same in the panel of D and that of X (an
    antifragile neuron included), each neuron once per panel; one legend, below the panels."""
    from test_figures import check_saved, legends_overlapping_axes

    from fragile_neurons.figures.correlate import LABEL_STYLES, correlation_figure, label_styles

    summary, table = _figure_case()
    assert label_styles(table).tolist() == [
        "antifragile", "neutral", "neutral", "fragile", "robust", "neutral"
    ]  # fmt: skip
    fig = correlation_figure(table, summary, "test")
    names = {style["label"]: key for key, style in LABEL_STYLES.items()}

    def markers(ax) -> dict:
        """{label: (marker path, face colours, edge colours, points)} of a panel."""
        return {
            names[c.get_label()]: (
                c.get_paths()[0].vertices.round(6).tolist(),
                c.get_facecolors().round(6).tolist(),
                c.get_edgecolors().round(6).tolist(),
                len(c.get_offsets()),
            )
            for c in ax.collections
            if c.get_label() in names
        }

    share, excess = (markers(ax) for ax in fig.axes)
    assert share == excess and set(share) == set(LABEL_STYLES)
    assert share["antifragile"][1] == []  # hollow: no face
    assert share["robust"][1] != [] and share["robust"][0] == share["antifragile"][0]
    assert sum(points for *_, points in share.values()) == len(table)
    assert [ax.get_legend() for ax in fig.axes] == [None, None] and len(fig.legends) == 1
    shown = [text.get_text() for text in fig.legends[0].get_texts()]
    assert shown[:4] == [LABEL_STYLES[k]["label"] for k in LABEL_STYLES]  # each once, first
    assert len(shown) == len(set(shown)) and "most targeted" in shown
    assert legends_overlapping_axes(fig) == []
    check_saved(lambda: correlation_figure(table, summary, "test"), tmp_path, "correlate")


def test_the_placebo_row_and_the_ceiling_of_the_primary():
    """rho(phi, X^plc) stands beside the primary; X^ref's split-half reliability is
    Spearman-Brown of its halves' Spearman rho, and the ceiling sqrt(rel(phi) * rel(X^ref))."""
    phi = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.05, 0.25])
    label = ["fragile", "robust", "fragile", "neutral", "robust", "neutral"]
    share = torch.tensor([[0.3, 0.1, 0.2, 0.15, 0.1, 0.15]], dtype=torch.float64)
    reference = torch.full((1, 6), 1 / 6, dtype=torch.float64)
    placebo = torch.tensor([[0.2, 0.1, 0.2, 0.2, 0.1, 0.2]], dtype=torch.float64)
    halves = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 1.0, 3.0, 4.0, 6.0, 5.0]]
    targeting = targeting_record(
        share, torch.ones(6), reference=reference, placebo=placebo, reference_halves=halves
    )
    summary, table = run(labels_record(phi, label, reliability=0.64), targeting, 0.25)
    head = summary["headline"]
    x_plc = (reference / placebo).numpy()[0]
    assert table["placebo_excess"].tolist() == pytest.approx(x_plc.tolist())
    rho = stats.spearmanr(phi.numpy(), x_plc).statistic
    assert head["placebo"] is True and head["placebo_excess_spearman_rho"] == pytest.approx(rho)
    r = stats.spearmanr(*halves).statistic
    assert head["reference_excess_reliability"] == pytest.approx(2 * r / (1 + r))
    assert head["ceiling"] == pytest.approx(math.sqrt(0.64 * 2 * r / (1 + r)))
    none = run(labels_record(phi, label), targeting_record(share, torch.ones(6)), 0.25)[0]
    assert none["headline"]["placebo"] is False
    assert math.isnan(none["headline"]["placebo_excess_spearman_rho"])
    assert math.isnan(none["headline"]["ceiling"])  # no reliability of X^ref without f_ref


def test_the_ceiling_counts_a_negative_reliability_as_zero():
    from fragile_neurons.stats.reliability import ceiling

    assert ceiling(0.81, 0.64) == pytest.approx(0.72)
    assert ceiling(-0.2, 0.9) == 0.0
    assert math.isnan(ceiling(math.nan, 0.5))


def test_psi_is_set_against_every_measure_as_a_secondary_score():
    """The loss fragility psi (Labels.loss_fragility, the clean loss impact) gets the rows phi
    gets, by the same association, and its rho against X^ref is a secondary headline number;
    phi's rows do not change."""
    g = np.random.default_rng(0)
    share = torch.as_tensor(g.dirichlet(np.ones(8), size=2), dtype=torch.float64)
    reference = torch.as_tensor(g.dirichlet(np.ones(8), size=2), dtype=torch.float64)
    noise = torch.as_tensor(g.dirichlet(np.ones(8), size=2), dtype=torch.float64)
    gain = torch.as_tensor(g.uniform(1, 2, size=8))
    targeting = targeting_record(share, torch.ones(8), noise=noise, gain=gain, reference=reference)
    phi = torch.as_tensor(g.normal(size=8))
    psi = torch.as_tensor(g.normal(size=8))
    labels = labels_record(phi, ["fragile", "fragile", "robust", "robust"] + ["neutral"] * 4)
    with_psi = dataclasses.replace(labels, clean_loss_impact=psi)
    before, _ = run(labels, targeting, 0.25)
    summary, _ = run(with_psi, targeting, 0.25)
    loss = summary["scores"]["loss"]
    x_ref = targeting.reference_excess.numpy()
    assert loss["reference_excess"] == association_where_defined(psi.numpy(), x_ref)
    assert loss["D"] == association_where_defined(psi.numpy(), targeting.mean_share())
    rho = stats.spearmanr(psi.numpy(), x_ref)
    head = summary["headline"]
    assert head["loss_reference_excess_spearman_rho"] == pytest.approx(rho.statistic)
    assert head["loss_reference_excess_spearman_p"] == pytest.approx(rho.pvalue)
    headline.check("correlate", head)
    for name, values in loss.items():  # every row but the placebo's (no placebo here)
        defined = name != "placebo_excess"
        assert values["neurons"] == 8 * defined, name
        assert math.isfinite(values["spearman_rho"]) == defined, name

    def same(a, b) -> bool:  # NaN as NaN
        return json.dumps(json_ready(a)) == json.dumps(json_ready(b))

    for score in ("clean", "adversarial", "difference"):  # phi's rows: psi changes none
        assert same(summary["scores"][score], before["scores"][score])
    phi_head = {k: v for k, v in head.items() if not k.startswith("loss_")}
    before_head = {k: v for k, v in before["headline"].items() if not k.startswith("loss_")}
    assert same(phi_head, before_head)


def test_split_half_leaves_out_a_neuron_undefined_on_a_half():
    """A neuron whose X^ref is undefined on a half (its D^ref never moves it there) is left out of
    the reliability, as the correlations leave it out, and the count says so."""
    from fragile_neurons.stats.reliability import split_half

    first, second = [1.0, 2.0, float("nan"), 4.0, 5.0], [2.0, 1.0, 3.0, 4.0, 5.0]
    got = split_half(first, second)
    r = stats.spearmanr([1, 2, 4, 5], [2, 1, 4, 5]).statistic
    assert got["neurons"] == 4 and got["split_half_rho"] == pytest.approx(r)
    assert got["spearman_brown"] == pytest.approx(2 * r / (1 + r))
