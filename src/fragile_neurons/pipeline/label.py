"""The label stage (method.md section 3): fragility scores and labels from the scan's measurements.

Scores are drops in accuracy when a neuron is dropped (positive: the network needs it):
clean impact c_k, adversarial impact a_k(eps) and difference impact d_k(eps) = a_k(eps) - c_k,
the last two averaged over E+ (the epsilons without 0). The fragility phi_k is the one named by
`label.score`. With n = ceil(q * N) (q: `label.fraction`), the n neurons of largest phi are
fragile, the n of smallest phi robust (taken from the others, should 2n exceed N), the rest
neutral; a robust neuron with phi < 0 is also antifragile.

Ties in phi break by the matching loss impact (the same score with mean cross-entropy in place
of accuracy, loss of f^(-k) minus loss of f: positive where the network needs the neuron), the
larger first among fragile candidates, the smaller first among robust ones; only a tie in both
breaks by neuron index, the lower first (ranking.py). A cut-off (the n-th fragile or the n-th
robust place) that only the index decides, or a phi equal for every neuron, leaves the labels
unresolved: `Labels.warnings` says why, the stage prints each on stderr and label.json carries
them. Per neuron, the exact two-sided McNemar p-value of the clean discordant counts (the scan
set's images that f gets right and f^(-k) wrong, and the reverse) tells whether its clean
impact is more than noise.

Scores are computed from counts of correct predictions: every score of a scan is an integer
divided by the same constant, so neurons with equal counts get exactly equal scores and tie.

Reliability: every score, and the loss fragility psi below, is also computed on each half of the
scan set (its first and second half, each in its seeded order: the scan's per-half tallies),
and `split_half` gives the Spearman rho r of the two halves across neurons and the
Spearman-Brown reliability 2r / (1 + r) of the score on all of S.

The loss fragility psi (method.md section 3, v4; secondary): psi_k = the clean loss impact,
mean cross-entropy of f^(-k) minus that of f on S, continuous where the accuracy drop moves by
single images. It is `Labels.clean_loss_impact` (`Labels.loss_fragility`), and label.json
reports its split-half reliability beside phi's. It never replaces phi and never chooses a
label (it breaks ties in phi only where it is the `label.score` loss impact, as every score's
loss impact does).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..figures.label import impact_figure
from ..running.config import LOSS_SCORE, SCORES
from ..stats.ranking import index_decides, ranked, top_count
from ..stats.reliability import split_half
from ..stats.significance import ALPHA, mcnemar
from ..storage import headline, io, paths
from ..storage.records import Labels, ScanLayer, ScanMeasurements


def impact_scores(intact_correct, dropped_correct, epsilons, samples: int) -> dict[str, np.ndarray]:
    """Per neuron: clean, adversarial and difference impact (the last two the mean over E+), in
    accuracy units. intact_correct (E,) and dropped_correct (N, E) count correct predictions
    out of `samples` at each of `epsilons`, which hold 0 once."""
    intact = np.asarray(intact_correct, dtype=np.int64)
    dropped = np.asarray(dropped_correct, dtype=np.int64)
    eps = np.asarray(epsilons, dtype=float)
    drop = intact[None, :] - dropped  # integer drops in correct predictions
    clean = drop[:, eps == 0][:, 0]
    positive = int((eps > 0).sum())
    adversarial = drop[:, eps > 0].sum(axis=1)  # times `positive`
    difference = adversarial - positive * clean
    scale = float(samples * positive) if positive else math.nan  # no E+: no adversarial impact
    return {
        "clean": clean / samples,
        "adversarial": adversarial / scale,
        "difference": difference / scale,
    }


def loss_impacts(intact_loss, dropped_loss, epsilons) -> dict[str, np.ndarray]:
    """Per neuron: the clean, adversarial and difference loss impact, the scores of
    `impact_scores` with mean cross-entropy in place of accuracy and the sign turned so that
    positive means the network needs the neuron: loss of f^(-k) minus loss of f at epsilon 0,
    its mean over E+, and the second minus the first. intact_loss (E,), dropped_loss (N, E)."""
    intact = np.asarray(intact_loss, dtype=np.float64)
    dropped = np.asarray(dropped_loss, dtype=np.float64)
    eps = np.asarray(epsilons, dtype=float)
    rise = dropped - intact[None, :]
    clean = rise[:, eps == 0][:, 0]
    adversarial = np.full(len(rise), math.nan)  # no E+: no adversarial impact
    if (eps > 0).any():
        adversarial = rise[:, eps > 0].mean(axis=1)
    return {"clean": clean, "adversarial": adversarial, "difference": adversarial - clean}


def _half_scores(m: ScanMeasurements, half: int) -> dict[str, np.ndarray]:
    """The three impact scores and psi (LOSS_SCORE) on half `half` (0: the first `half_samples`
    images of the scan set, 1: the rest), from the scan's per-half tallies."""
    if half == 0:
        size = m.half_samples
        intact, dropped = m.first_half_intact_correct, m.first_half_dropped_correct
        intact_loss, dropped_loss = m.first_half_intact_loss_sum, m.first_half_dropped_loss_sum
    else:
        size = m.samples - m.half_samples
        intact = m.intact_correct - m.first_half_intact_correct
        dropped = m.dropped_correct - m.first_half_dropped_correct
        intact_loss, dropped_loss = m.second_half_intact_loss_sum, m.second_half_dropped_loss_sum
    psi = loss_impacts(intact_loss / size, dropped_loss / size, m.epsilons)["clean"]
    return {**impact_scores(intact, dropped, m.epsilons, size), LOSS_SCORE: psi}


