"""The significance level and the one test of paired binary outcomes the pipeline uses.

`ALPHA` is the one significance level: a labelled neuron's McNemar p-value, the masking check's
flag, and the seeds counted in a sweep's p-value summaries all compare with it. `mcnemar` is the
exact McNemar test of two classifiers on the same images: of the `b + c` discordant images, `b`
went one way and `c` the other; under the null each way has probability 1/2.
"""

from __future__ import annotations

from scipy.stats import binomtest

ALPHA = 0.05


def mcnemar(b: int, c: int, alternative: str = "two-sided") -> float:
    """The exact McNemar p-value of `b` discordant images one way against `c` the other:
    binomtest(b, b + c, 1/2) with `alternative` ("two-sided", or "greater": more than chance
    the `b` way); 1 without discordant images."""
    b, c = int(b), int(c)
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative=alternative).pvalue)
