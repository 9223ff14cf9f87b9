"""Stage times of finished queued experiments, read from their logs (`dvc queue logs NAME`).

Every stage prints `<stage> <run>: <seconds> s on <device>` on stderr; the queue keeps each
experiment's output. This collects those lines into one CSV row per experiment, stage and run, and
prints the median over experiments per stage and run, with the harden-only share (harden and
evaluate, what an experiment of `harden.*` reruns, over the whole pipeline of the run).

    python benchmarks/stage_times.py seed-mnist-1 seed-cifar10-1 --csv benchmarks/stage_times.csv
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

LINE = re.compile(r"^(\w+) (\w+): ([0-9.]+) s on (\S+)$", re.MULTILINE)
HARDEN_ONLY = ("harden", "evaluate")


def times(name: str) -> list[dict]:
    """[{experiment, stage, run, seconds, device}] of one queued experiment's log."""
    log = subprocess.run(["dvc", "queue", "logs", name], capture_output=True, text=True)
    if log.returncode != 0:
        sys.exit(f"error: dvc queue logs {name}: {log.stderr.strip()}")
    return [
        {"experiment": name, "stage": s, "run": r, "seconds": float(t), "device": d}
        for s, r, t, d in LINE.findall(log.stdout)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiments", nargs="+", help="names of finished queued experiments")
    parser.add_argument("--csv", type=Path, help="write every experiment's stage times here")
    args = parser.parse_args(argv)
    table = pd.DataFrame([row for name in args.experiments for row in times(name)])
    if table.empty:
        sys.exit("error: no stage times in those experiments' logs")
    if args.csv:
        table.to_csv(args.csv, index=False)
    medians = table.groupby(["run", "stage"])["seconds"].median().unstack("run")
    print(medians.round(1).to_string())
    for run in medians.columns:
        column = medians[run].dropna()
        share = column.reindex(HARDEN_ONLY).sum() / column.sum()
        n = table.loc[table["run"] == run, "experiment"].nunique()
        print(
            f"{run}: {column.sum():.0f} s per pipeline (median per stage over {n} experiments), "
            f"harden-only share {share:.0%}"
        )
    both = medians.sum(axis=1)
    share = both.reindex(HARDEN_ONLY).sum() / both.sum()
    print(f"all runs: {both.sum():.0f} s, harden-only share {share:.0%}")


if __name__ == "__main__":
    main()