def reliability(m: ScanMeasurements) -> dict[str, dict[str, float]]:
    """Per score (clean, adversarial, difference) and for psi (LOSS_SCORE): `split_half` of its
    values on the first `half_samples` images of the scan set and on the rest."""
    if m.half_samples == 0:  # one image: no halves
        return {score: split_half([], []) for score in (*SCORES, LOSS_SCORE)}
    first, second = _half_scores(m, 0), _half_scores(m, 1)
    return {score: split_half(first[score], second[score]) for score in first}


def mcnemar_p(lost, gained) -> np.ndarray:
    """Per neuron, the exact two-sided McNemar p-value of `lost` (images f gets right and
    f^(-k) wrong) against `gained` (the reverse): binomtest(lost, lost + gained, 1/2); 1 where
    the two networks disagree on no image."""
    lost = np.asarray(lost, dtype=np.int64)
    gained = np.asarray(gained, dtype=np.int64)
    return np.array(
        [mcnemar(b, c) for b, c in zip(lost, gained, strict=True)],
        dtype=np.float64,
    )


class Assignment(NamedTuple):
    label: list[str]  # fragile | robust | neutral
    antifragile: np.ndarray  # bool: robust with phi < 0
    warnings: list[str]  # why the labels are unresolved; empty: resolved


def assign(phi, fraction: float, loss_impact=None) -> Assignment:
    """Labels (fragile | robust | neutral), the antifragile flag of each neuron, and what leaves
    the labels unresolved. Ties in phi break by `loss_impact` (None: by index alone), the
    larger first for fragile, the smaller first for robust, then by the lower index."""
    phi = np.asarray(phi, dtype=float)
    loss = None if loss_impact is None else np.asarray(loss_impact, dtype=float)
    n = top_count(len(phi), fraction)
    labels = np.full(len(phi), "neutral", dtype=object)
    descending = ranked(phi, loss)
    labels[descending[:n]] = "fragile"
    ascending = [k for k in ranked(-phi, None if loss is None else -loss) if labels[k] != "fragile"]
    labels[ascending[:n]] = "robust"
    antifragile = (labels == "robust") & (phi < 0)
    warnings = []
    if len(phi) > 1 and (phi == phi[0]).all():
        warnings.append(
            f"phi is constant: every one of the {len(phi)} neurons has phi = {phi[0]:g}, so "
            f"phi tells no neuron from another (too few scan images?)"
        )
    for name, order, values, tiebreak in (
        ("fragile", descending, phi, loss),
        ("robust", ascending, -phi, None if loss is None else -loss),
    ):
        if index_decides(order, n, values, tiebreak):
            inside, outside = order[n - 1], order[n]
            tie = "phi ties" if loss is None else "phi and loss impact tie"
            warnings.append(
                f"the {name} cut-off is decided by neuron index ({tie}): "
                f"neuron {inside} is {name}, neuron {outside} is not"
            )
    return Assignment([str(name) for name in labels], antifragile, warnings)


def labelled(measurements: ScanMeasurements, score: str, fraction: float) -> Labels:
    """Impacts and loss impacts, phi = the `score` impact (label.score), labels under `fraction`
    (label.fraction) with ties in phi broken by the `score` loss impact, and each neuron's
    McNemar p-value; the clean phi's split-half reliability (the ceiling of claim 1's primary
    endpoint, which the correlate stage reports)."""
    m = measurements
    impacts = impact_scores(m.intact_correct, m.dropped_correct, m.epsilons, m.samples)
    losses = loss_impacts(m.intact_loss, m.dropped_loss, m.epsilons)
    assigned = assign(impacts[score], fraction, losses[score])
    return Labels(
        score=score,
        fraction=fraction,
        phi=torch.from_numpy(impacts[score].copy()),
        clean_impact=torch.from_numpy(impacts["clean"]),
        adversarial_impact=torch.from_numpy(impacts["adversarial"]),
        difference_impact=torch.from_numpy(impacts["difference"]),
        label=assigned.label,
        antifragile=torch.from_numpy(assigned.antifragile),
        clean_loss_impact=torch.from_numpy(losses["clean"]),
        adversarial_loss_impact=torch.from_numpy(losses["adversarial"]),
        difference_loss_impact=torch.from_numpy(losses["difference"]),
        mcnemar_p=torch.from_numpy(mcnemar_p(m.dropped_lost, m.dropped_gained)),
        warnings=assigned.warnings,
        clean_reliability=reliability(m)["clean"]["spearman_brown"],
    )


