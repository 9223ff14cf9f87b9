"""The label stage (method.md section 3): fragility scores and labels from the scan's measurements.

Scores are drops in accuracy when a neuron is dropped (positive: the network needs it):
clean impact c_k, adversarial impact a_k(eps) and difference impact d_k(eps) = a_k(eps) - c_k,
the last two averaged over E+ (the epsilons without 0). The fragility phi_k is the one named by
`scan.score`. With n = ceil(q * N), the n neurons of largest phi are fragile, the n of smallest
phi robust (taken from the others, should 2n exceed N), the rest neutral; a robust neuron with
phi < 0 is also antifragile. Ties break by neuron index (the lower index first, in both
rankings: ranking.py), so labels are deterministic.

Scores are computed from counts of correct predictions: every score of a scan is an integer
divided by the same constant, so neurons with equal counts get exactly equal scores and tie.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .ranking import largest, top_count
from .records import Labels, ScanLayer, ScanMeasurements, Targeting


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


def assign(phi, fraction: float) -> tuple[list[str], np.ndarray]:
    """Labels (fragile | robust | neutral) and the antifragile flag of each neuron."""
    phi = np.asarray(phi, dtype=float)
    n = top_count(len(phi), fraction)
    labels = np.full(len(phi), "neutral", dtype=object)
    labels[largest(phi, n)] = "fragile"
    ascending = [k for k in largest(-phi, len(phi)) if labels[k] != "fragile"]
    labels[ascending[:n]] = "robust"
    antifragile = (labels == "robust") & (phi < 0)
    return [str(name) for name in labels], antifragile


def run(measurements: ScanMeasurements, score: str, fraction: float) -> Labels:
    """The label stage: impacts, phi = the `score` impact (scan.score), and labels under
    `fraction` (scan.label_fraction)."""
    m = measurements
    impacts = impact_scores(m.intact_correct, m.dropped_correct, m.epsilons, m.samples)
    label, antifragile = assign(impacts[score], fraction)
    return Labels(
        score=score,
        fraction=fraction,
        phi=torch.from_numpy(impacts[score].copy()),
        clean_impact=torch.from_numpy(impacts["clean"]),
        adversarial_impact=torch.from_numpy(impacts["adversarial"]),
        difference_impact=torch.from_numpy(impacts["difference"]),
        label=label,
        antifragile=torch.from_numpy(antifragile),
    )


def table(labels: Labels, targeting: Targeting) -> pd.DataFrame:
    """label.csv: per neuron, phi, label, antifragile and the impacts, with the attack stage's
    magnitude m and attack share D (the mean over E+)."""
    return pd.DataFrame(
        {
            "neuron": np.arange(len(labels.phi)),
            "phi": labels.phi.numpy(),
            "label": labels.label,
            "antifragile": labels.antifragile.numpy(),
            "clean_impact": labels.clean_impact.numpy(),
            "adversarial_impact": labels.adversarial_impact.numpy(),
            "difference_impact": labels.difference_impact.numpy(),
            "magnitude": targeting.magnitude.numpy(),
            "share": targeting.mean_share(),
        }
    )


def metrics(labels: Labels, measurements: ScanMeasurements, layer: ScanLayer) -> dict:
    """label.json: the fragile, robust and antifragile neurons, how they were labelled, and the
    intact network's accuracy and loss per epsilon on the scan set."""
    names = measurements.epsilon_labels
    return {
        "neurons": len(labels.phi),
        "fragile": labels.members("fragile"),
        "robust": labels.members("robust"),
        "antifragile": [k for k, flag in enumerate(labels.antifragile.tolist()) if flag],
        "score": labels.score,
        "label_fraction": labels.fraction,
        "label_count": top_count(len(labels.phi), labels.fraction),
        "intact_accuracy": dict(zip(names, measurements.intact_accuracy.tolist(), strict=True)),
        "intact_loss": dict(zip(names, measurements.intact_loss.tolist(), strict=True)),
        "layer": layer.describe(),
        "samples": measurements.samples,
        "adversarial": measurements.adversarial,
    }
