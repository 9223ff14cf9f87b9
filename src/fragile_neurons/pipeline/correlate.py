"""The correlate stage: fragility against the attack, exactly as method.md section 4 defines it.

Across the N neurons of the scanned layer, fragility phi_k is set against the attack share D_k,
for each epsilon in E+ and for the mean over E+: Pearson r, Spearman rho and Kendall tau, each
with its two-sided p-value from scipy.stats, and the overlap of the fragile set with the most
targeted set (the ceil(top_fraction * N) neurons with the largest share, ties broken by neuron
index: ranking.py): the Jaccard index and the hypergeometric p-value of an overlap at least that
large.

The controls (method.md sections 2 and 4): because the first layer is affine up to clipping, D is
close to a property of each filter whatever the perturbation. So phi is also set against the
reference excess X^ref (f's attack's share over the share of the attack of another network trained
the same way, the reference f_ref: the primary test of "the attack targets fragile neurons", beside
the placebo excess X^plc, two networks that are not f, its empirical null, and the ceiling that the
reliabilities of phi and X^ref put on it), the surrogate excess X^sur (over a perturbation with the
spatial spectrum of f's own sign perturbation that aims nowhere), the excess share X (over white
noise of the same size), the noise share N, the filter gain G and the reference share D^ref, for
each of the three scores (clean, adversarial, difference impact); an association of phi with N, G
or D^ref as strong as with D means D measures the filters or the task, not f's attack aiming at f's
neurons. Neurons whose excess is undefined (its control never moves them) are left out of its
statistics, and `neurons` says how many remain.

The loss fragility psi (method.md section 3, v4; `Labels.loss_fragility`, the clean loss impact)
is set against the same measures by the same `association`, as a fourth score, `loss`, in
`scores`: secondary rows beside phi's (`secondary_scores` says so in correlate.json), never the
primary, never the one that chose the labels. Its Spearman rho against X^ref, with the p-value,
is in the headline beside the primary's, as a secondary number.

Statistics are reported together with their p-values, whichever way they fall. Where a statistic
is undefined (a constant phi or share), scipy's NaN is kept as NaN here and written as null in
JSON; nothing is dropped or replaced.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from ..figures.correlate import correlation_figure
from ..running.config import LOSS_SCORE
from ..stats.ranking import largest, top_count
from ..stats.reliability import ceiling, split_half
from ..storage import headline, io, paths
from ..storage.io import finite_or_none
from ..storage.records import Labels, Targeting


def _vectors(phi, share) -> tuple[np.ndarray, np.ndarray]:
    phi = np.asarray(phi, dtype=np.float64)
    share = np.asarray(share, dtype=np.float64)
    if phi.ndim != 1 or phi.shape != share.shape:
        raise ValueError(
            f"phi and share must be vectors of one length, got {phi.shape}, {share.shape}"
        )
    if len(phi) < 2:
        raise ValueError(f"correlation needs at least 2 neurons, got {len(phi)}")
    if not (np.isfinite(phi).all() and np.isfinite(share).all()):
        raise ValueError("phi and share must be finite")
    return phi, share


def association(phi, share) -> dict[str, float]:
    """Pearson r, Spearman rho and Kendall tau (tau-b) of phi against share across neurons, each
    with its two-sided p-value. A constant input gives NaN, as scipy defines it."""
    phi, share = _vectors(phi, share)
    with warnings.catch_warnings():
        # a constant input: scipy warns and returns NaN; the NaN itself is the honest answer
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson = stats.pearsonr(phi, share)
        spearman = stats.spearmanr(phi, share)
        kendall = stats.kendalltau(phi, share)
    return {
        "pearson_r": float(pearson.statistic),
        "pearson_p": float(pearson.pvalue),
        "spearman_rho": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
        "kendall_tau": float(kendall.statistic),
        "kendall_p": float(kendall.pvalue),
    }


def association_where_defined(phi, values) -> dict[str, float | int]:
    """`association` over the neurons where both phi and values are finite, with their count
    `neurons`; NaN statistics when fewer than 3 remain (or an input is constant there)."""
    phi = np.asarray(phi, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(phi) & np.isfinite(values)
    if keep.sum() < 3:
        keys = ("pearson_r", "pearson_p", "spearman_rho", "spearman_p", "kendall_tau", "kendall_p")
        return {**dict.fromkeys(keys, math.nan), "neurons": int(keep.sum())}
    return {**association(phi[keep], values[keep]), "neurons": int(keep.sum())}


def most_targeted(share, fraction: float) -> np.ndarray:
    """The ceil(fraction * N) neurons with the largest share (ties: lower index first), sorted."""
    return np.sort(largest(share, top_count(len(share), fraction)))


def overlap(fragile, targeted, n: int) -> dict[str, float | int]:
    """Overlap k of two neuron sets out of n: the Jaccard index k / |union| and the
    hypergeometric p-value P(K >= k) of drawing |fragile| neurons at random out of n of which
    |targeted| are targeted: scipy.stats.hypergeom.sf(k - 1, n, |targeted|, |fragile|)."""
    fragile, targeted = set(map(int, fragile)), set(map(int, targeted))
    if any(not 0 <= k < n for k in fragile | targeted):
        raise ValueError(f"neuron indices must lie in [0, {n})")
    k, union = len(fragile & targeted), len(fragile | targeted)
    return {
        "overlap": k,
        "jaccard": k / union if union else float("nan"),
        "jaccard_p": float(stats.hypergeom.sf(k - 1, n, len(targeted), len(fragile))),
    }


def compare(phi, share, fragile, top_fraction: float) -> dict[str, float | int]:
    """Association of phi with share, and the overlap of the fragile set with the most
    targeted set by that share."""
    phi, share = _vectors(phi, share)
    targeted = most_targeted(share, top_fraction)
    return {**association(phi, share), **overlap(fragile, targeted, len(phi))}


def measures(targeting: Targeting) -> dict[str, np.ndarray]:
    """What phi is set against, per neuron (method.md section 4): the mean attack share D over
    E+, the excess share X, the mean noise share N, the filter gain G, the reference excess
    X^ref (the primary measure of claim 1; NaN without a reference network), the mean reference
    share D^ref, the placebo excess X^plc (the primary's empirical null; NaN without a placebo
    network) and the surrogate excess X^sur."""
    return {
        "D": targeting.mean_share(),
        "excess": targeting.excess_share.numpy(),
        "noise": targeting.mean_noise_share(),
        "filter_gain": targeting.filter_gain.numpy(),
        "reference_excess": targeting.reference_excess.numpy(),
        "reference_share": targeting.mean_reference_share(),
        "placebo_excess": targeting.placebo_excess.numpy(),
        "surrogate_excess": targeting.surrogate_excess.numpy(),
    }


# Claim 1's primary endpoint (method.md section 7), declared before it was measured: the
# Spearman rho of the clean phi with the reference excess X^ref. Only it gets a verdict.
PRIMARY_SCORE, PRIMARY_MEASURE = "clean", "reference_excess"


def scores(labels: Labels) -> dict[str, np.ndarray]:
    """The three fragility scores of every neuron (method.md section 3)."""
    return {
        "clean": labels.clean_impact.numpy(),
        "adversarial": labels.adversarial_impact.numpy(),
        "difference": labels.difference_impact.numpy(),
    }


# The loss fragility psi, a fourth score beside the three (method.md section 3, v4): secondary.
SECONDARY_SCORES = {
    LOSS_SCORE: "psi, the loss fragility: the clean loss impact, mean cross-entropy of f^(-k) "
    "minus that of f on S (method.md section 3, v4); secondary, declared after the accuracy "
    "score was seen: never the primary, never chooses the labels"
}


def secondary_scores(labels: Labels) -> dict[str, np.ndarray]:
    """The secondary scores of every neuron, set against the measures beside `scores`: psi."""
    return {LOSS_SCORE: labels.loss_fragility.numpy()}


def correlations(
    labels: Labels, targeting: Targeting, top_fraction: float
) -> tuple[dict, pd.DataFrame]:
    """Fragility phi against the attack share D for the mean over E+ and for each eps in E+ (the top
    level and `by_epsilon`, as the paper measures it), and every score against D, X, N, G, X^ref,
    D^ref, X^plc and X^sur (`scores`), and psi as the secondary score `loss`. The headline is the
    clean phi's (method.md section 7 declares it, whatever label.score labels by): the primary
    endpoint, its Spearman rho against X^ref with the p-value; beside it the placebo's rho against
    X^plc (its empirical null), X^ref's split-half reliability and the ceiling
    sqrt(reliability(phi) * reliability(X^ref)); its rho against X^sur, X, D, N, G and D^ref
    (secondary); whether the run has a reference and a placebo network; and whether the labels were
    resolved (label.py; the fragile set of the overlap comes from them); and, as secondary numbers,
    psi's Spearman rho against X^ref with its p-value.

    Returns the summary (NaN where undefined) and the per-neuron table correlate.csv.
    """
    phi, mean_share = labels.phi.numpy(), targeting.mean_share()
    fragile = np.array(labels.members("fragile"), dtype=np.int64)
    n = len(phi)
    by_epsilon = zip(targeting.epsilon_labels, targeting.share.numpy(), strict=True)
    against = measures(targeting)
    by_score = {
        score: {name: association_where_defined(values, x) for name, x in against.items()}
        for score, values in (scores(labels) | secondary_scores(labels)).items()
    }
    clean, loss = by_score[PRIMARY_SCORE], by_score[LOSS_SCORE]
    reliable = split_half(*targeting.reference_excess_halves.numpy())
    limit = ceiling(labels.clean_reliability, reliable["spearman_brown"])
    summary = {
        "headline": {
            "reference": targeting.reference,  # false: no reference network, no primary endpoint
            "reference_excess_spearman_rho": clean[PRIMARY_MEASURE]["spearman_rho"],
            "reference_excess_spearman_p": clean[PRIMARY_MEASURE]["spearman_p"],
            "placebo": targeting.placebo,  # false: no placebo network, no empirical null
            "placebo_excess_spearman_rho": clean["placebo_excess"]["spearman_rho"],
            "placebo_excess_spearman_p": clean["placebo_excess"]["spearman_p"],
            "reference_excess_reliability": reliable["spearman_brown"],
            "ceiling": limit,
            "surrogate_excess_spearman_rho": clean["surrogate_excess"]["spearman_rho"],
            "surrogate_excess_spearman_p": clean["surrogate_excess"]["spearman_p"],
            "excess_spearman_rho": clean["excess"]["spearman_rho"],
            "excess_spearman_p": clean["excess"]["spearman_p"],
            "share_spearman_rho": clean["D"]["spearman_rho"],
            "share_spearman_p": clean["D"]["spearman_p"],
            "noise_spearman_rho": clean["noise"]["spearman_rho"],
            "filter_gain_spearman_rho": clean["filter_gain"]["spearman_rho"],
            "reference_share_spearman_rho": clean["reference_share"]["spearman_rho"],
            # psi's (secondary): the primary's measure, for the loss fragility
            "loss_reference_excess_spearman_rho": loss[PRIMARY_MEASURE]["spearman_rho"],
            "loss_reference_excess_spearman_p": loss[PRIMARY_MEASURE]["spearman_p"],
        },
        "score": PRIMARY_SCORE,  # the headline's phi
        "labels_score": labels.score,  # label.score: the phi that chose F and R (the overlap's)
        "labels_resolved": labels.resolved,  # false: a cut-off rests on the neuron index
        "neurons": n,
        "fragile": len(fragile),
        "targeted": top_count(n, top_fraction),
        "top_fraction": top_fraction,
        **compare(phi, mean_share, fragile, top_fraction),
        "by_epsilon": {
            label: compare(phi, share, fragile, top_fraction) for label, share in by_epsilon
        },
        "scores": by_score,
        "reference_excess_reliability": reliable,  # X^ref on the halves of S
        "phi_reliability": labels.clean_reliability,  # the clean phi's, from the labels
        "ceiling": limit,  # sqrt(reliability(phi) * reliability(X^ref))
        "secondary_scores": SECONDARY_SCORES,  # which of `scores` are secondary, and why
        "noise_seed": targeting.noise_seed,
    }
    targeted = np.zeros(n, dtype=bool)
    targeted[most_targeted(mean_share, top_fraction)] = True
    table = pd.DataFrame(
        {
            "neuron": np.arange(n),
            "label": labels.label,
            "antifragile": labels.antifragile.numpy(),
            "phi": phi,
            "share": mean_share,
            "targeted": targeted,
            "excess_share": against["excess"],
            "null_excess": targeting.null_excess.numpy(),
            "noise_share": against["noise"],
            "filter_gain": against["filter_gain"],
            "reference_excess": against["reference_excess"],
            "reference_share": against["reference_share"],
            "placebo_excess": against["placebo_excess"],
            "surrogate_excess": against["surrogate_excess"],
            **{f"{score}_impact": values for score, values in scores(labels).items()},
        }
    )
    return summary, table


def json_ready(obj):
    """`obj` with every NaN or infinite float replaced by None (JSON has no NaN):
    io.finite_or_none, which io.write_json applies to everything it writes."""
    return finite_or_none(obj)


def label_table(labels: Labels, targeting: Targeting) -> pd.DataFrame:
    """label.csv: per neuron, phi, label, antifragile, the impacts, the loss impact of the score
    (phi's tiebreak), the loss fragility psi (secondary) and the McNemar p-value, with the
    attack stage's magnitude m and attack share D (the mean over E+)."""
    return pd.DataFrame(
        {
            "neuron": np.arange(len(labels.phi)),
            "phi": labels.phi.numpy(),
            "label": labels.label,
            "antifragile": labels.antifragile.numpy(),
            "clean_impact": labels.clean_impact.numpy(),
            "adversarial_impact": labels.adversarial_impact.numpy(),
            "difference_impact": labels.difference_impact.numpy(),
            "loss_impact": labels.loss_impact.numpy(),
            "loss_fragility": labels.loss_fragility.numpy(),
            "mcnemar_p": labels.mcnemar_p.numpy(),
            "magnitude": targeting.magnitude.numpy(),
            "share": targeting.mean_share(),
        }
    )


# --- the stage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the correlate stage reads of params.yaml: its section, correlate.top_fraction."""

    top_fraction: float

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        return cls(params["correlate"]["top_fraction"])


class Inputs(NamedTuple):
    labels: Labels
    targeting: Targeting


class Correlated(NamedTuple):
    summary: dict  # correlate.json, NaN where undefined
    table: pd.DataFrame  # correlate.csv
    labels: Labels  # for label.csv
    targeting: Targeting


def load(ctx, settings: Settings) -> Inputs:
    labels = Labels.load(paths.labels_record(ctx.name))
    targeting = Targeting.load(paths.targeting_record(ctx.name), neurons=len(labels.phi))
    return Inputs(labels, targeting)


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> Correlated:
    summary, table = correlations(inputs.labels, inputs.targeting, settings.top_fraction)
    return Correlated(summary, table, inputs.labels, inputs.targeting)


def write(ctx, outputs: Correlated) -> None:
    """The headline metrics/<run>/correlate/ (headline.py), and for people (data/views/<run>/
    correlate/) correlate.json, correlate.csv, correlate.png and label.csv (the labels joined
    with the targeting, both of which this stage reads)."""
    summary, table, labels, targeting = outputs
    headline.write(ctx.name, "correlate", json_ready(summary))
    io.write_csv(paths.view(ctx.name, "correlate", "correlate.csv"), table)
    io.write_csv(paths.view(ctx.name, "correlate", "label.csv"), label_table(labels, targeting))
    figure = correlation_figure(table, summary, ctx.name)
    io.save_figure(paths.view(ctx.name, "correlate", "correlate.png"), figure)
