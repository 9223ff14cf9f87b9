"""How a sweep summarises a number over seeds (method.md section 7).

Numbers. For each run: every number or boolean of its stages' headlines (headline.py: the DVC
metrics, metrics/<run>/<stage>/*.json), named `<stage>.<key>` (`evaluate.fgsm_auc_plus_gain`,
`train.test_accuracy`). Per group, run and key, each seed's value
and a summary by the key's `kind` (method.md section 7):
- `correlation` (a key ending in `_rho`, `_r` or `_tau`): averaged on Fisher's z scale, the
  Student-t 95% interval of the mean z transformed back;
- `reliability` (a key ending in `_reliability`: a Spearman-Brown 2r / (1 + r) of a split-half
  correlation r, at most 1): the split-half r recovered (R / (2 - R)) and averaged on Fisher's
  z, mean and interval taken back through Spearman-Brown, so that neither exceeds 1;
- `estimate` (any other number: a gain, a margin, an accuracy): the mean and its Student-t 95%
  interval;
- `p` (a key ending in `_p` or `p_value`): never averaged: the count of seeds with p < ALPHA and
  the median;
- `count` (integers, e.g. `label.significant`): the median; `flag` (booleans): the count of seeds
  where it holds (`mean` is that share).
Correlations, reliabilities and estimates also get `sd` (of the per-seed values, on the z scale
for correlations and reliabilities) and `seeds_for_power`: the seeds the two-sided one-sample
t-test at 5% needs to detect the observed mean with 80% power, exactly (`stats.power`: noncentral
t). No interval for
n < 2. The JSON (`--json`) has sorted keys and 6 significant digits, so a rerun with the same
members rewrites the same bytes; `--from FILE --json FILE` re-summarises a committed summary's
per-seed values by these rules.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..stats.power import seeds_for_power
from ..stats.significance import ALPHA

CONFIDENCE = 0.95
KINDS = ("correlation", "reliability", "estimate", "p", "count", "flag")


def mean_ci(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and the two-sided t confidence interval (NaN bounds for fewer than two values)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sem = stats.sem(values)
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def kind(key: str, values: list) -> str:
    """How a key's per-seed values are summarised (module docstring; method.md section 7)."""
    if values and all(isinstance(v, bool) for v in values):
        return "flag"
    name = key.rsplit(".", 1)[-1]
    if name.endswith(("_p", "p_value")):
        return "p"
    if name.endswith(("_rho", "_r", "_tau")) or name == "ceiling":  # a ceiling bounds a rho
        return "correlation"
    if name.endswith("_reliability"):
        return "reliability"
    if values and all(isinstance(v, int) for v in values):
        return "count"
    return "estimate"


def _median(numbers: list[float]) -> float:
    ordered = sorted(numbers)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


FISHER_CLIP = 1 - 1e-12  # a correlation of exactly +-1 has an infinite z: clipped just inside


def summarise_values(pairs: list[tuple[Any, float | bool]], key: str = "") -> dict:
    """The summary of one key's (seed, value) pairs by its `kind`: {kind, n, mean, low, high,
    sd, seeds_for_power, median, count, values: {seed: value}}; what a kind has not is None."""
    values = [v for _, v in pairs]
    how = kind(key, values)
    numbers = [float(v) for v in values]
    n = len(numbers)
    out = dict.fromkeys(("mean", "low", "high", "sd", "seeds_for_power", "median", "count"))
    out |= {"kind": how, "n": n, "values": {str(seed): value for seed, value in pairs}}
    if how == "flag":
        out |= {"mean": sum(numbers) / n, "count": int(sum(numbers))}
    elif how == "p":
        out |= {"median": _median(numbers), "count": sum(p < ALPHA for p in numbers)}
    elif how == "count":
        out |= {"median": _median(numbers)}
    else:
        scale = numbers
        if how == "reliability":  # the split-half correlations behind the Spearman-Brown values
            scale = [v / (2 - v) for v in numbers]
        if how in ("correlation", "reliability"):
            scale = [math.atanh(max(-FISHER_CLIP, min(FISHER_CLIP, v))) for v in scale]
        mean, low, high = mean_ci(scale)
        sd = statistics.stdev(scale) if n > 1 else math.nan
        if how in ("correlation", "reliability"):
            mean, low, high = (math.tanh(v) for v in (mean, low, high))
        if how == "reliability":
            mean, low, high = (2 * v / (1 + v) for v in (mean, low, high))
        out |= {"mean": mean, "sd": None if math.isnan(sd) else sd}
        if not math.isnan(low):
            out |= {"low": low, "high": high}
        out["seeds_for_power"] = seeds_for_power(sum(scale) / n, sd)
    return out


def resummarise_run(values: dict[str, dict], seeds: set[str] | None = None) -> dict[str, dict]:
    """A run's {key: summary} rebuilt from its per-seed values by `summarise_values`, on `seeds`
    only when given (a key without any of them is left out)."""
    kept = {
        key: [(seed, v) for seed, v in stats["values"].items() if seeds is None or seed in seeds]
        for key, stats in values.items()
    }
    return {key: summarise_values(pairs, key) for key, pairs in kept.items() if pairs}


def resummarise(summary: dict) -> dict:
    """`summary` (a --json file) with every key's summary rebuilt from its per-seed values by
    `summarise_values`: a summary written by an older version reads by today's rules."""
    groups = [
        group | {"runs": {run: resummarise_run(values) for run, values in group["runs"].items()}}
        for group in summary.get("groups", [])
    ]
    return summary | {"groups": groups}