def metrics(labels: Labels, measurements: ScanMeasurements, layer: ScanLayer) -> dict:
    """label.json: the fragile, robust and antifragile neurons, how they were labelled, whether
    the labels are resolved (and the warnings if not), how many labelled neurons have a McNemar
    p-value below ALPHA, the split-half reliability of every score and of psi (`reliability`,
    psi's as `loss`; the clean phi's Spearman-Brown value, which bounds claim 1's primary
    endpoint, as `clean_reliability`, psi's as `loss_reliability`), and the intact network's
    accuracy and loss per epsilon on the scan set; its `headline` (headline.py): whether
    resolved, how many significant, the clean phi's reliability and psi's (secondary)."""
    reliable = reliability(measurements)
    names = measurements.epsilon_labels
    significant = {
        name: sum(labels.mcnemar_p[k].item() < ALPHA for k in labels.members(name))
        for name in ("fragile", "robust")
    }
    return {
        "headline": {  # headline.py
            "resolved": labels.resolved,
            "significant": significant["fragile"] + significant["robust"],
            "clean_reliability": reliable["clean"]["spearman_brown"],
            "loss_reliability": reliable[LOSS_SCORE]["spearman_brown"],  # psi's: secondary
        },
        "neurons": len(labels.phi),
        "fragile": labels.members("fragile"),
        "robust": labels.members("robust"),
        "antifragile": [k for k, flag in enumerate(labels.antifragile.tolist()) if flag],
        "score": labels.score,
        "label_fraction": labels.fraction,
        "label_count": top_count(len(labels.phi), labels.fraction),
        "resolved": labels.resolved,
        "warnings": list(labels.warnings),
        "significant": significant["fragile"] + significant["robust"],
        "significant_fragile": significant["fragile"],
        "significant_robust": significant["robust"],
        "clean_reliability": reliable["clean"]["spearman_brown"],
        "loss_reliability": reliable[LOSS_SCORE]["spearman_brown"],  # psi's (secondary)
        "reliability": reliable,
        "half_samples": measurements.half_samples,
        "intact_accuracy": dict(zip(names, measurements.intact_accuracy.tolist(), strict=True)),
        "intact_loss": dict(zip(names, measurements.intact_loss.tolist(), strict=True)),
        "layer": layer.describe(),
        "samples": measurements.samples,
        "adversarial": measurements.adversarial,
    }


# --- the stage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the label stage reads of params.yaml: its section, label.score and label.fraction."""

    score: str
    fraction: float

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        return cls(params["label"]["score"], params["label"]["fraction"])


class Inputs(NamedTuple):
    layer: ScanLayer  # N and L's name
    measurements: ScanMeasurements


class Labelled(NamedTuple):
    labels: Labels
    measurements: ScanMeasurements  # for label.json and impact.png
    layer: ScanLayer


def load(ctx, settings: Settings) -> Inputs:
    layer = ScanLayer.load(paths.layer_record(ctx.name))
    return Inputs(layer, ScanMeasurements.load(paths.scan_record(ctx.name), neurons=layer.channels))


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> Labelled:
    labels = labelled(inputs.measurements, settings.score, settings.fraction)
    return Labelled(labels, inputs.measurements, inputs.layer)


def write(ctx, outputs: Labelled) -> None:
    """data/label/<run>/labels.pt, the headline metrics/<run>/label/ (headline.py), and for people
    (data/views/<run>/label/) label.json and impact.png; why the labels are unresolved, if they
    are, on stderr. (label.csv, which joins the labels with the attack's targeting, is the
    correlate stage's; filters.png the harden stage's.)"""
    labels, measured, layer = outputs
    for warning in labels.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    labels.save(paths.labels_record(ctx.name))
    headline.write(ctx.name, "label", metrics(labels, measured, layer))
    title = f"{ctx.name}: {layer.conv_name}, phi = {labels.score} impact"
    io.save_figure(
        paths.view(ctx.name, "label", "impact.png"), impact_figure(measured, labels, title)
    )
