"""The top share of neurons by a score (method.md sections 3 and 4), ties broken by index.

The label stage takes the ceil(q * N) neurons of largest fragility as fragile, the correlate
stage the ceil(top_fraction * N) of largest attack share as the most targeted: one count and one
ranking serve both. q * N is rounded to 9 decimals before the ceiling, so 0.1 * 30 gives 3, not
ceil(3.0000000000000004) = 4.
"""

from __future__ import annotations

import math

import numpy as np


def top_count(n: int, fraction: float) -> int:
    """ceil(fraction * n), robust to floating-point."""
    return math.ceil(round(fraction * n, 9))


def largest(values, count: int) -> np.ndarray:
    """Indices of the `count` largest values, largest first; equal values: the lower index
    first."""
    values = np.asarray(values, dtype=np.float64)
    return np.lexsort((np.arange(len(values)), -values))[:count]
