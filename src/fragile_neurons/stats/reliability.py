"""Split-half reliability (method.md sections 2 and 3), one definition for every score measured
on the two halves of the scan set S (phi, psi, X^ref), and the ceiling it puts on a correlation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr


def split_half(first, second) -> dict[str, float]:
    """The split-half reliability of a score: r, the Spearman rho across neurons of the score on
    the scan set's first half against its second half, and the reliability of the score on all
    of it by Spearman-Brown, 2r / (1 + r), over the `neurons` where the score is finite on both
    halves (a neuron whose X^ref is undefined on a half is left out, as the correlations leave
    it out). NaN where r is undefined (a score constant on a half, or fewer than 2 neurons)."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    keep = np.isfinite(first) & np.isfinite(second)
    first, second = first[keep], second[keep]
    r = math.nan
    if len(first) >= 2 and np.ptp(first) > 0 and np.ptp(second) > 0:
        r = float(spearmanr(first, second).statistic)
    brown = 2 * r / (1 + r) if r > -1 else math.nan
    return {"split_half_rho": r, "spearman_brown": brown, "neurons": int(keep.sum())}


def ceiling(*reliabilities: float) -> float:
    """How large a correlation between scores of these reliabilities can be: the square root of
    their product (method.md section 2: sqrt(reliability(phi) * reliability(X^ref))). A negative
    reliability counts as 0 (the halves agree no better than chance); NaN if any is NaN."""
    if any(not math.isfinite(r) for r in reliabilities):
        return math.nan
    return math.sqrt(math.prod(min(max(r, 0.0), 1.0) for r in reliabilities))
