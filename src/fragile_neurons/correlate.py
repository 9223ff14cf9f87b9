"""Correlating fragility with the attack, exactly as method.md section 4 defines it.

Across the N neurons of the scanned layer, fragility phi_k is set against the attack share D_k,
for each epsilon in E+ and for the mean over E+: Pearson r, Spearman rho and Kendall tau, each
with its two-sided p-value from scipy.stats, and the overlap of the fragile set with the most
targeted set (the ceil(top_fraction * N) neurons with the largest share, ties broken by neuron
index): the Jaccard index and the hypergeometric p-value of an overlap at least that large.

Statistics are reported together with their p-values, whichever way they fall. Where a statistic
is undefined (a constant phi or share), scipy's NaN is kept as NaN here and written as null in
JSON; nothing is dropped or replaced.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

ASSOCIATION = ("pearson_r", "pearson_p", "spearman_rho", "spearman_p", "kendall_tau", "kendall_p")


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


def top_count(n: int, fraction: float) -> int:
    """ceil(fraction * n), robust to floating-point (0.1 * 30 is 3, not 4)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction = {fraction!r}; expected a number in (0, 1]")
    return math.ceil(round(fraction * n, 9))


def most_targeted(share, fraction: float) -> np.ndarray:
    """The ceil(fraction * N) neurons with the largest share (ties: lower index first), sorted."""
    share = np.asarray(share, dtype=np.float64)
    order = np.lexsort((np.arange(len(share)), -share))  # by share descending, then by index
    return np.sort(order[: top_count(len(share), fraction)])


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


def share_table(targeting: pd.DataFrame, neurons: int) -> pd.DataFrame:
    """D_k(eps) as a neurons x epsilon-label table (columns in increasing epsilon order), from
    the long targeting table (neuron, epsilon, epsilon_label, share); eps = 0 rows are ignored."""
    rows = targeting[targeting["epsilon"] > 0]
    if rows.empty:
        raise ValueError("the targeting table has no rows for a positive epsilon")
    order = rows.groupby("epsilon_label", sort=False)["epsilon"].first().sort_values().index
    table = rows.pivot(index="neuron", columns="epsilon_label", values="share")[list(order)]
    if list(table.index) != list(range(neurons)) or table.isna().any().any():
        raise ValueError(
            f"the targeting table must give a share for every neuron 0..{neurons - 1} at every "
            "positive epsilon"
        )
    return table


def correlate(
    neurons: pd.DataFrame, targeting: pd.DataFrame, top_fraction: float
) -> tuple[dict, pd.DataFrame]:
    """Correlate fragility with the attack share for the mean over E+ and for each eps in E+.

    `neurons`: one row per neuron (neuron, phi, label, and optionally antifragile, share);
    `targeting`: neuron, epsilon, epsilon_label, share (D_k(eps)).
    Returns the summary (statistics of the mean share at the top level, per epsilon under
    `by_epsilon`; NaN where undefined) and a per-neuron table for plotting.
    """
    neurons = neurons.sort_values("neuron").reset_index(drop=True)
    n = len(neurons)
    if list(neurons["neuron"]) != list(range(n)):
        raise ValueError("the neurons table must have exactly one row per neuron 0..N-1")
    shares = share_table(targeting, n)
    mean_share = shares.mean(axis=1).to_numpy()
    if "share" in neurons and not np.allclose(neurons["share"], mean_share, rtol=1e-4, atol=1e-9):
        raise ValueError("the neurons table's share is not the mean over E+ of the targeting table")
    phi = neurons["phi"].to_numpy(dtype=np.float64)
    fragile = np.flatnonzero(neurons["label"].to_numpy() == "fragile")
    summary = {
        "neurons": n,
        "fragile": len(fragile),
        "targeted": top_count(n, top_fraction),
        "top_fraction": top_fraction,
        **compare(phi, mean_share, fragile, top_fraction),
        "by_epsilon": {
            label: compare(phi, shares[label].to_numpy(), fragile, top_fraction)
            for label in shares.columns
        },
    }
    targeted = np.zeros(n, dtype=bool)
    targeted[most_targeted(mean_share, top_fraction)] = True
    columns = ["neuron", "label"] + (["antifragile"] if "antifragile" in neurons else [])
    table = neurons[columns].assign(phi=phi, share=mean_share, targeted=targeted)
    return summary, table


def json_ready(obj):
    """`obj` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
