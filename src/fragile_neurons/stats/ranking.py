"""The top share of neurons by a score (method.md sections 3 and 4), ties broken by a second
score, then by index.

The label stage takes the ceil(q * N) neurons of largest fragility as fragile, the correlate
stage the ceil(top_fraction * N) of largest attack share as the most targeted: one count and one
ranking serve both. q * N is rounded to 9 decimals before the ceiling, so 0.1 * 30 gives 3, not
ceil(3.0000000000000004) = 4. Equal values break by `tiebreak` where one is given (the label
stage: phi's matching loss impact), the larger first, and only values equal in both by index,
the lower first. `index_decides` tells whether a cut-off of a ranking is one that only the index
decides.
"""

from __future__ import annotations

import math

import numpy as np


def top_count(n: int, fraction: float) -> int:
    """ceil(fraction * n), robust to floating-point."""
    return math.ceil(round(fraction * n, 9))


def ranked(values, tiebreak=None) -> np.ndarray:
    """Every index, largest value first; equal values: the larger `tiebreak` first (None: no
    tiebreak), then the lower index."""
    values = np.asarray(values, dtype=np.float64)
    keys = [np.arange(len(values))]
    if tiebreak is not None:
        keys.append(-np.asarray(tiebreak, dtype=np.float64))
    return np.lexsort((*keys, -values))


def largest(values, count: int, tiebreak=None) -> np.ndarray:
    """Indices of the `count` largest values, largest first; equal values: the larger
    `tiebreak` first (None: no tiebreak), then the lower index."""
    return ranked(values, tiebreak)[:count]


def index_decides(order, count: int, values, tiebreak=None) -> bool:
    """Whether the cut-off after the first `count` indices of `order` (a ranking of `values`)
    falls between two entries equal in value and in `tiebreak`, so that only their indices
    decide which one is in. False when no entry is left out."""
    if not 0 < count < len(order):
        return False
    inside, outside = order[count - 1], order[count]
    keys = [np.asarray(values, dtype=np.float64)]
    if tiebreak is not None:
        keys.append(np.asarray(tiebreak, dtype=np.float64))
    return all(key[inside] == key[outside] for key in keys)
