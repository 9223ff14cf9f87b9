"""Fragility scores and labels from the nodal-dropout scan (method.md section 3).

Scores are drops in accuracy when a neuron is dropped (positive: the network needs it):
clean impact c_k, adversarial impact a_k(eps) and difference impact d_k(eps) = a_k(eps) - c_k,
the last two averaged over E+ (the epsilons without 0). The fragility phi_k is the one named by
`scan.score`. With n = ceil(q * N), the n neurons of largest phi are fragile, the n of smallest
phi robust (taken from the others, should 2n exceed N), the rest neutral; a robust neuron with
phi < 0 is also antifragile. Ties break by neuron index (the lower index first, in both
rankings), so labels are deterministic.

Scores are computed from counts of correct predictions: every score of a scan is an integer
divided by the same constant, so neurons with equal counts get exactly equal scores and tie.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SCORES = ("clean", "adversarial", "difference")
LABELS = ("fragile", "robust", "neutral")


def impact_scores(intact_correct, dropped_correct, epsilons, samples: int) -> pd.DataFrame:
    """Per neuron: clean_impact, adversarial_impact and difference_impact (the last two the mean
    over E+; NaN when E+ is empty), in accuracy units.

    intact_correct (E,) and dropped_correct (N, E) count correct predictions out of `samples`
    at each of `epsilons`, which must hold 0 exactly once.
    """
    intact = np.asarray(intact_correct, dtype=np.int64)
    dropped = np.asarray(dropped_correct, dtype=np.int64)
    eps = np.asarray(epsilons, dtype=float)
    if dropped.ndim != 2 or intact.shape != (dropped.shape[1],) or eps.shape != intact.shape:
        raise ValueError(
            f"shapes do not match: intact {intact.shape}, dropped {dropped.shape}, "
            f"epsilons {eps.shape}; expected (E,), (N, E), (E,)"
        )
    if samples < 1 or (dropped < 0).any() or (dropped > samples).any():
        raise ValueError(f"counts must lie in [0, samples = {samples}]")
    if (eps == 0).sum() != 1:
        raise ValueError(f"epsilons must hold 0 (the clean images) exactly once, got {epsilons}")
    drop = intact[None, :] - dropped  # integer drops in correct predictions
    clean = drop[:, eps == 0][:, 0]
    positive = int((eps > 0).sum())
    adversarial = drop[:, eps > 0].sum(axis=1)  # times `positive`
    difference = adversarial - positive * clean
    scale = float(samples * positive) if positive else math.nan
    return pd.DataFrame({
        "neuron": np.arange(len(dropped)),
        "clean_impact": clean / samples,
        "adversarial_impact": adversarial / scale,
        "difference_impact": difference / scale,
    })  # fmt: skip


def fragility(scores: pd.DataFrame, score: str) -> np.ndarray:
    """phi: the column of `impact_scores` that `score` (clean | adversarial | difference) names."""
    if score not in SCORES:
        raise ValueError(f"score = {score!r}; expected one of {SCORES}")
    phi = scores[f"{score}_impact"].to_numpy(dtype=float)
    if np.isnan(phi).any():
        raise ValueError(f"score {score!r} needs at least one positive epsilon")
    return phi


def label_count(neurons: int, fraction: float) -> int:
    """n = ceil(q * N), with q * N rounded first so that 0.1 * 30 gives 3, not 4."""
    if not 0 < fraction <= 0.5:
        raise ValueError(f"label_fraction = {fraction!r}; expected a number in (0, 0.5]")
    return math.ceil(round(fraction * neurons, 9))


def label(phi, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels (fragile | robust | neutral) and the antifragile flag of each neuron."""
    phi = np.asarray(phi, dtype=float)
    if phi.ndim != 1 or not np.isfinite(phi).all():
        raise ValueError("phi must be a finite vector, one score per neuron")
    n = label_count(len(phi), fraction)
    index = np.arange(len(phi))
    labels = np.full(len(phi), "neutral", dtype=object)
    fragile = np.lexsort((index, -phi))[:n]  # largest phi first, then the lower index
    labels[fragile] = "fragile"
    ascending = [k for k in np.lexsort((index, phi)) if labels[k] != "fragile"]
    labels[ascending[:n]] = "robust"
    antifragile = (labels == "robust") & (phi < 0)
    return labels, antifragile


def neuron_table(scores: pd.DataFrame, score: str, fraction: float) -> pd.DataFrame:
    """`impact_scores` with phi, label and antifragile, one row per neuron."""
    phi = fragility(scores, score)
    labels, antifragile = label(phi, fraction)
    table = scores.copy()
    table.insert(1, "phi", phi)
    table.insert(2, "label", labels.astype(str))
    table.insert(3, "antifragile", antifragile)
    return table
