"""Summarise a set of DVC experiments across seeds: one seed proves nothing.

    python -m fragile_neurons.sweep                 # experiments derived from HEAD
    python -m fragile_neurons.sweep --rev main -n 3 # from the last 3 commits of main
    python -m fragile_neurons.sweep --json out.json # also write the summary as JSON

For every run found in the experiments' metrics, it reports the headline numbers (test accuracy,
the Spearman correlation of fragility with the attack share and its p-value, the hardening gain
in AUC under FGSM and PGD and its margin over the random control) as the mean over experiments
with a two-sided 95% confidence interval from Student's t distribution, next to each seed's value.
Experiments are listed by DVC (`dvc.api.exp_show`); their metrics are read from the experiment
commits with git. An experiment commit also holds the metrics of runs it did not reproduce (an
experiment of `evaluate@mnist` keeps the baseline's cifar10 files), so a run counts only when
every one of its stages in the commit's dvc.lock ran with the experiment's params; otherwise it
is left out rather than counted again with another seed's values.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import defaultdict

import dvc.api
from scipy import stats

from .config import parse_yaml

# (label, metrics file stem, key path inside the file)
HEADLINE = [
    ("test_accuracy", "train", ("test_accuracy",)),
    ("spearman_rho", "correlate", ("spearman_rho",)),
    ("spearman_p", "correlate", ("spearman_p",)),
    ("fgsm_auc_gain", "evaluate", ("headline", "fgsm_auc_gain")),
    ("fgsm_margin_over_random", "evaluate", ("headline", "fgsm_margin_over_random")),
    ("pgd_auc_gain", "evaluate", ("headline", "pgd_auc_gain")),
    ("pgd_margin_over_random", "evaluate", ("headline", "pgd_margin_over_random")),
]


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided t confidence interval (NaN bounds for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sem = stats.sem(values)
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def _git_show(rev: str, path: str) -> str | None:
    result = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def _dig(obj, keys):
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


_MISSING = object()


def _lookup(params: dict, dotted: str):
    obj = params
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def reproduced(lock: dict, params: dict, run: str) -> bool:
    """Whether every stage of `run` (`<stage>@<run>` in dvc.lock) ran with `params`: a stage
    that an experiment did not rerun keeps the params of the run that made its outputs."""
    stages = {
        name: entry
        for name, entry in (lock.get("stages") or {}).items()
        if name.endswith(f"@{run}")
    }
    return bool(stages) and all(
        _lookup(params, key) == value
        for entry in stages.values()
        for key, value in (entry.get("params") or {}).get("params.yaml", {}).items()
    )


def collect(rev: str | None = None, num: int = 1) -> list[dict]:
    """One record per successful experiment: name, rev, seed, {run: {label: value}}."""
    records = []
    for row in dvc.api.exp_show(revs=rev, num=num):
        if row.get("typ") == "baseline" or row.get("State") not in (None, "Success"):
            continue
        sha = row["rev"]
        params = parse_yaml(_git_show(sha, "params.yaml") or "{}") or {}  # as DVC reads it
        lock = parse_yaml(_git_show(sha, "dvc.lock") or "{}", "dvc.lock") or {}
        runs = {}
        for run in params.get("runs", {}):
            if not reproduced(lock, params, run):
                continue
            values = {}
            for label, stem, keys in HEADLINE:
                text = _git_show(sha, f"metrics/{run}/{stem}.json")
                value = _dig(json.loads(text), keys) if text else None
                if isinstance(value, int | float):
                    values[label] = float(value)
            if values:
                runs[run] = values
        records.append(
            {
                "experiment": row.get("Experiment") or sha,
                "rev": sha,
                "seed": params.get("seed"),
                "runs": runs,
            }
        )
    return records


def summarise(records: list[dict]) -> dict:
    """{run: {label: {n, mean, ci95_low, ci95_high, values: {seed: value}}}}."""
    table: dict = defaultdict(dict)
    runs = sorted({run for r in records for run in r["runs"]})
    for run in runs:
        for label, _, _ in HEADLINE:
            pairs = [
                (r["seed"], r["runs"][run][label])
                for r in records
                if label in r["runs"].get(run, {})
            ]
            if not pairs:
                continue
            mean, low, high = (None if math.isnan(v) else v for v in mean_ci([v for _, v in pairs]))
            table[run][label] = {
                "n": len(pairs),
                "mean": mean,
                "ci95_low": low,
                "ci95_high": high,
                "values": {str(seed): value for seed, value in pairs},
            }
    return dict(table)


def render(summary: dict) -> str:
    lines = []
    for run, metrics in summary.items():
        lines.append(f"run {run}")
        lines.append(f"  {'metric':<26}{'n':>3}  {'mean':>10}  {'95% CI':>23}  per seed")
        for label, s in metrics.items():
            ci = (
                "n < 2" if s["ci95_low"] is None else f"[{s['ci95_low']:.4g}, {s['ci95_high']:.4g}]"
            )
            seeds = ", ".join(f"{k}: {v:.4g}" for k, v in s["values"].items())
            lines.append(f"  {label:<26}{s['n']:>3}  {s['mean']:>10.4g}  {ci:>23}  {seeds}")
    return "\n".join(lines) if lines else "no finished experiments with metrics found"


# The experiment table's columns: (heading, headline label, width), 80 columns in all.
TABLE = [
    ("acc", "test_accuracy", 7),
    ("rho", "spearman_rho", 7),
    ("p", "spearman_p", 9),
    ("FGSM gain", "fgsm_auc_gain", 10),
    ("PGD gain", "pgd_auc_gain", 9),
    ("PGD margin", "pgd_margin_over_random", 11),
]


def render_table(records: list[dict]) -> str:
    """One row per experiment and run, in at most 80 columns: a terminal shows every column
    (`dvc exp show` would drop most of them there)."""
    head = f"{'experiment':<14}{'run':<8}{'seed':>5}" + "".join(f"{h:>{w}}" for h, _, w in TABLE)
    lines = [head, "-" * len(head)]
    for record in records:
        for run, values in sorted(record["runs"].items()):
            cells = "".join(
                f" {values[label]:>{w - 1}.3g}" if label in values else f"{'-':>{w}}"
                for _, label, w in TABLE
            )
            name = str(record["experiment"])[:13]
            lines.append(f"{name:<14}{run[:7]:<8}{record['seed']!s:>5}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default=None, help="baseline commit (default HEAD)")
    parser.add_argument("-n", "--num", type=int, default=1, help="commits back from --rev")
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    parser.add_argument(
        "--table", action="store_true", help="also each experiment's values, in 80 columns"
    )
    args = parser.parse_args(argv)
    records = collect(args.rev, args.num)
    summary = summarise(records)
    if args.table and records:
        print(render_table(records) + "\n")
    print(render(summary))
    if args.json:
        from .io import write_json

        write_json(args.json, summary)
    sys.exit(0 if summary else 1)


if __name__ == "__main__":
    main()
