"""A sweep's summary as text for a terminal: `fragile-neurons sweep` without `--json`, and
`--table`."""

from __future__ import annotations

from typing import Any

from ..stats.significance import ALPHA
from .experiments import sort_key
from .seedstats import kind


def _fit(value: Any, width: int) -> str:
    """A value in at most `width` characters, with as many significant digits as fit."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    for digits in (4, 3, 2, 1):
        text = f"{value:.{digits}g}"
        if len(text) <= width:
            return text
    return text


def run_seeds(group: dict) -> dict[str, list]:
    """{run: its seeds in the group}: a member counts for the runs it holds (older summaries,
    without the members' `runs`: for every run)."""
    return {
        run: sorted(
            {m["seed"] for m in group["members"] if run in m.get("runs", group["runs"])},
            key=sort_key,
        )
        for run in group["runs"]
    }


def seeds_text(group: dict) -> str:
    """`0, 1, 2` where every run has these seeds, else `mnist 0, 1, 2; cifar10 0, 1`."""
    by_run = {run: ", ".join(map(str, seeds)) for run, seeds in run_seeds(group).items()}
    if len(set(by_run.values())) <= 1:
        return next(iter(by_run.values()), "")
    return "; ".join(f"{run} {seeds}" for run, seeds in by_run.items())


def machines_text(group: dict) -> str:
    """`, 2 CPU types` where the members' provenance records CPU models (runtime), else ``."""
    cpus = (group.get("runtime") or {}).get("cpu") or []
    return f", {len(cpus)} CPU type{'s' * (len(cpus) != 1)}" if cpus else ""


def _members_line(group: dict) -> str:
    note = ", the baseline's params" if group["baseline"] else ""
    return (
        f"{group['label']}: {len(group['members'])} member(s), seeds {seeds_text(group)}"
        f"{machines_text(group)}{note}"
    )


def counts_text(group: dict) -> str:
    """`n = 8 seeds` where every run has as many, else `n = mnist 8, cifar10 4 seeds`."""
    counts = {run: len(seeds) for run, seeds in run_seeds(group).items()}
    if len(set(counts.values())) <= 1:
        return f"n = {next(iter(counts.values()), 0)} seeds"
    return "n = " + ", ".join(f"{run} {n}" for run, n in counts.items()) + " seeds"


def render(summary: dict, width: int = 80) -> str:
    """Per group and run, each key's n and summary by its kind, one line each: mean and 95% CI
    (correlations: on Fisher's z, transformed back), p-values as the seeds below ALPHA and the
    median, counts as the median, flags as the seeds where they hold. Keys and runs are whole
    (a long key widens its run's lines beyond `width`); the members' lines fit `width`."""
    lines = []
    for group in summary["groups"]:
        lines.append(_members_line(group)[:width])
        for run, values in group["runs"].items():
            size = max([36, *(len(key) + 1 for key in values)])
            lines.append(f"  run {run:<{size - 2}}{'n':>3}  {'value':>10}  95% CI or count")
            for key, s in values.items():
                lines.append(f"    {key:<{size}}{s['n']:>3}  {_summary_cells(s)}")
    lines += [f"left out: {line}"[:width] for line in summary["left_out"]]
    return "\n".join(lines) if summary["groups"] else "no finished experiments with metrics found"


def _summary_cells(s: dict) -> str:
    """A key's summary as `value  detail` (render's two right-hand columns)."""
    how = s.get("kind") or kind("", list(s["values"].values()))
    if how == "flag":
        return f"{'':>10}  {s['count']}/{s['n']} seeds true"
    if how == "p":
        return f"{s['median']:>10.4g}  median; p<{ALPHA} in {s['count']}/{s['n']}"
    if how == "count":
        return f"{s['median']:>10.4g}  median"
    ci = f"[{s['low']:.4g}, {s['high']:.4g}]" if s["low"] is not None else "n < 2"
    return f"{s['mean']:>10.4g}  {ci}"


# The experiment table's columns: (heading, key, width); with the first three, 80 columns.
TABLE = [
    ("acc", "train.test_accuracy", 7),
    ("Xref rho", "correlate.reference_excess_spearman_rho", 9),
    ("D rho", "correlate.share_spearman_rho", 7),
    ("FGSM+", "evaluate.fgsm_auc_plus_gain", 8),
    ("PGD+", "evaluate.pgd_auc_plus_gain", 8),
    ("PGD mrg", "evaluate.pgd_margin_over_random", 8),
    ("clean", "evaluate.clean_accuracy_change", 8),
]


def render_table(summary: dict) -> str:
    """One row per member and run, with whole experiment and run names (80 columns where they
    are at most 11 and 7 characters long): a terminal shows every column (`dvc exp show` would
    drop most of them there). Xref rho: the clean phi's Spearman rho with the reference excess
    X^ref (claim 1's primary endpoint), D rho: with the paper's D; FGSM+ and PGD+: the AUC+ gains
    (PGD+: claim 2's primary endpoint); PGD mrg: PGD's margin over random; clean: the
    clean-accuracy change. Each group's heading says how many seeds it rests on per run (and
    how many CPU types, where recorded), and its last rows give per run the mean over them, the
    seed column their count (`n=8`: of the columns' keys, the most seeds any has; a mean of
    fewer seeds is marked `*`, and its count given below)."""
    groups = summary["groups"]
    names = [m["name"] for g in groups for m in g["members"]]
    runs = [run for g in groups for run in g["runs"]]
    name_width = max([11, *map(len, names)]) + 1
    run_width = max([7, *map(len, runs)]) + 1
    head = f"{'experiment':<{name_width}}{'run':<{run_width}}{'seed':>5}"
    head += "".join(f"{h:>{w}}" for h, _, w in TABLE)
    lines = []
    for group in groups:
        title = f"{group['label']}: {counts_text(group)}{machines_text(group)}"
        lines += [title if len(title) <= 80 else group["label"][:80], head, "-" * len(head)]
        for member in group["members"]:
            seed = str(member["seed"])
            for run, values in group["runs"].items():
                if run not in member.get("runs", [run]) or not any(
                    seed in s["values"] for s in values.values()
                ):
                    continue
                cells = "".join(
                    f" {_fit(values[key]['values'][seed], w - 1):>{w - 1}}"
                    if seed in values.get(key, {}).get("values", {})
                    else f"{'-':>{w}}"
                    for _, key, w in TABLE
                )
                name = f"{member['name']:<{name_width}}{run:<{run_width}}"
                lines.append(f"{name}{seed[:5]:>5}{cells}")
        lines.append("-" * len(head))
        fewer = []
        for run, values in group["runs"].items():  # the mean over the seeds, and their count
            found = [(h, values[key], w) for h, key, w in TABLE if key in values]
            n = max((s["n"] for _, s, _ in found), default=0)
            cells = {h: f"{'-':>{w}}" for h, _, w in TABLE}
            for h, s, w in found:
                if s.get("mean") is None:
                    continue
                mark = "*" if s["n"] < n else ""  # fewer seeds than the row's n: said below
                cells[h] = f" {_fit(s['mean'], w - 1 - len(mark)) + mark:>{w - 1}}"
                fewer += [f"* {run} {h}: n={s['n']}"] if mark else []
            name = f"{'mean':<{name_width}}{run:<{run_width}}{f'n={n}'[:5]:>5}"
            lines.append(name + "".join(cells[h] for h, _, _ in TABLE))
        lines += [", ".join(fewer)[:80]] if fewer else []
    return "\n".join(lines)
