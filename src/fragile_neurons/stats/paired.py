"""Paired statistics of two networks on the same images (method.md section 6): the paired
bootstrap interval of a difference in a curve measure, and the margin over random draws with its
permutation p-value.

The bootstrap: `BOOTSTRAP` resamples of the images with replacement, drawn from a generator seeded
with `seed`, the same resample for both networks and every epsilon; the 95% percentile interval.
The permutation p-value of "a network beats the draws": (1 + #{draws >= it}) / (1 + #draws).
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from .measures import Curve, image_table, measures_of, number

BOOTSTRAP = 1000  # paired bootstrap resamples of the test images (method.md section 6)
INTERVAL = (2.5, 97.5)  # percentiles of the bootstrap: a 95% interval


def resamples(n: int, draws: int, seed: int) -> torch.Tensor:
    """`draws` bootstrap resamples of n images as weights (draws x n, float64): row r holds how
    often resample r draws each image (n draws with replacement, from a generator seeded with
    `seed`), over n, so that `weights @ values` is each resample's mean."""
    index = torch.randint(n, (draws, n), generator=torch.Generator().manual_seed(seed))
    counts = torch.zeros(draws, n, dtype=torch.float64)
    counts.scatter_add_(1, index, torch.ones(draws, n, dtype=torch.float64))
    return counts / n


def paired_gain(a: Curve, b: Curve, epsilons, weights: torch.Tensor) -> dict[str, dict]:
    """a minus b for each measure (clean accuracy, AUC, AUC+, relative AUC) on the same images,
    with the percentile 95% interval over the bootstrap resamples `weights` (`resamples`), each
    applied to both curves and every epsilon: {measure: {value, ci_low, ci_high}}. A resample
    where either curve has no correct clean image gives no relative AUC and is left out of its
    interval; None where nothing is left."""
    if len(a) != len(b) or weights.shape[1] != len(a):
        raise ValueError(f"curves of {len(a)} and {len(b)} images, resamples of {weights.shape[1]}")
    tables = [image_table(c, epsilons) for c in (a, b)]
    point = [measures_of(t.mean(axis=0)) for t in tables]
    boot = [measures_of(weights.numpy() @ t) for t in tables]
    out = {}
    for name in point[0]:
        value = number(point[0][name] - point[1][name])
        spread = boot[0][name] - boot[1][name]
        spread = spread[np.isfinite(spread)]
        low, high = np.percentile(spread, INTERVAL) if len(spread) else (None, None)
        out[name] = {
            "value": value,
            "ci_low": None if low is None else float(low),
            "ci_high": None if high is None else float(high),
        }
    return out


def permutation_p(hardened: float, draws: list[float]) -> float:
    """The permutation p-value of "hardening beats random": (1 + #{draws >= hardened}) /
    (1 + #draws); its smallest value is 1 / (1 + #draws)."""
    return (1 + sum(d >= hardened for d in draws)) / (1 + len(draws))


def std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None  # undefined for one draw


def margin_over_random(hardened: float | None, draws: list[float | None], images: int) -> dict:
    """Hardened minus the mean of the draws (`mean`), the draws' sample std, how many draws the
    hardened value beats, and the permutation p-value of "hardening beats random"; on `images`
    images. None where the hardened value or a draw is undefined."""
    out = {"mean": None, "std": None, "p_value": None, "hardened_beats": None}
    if hardened is not None and None not in draws:
        out = {
            "mean": hardened - statistics.mean(draws),
            "std": std(draws),
            "p_value": permutation_p(hardened, draws),
            "hardened_beats": sum(hardened > d for d in draws),
        }
    return {**out, "draws": len(draws), "images": images}
