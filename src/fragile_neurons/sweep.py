"""Summarise the DVC experiments of a sweep: every headline number, mean and 95% CI over seeds.

    fragile-neurons sweep                          # experiments derived from HEAD, grouped
    fragile-neurons sweep --seeds --json metrics/sweeps/seeds.json
    fragile-neurons sweep --by harden.compress --json metrics/sweeps/compress.json
    fragile-neurons sweep --from metrics/sweeps/seeds.json --table   # a committed summary

Members. The baseline commit (`--rev`, default HEAD; its params.yaml and its committed metrics)
and every finished experiment DVC lists for it (`dvc.api.exp_show`), read from their commits with
git. A stage's numbers count in a member only where that commit's dvc.lock says the stage ran with
the member's params on inputs that its fresh upstream stages made (fresh_stages): an experiment of
`evaluate@mnist` also carries the baseline's cifar10 files, which are not counted again under
another seed, and one of `label@mnist` counts its mnist stages up to label, not the baseline's
correlate and evaluate files it carries. So a 5-seed sweep is the baseline (seed 0) and four
queued seeds.

Groups. Each run of a member is placed by the params that can change its numbers: the global
ones and its own `runs.<run>.*`; another run's params count as the baseline's, so an experiment
that changes or removes the cifar10 run (`-S '~runs.cifar10' -S runs.mnist.arch=resnet18`) is,
for its mnist run, an experiment of mnist alone. Runs are grouped by the params that differ among
them (`--by` names them instead; a run that differs from the baseline in another param is then
left out; `--seeds` keeps only the runs with the baseline's params), a group being one setting
of those params, labelled by those that differ from the baseline's (e.g.
`harden.compress=0.25`; all of them for the baseline's setting). The params in NUISANCE change
only random draws and float rounding, never what is computed, so they vary within a group: the
seed, and the thread count and device (another thread count or CPU type changes results like
another seed). Within a group, each seed of a run counts once (the baseline first, then by
experiment name).

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
for correlations and reliabilities) and `seeds_for_power`: the seeds a one-sample t-test at 5%
needs to detect the observed mean with 80% power, about (2.8 sd / |mean|)^2. No interval for
n < 2. The JSON (`--json`) has sorted keys and 6 significant digits, so a rerun with the same
members rewrites the same bytes; `--from FILE --json FILE` re-summarises a committed summary's
per-seed values by these rules.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .config import parse_yaml
from .headline import read_files

# Params whose values vary within a group: they change random draws and float rounding only.
NUISANCE = ("seed", "threads", "device", "deterministic")
CONFIDENCE = 0.95
ALPHA = 0.05  # a p-value below it counts as significant in `p` summaries
POWER_Z = 2.8  # z_{0.975} + z_{0.80}: a mean of 2.8 / sqrt(n) sd is detected with 80% power
DIGITS = 6  # significant digits in the JSON
KINDS = ("correlation", "reliability", "estimate", "p", "count", "flag")


class SummaryError(ValueError):
    """A file that cannot be read, is not JSON, or is not a sweep summary: one line naming it."""


def load_json(path: str | Path) -> Any:
    """A JSON file, or SummaryError naming it."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise SummaryError(f"{path}: cannot be read ({reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SummaryError(f"{path}: not valid JSON ({err})") from None


# What a summary (summarise, to_json) holds: its fields, each group's, each member's, each stat's.
SHAPE = {"rev": str, "by": list, "pooled": dict, "groups": list, "left_out": list}
GROUP = {"label": str, "params": dict, "baseline": bool, "members": list, "runs": dict}
STATS = {"n": int, "values": dict}


def load_summary(path: str | Path) -> dict:
    """A summary written by `--json`, or SummaryError naming the file and what is wrong."""
    summary = load_json(path)

    def need(obj: Any, shape: dict, where: str) -> None:
        if not isinstance(obj, dict):
            raise SummaryError(f"{path}: {where} is not an object; expected a sweep summary "
                               "(fragile-neurons sweep --json)")  # fmt: skip
        for key, kind in shape.items():
            if not isinstance(obj.get(key), kind):
                raise SummaryError(
                    f"{path}: {where}{key!r} is {obj.get(key, 'missing')!r:.40}; expected a "
                    f"{kind.__name__} (a sweep summary: fragile-neurons sweep --json)"
                )

    need(summary, SHAPE, "")
    for i, group in enumerate(summary["groups"]):
        need(group, GROUP, f"groups[{i}].")
        for m, member in enumerate(group["members"]):
            need(member, {"name": str, "rev": str}, f"groups[{i}].members[{m}].")
        for run, values in group["runs"].items():
            if not isinstance(values, dict):
                raise SummaryError(f"{path}: groups[{i}].runs[{run!r}] is not an object")
            for key, stats in values.items():
                need(stats, STATS, f"groups[{i}].runs[{run!r}][{key!r}].")
    return summary


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


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """{'harden': {'compress': 0.5}} -> {'harden.compress': 0.5}; lists are values."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


_MISSING = object()


def _lookup(params: dict, dotted: str):
    obj = params
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def fresh_stages(lock: dict, params: dict) -> set[str]:
    """The stages of `lock` (a commit's dvc.lock) that ran with `params` on what that commit's
    other fresh stages made: each of its params equals `params`' value, and each dependency that
    another stage writes is fresh (its md5 that stage's output's, where the dependency is that
    output itself, not a file inside it). A stage that an experiment did not rerun keeps the
    params and inputs of the run that made its outputs, so it is not fresh where they differ."""
    stages = lock.get("stages") or {}
    made = {
        out["path"]: (name, out.get("md5"))
        for name, entry in stages.items()
        for out in entry.get("outs") or []
    }
    known: dict[str, bool] = {}

    def producer(path: str) -> tuple[str, str | None] | None:
        if path in made:
            return made[path]
        inside = [p for p in made if path.startswith(p.rstrip("/") + "/")]
        return (made[max(inside, key=len)][0], None) if inside else None

    def made_fresh(dep: dict) -> bool:  # a file of no stage (raw data, code) counts as fresh
        source = producer(dep["path"])
        if source is None:
            return True
        stage, md5 = source
        return (md5 is None or md5 == dep.get("md5")) and fresh(stage)

    def fresh(name: str) -> bool:
        if name not in known:
            known[name] = False  # a cycle is never fresh
            entry = stages[name]
            known[name] = all(
                _lookup(params, key) == value
                for key, value in (entry.get("params") or {}).get("params.yaml", {}).items()
            ) and all(made_fresh(dep) for dep in entry.get("deps") or [])
        return known[name]

    return {name for name in stages if fresh(name)}


# --- reading the experiments with git and DVC ------------------------------------------------


def _git(*args: str) -> str | None:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def _git_show(rev: str, path: str) -> str | None:
    return _git("show", f"{rev}:{path}")


def _short(rev: str) -> str:
    return (_git("rev-parse", "--short=7", rev) or rev).strip()


def read_commit(rev: str, name: str, baseline: bool) -> dict:
    """One member: its name, short rev, params (flattened) and, for each run with a stage that
    ran with its params (fresh_stages), the headline numbers of those stages."""
    params = parse_yaml(_git_show(rev, "params.yaml") or "{}") or {}  # as DVC reads it
    lock = parse_yaml(_git_show(rev, "dvc.lock") or "{}", "dvc.lock") or {}
    fresh = fresh_stages(lock, params)
    made = [  # the outputs of the fresh stages: their headline files count
        out["path"].rstrip("/")
        for name, entry in (lock.get("stages") or {}).items()
        if name in fresh
        for out in entry.get("outs") or []
    ]
    runs = {}
    for run in params.get("runs") or {}:
        folder = f"metrics/{run}/"
        listing = _git("ls-tree", "-r", "--name-only", rev, folder) or ""
        files = {}
        for path in listing.split():
            counted = any(path == out or path.startswith(f"{out}/") for out in made)
            if counted and path.endswith(".json") and path.count("/") == 3:
                # metrics/<run>/<stage>/<file>, written by a stage that ran with these params
                text = _git_show(rev, path)
                files[path[len(folder) :]] = json.loads(text) if text else {}
        values = read_files(files)
        if values:
            runs[run] = values
    return {
        "name": name,
        "rev": _short(rev),
        "baseline": baseline,
        "seed": params.get("seed"),
        "params": flatten(params),
        "runs": runs,
    }


def collect(rev: str | None = None, num: int = 1) -> tuple[list[dict], list[str]]:
    """The members (the baseline commits and their finished experiments, see read_commit), and
    a line for each experiment left out because it has not finished."""
    import dvc.api

    members, left_out = [], []
    for row in dvc.api.exp_show(revs=rev, num=num):
        if row.get("rev") == "workspace":
            continue
        baseline = row.get("typ") == "baseline"
        name = "baseline" if baseline else (row.get("Experiment") or row["rev"])
        state = row.get("State")
        if state not in (None, "Success"):
            left_out.append(f"{name} ({row['rev']}): {state}")
            continue
        members.append(read_commit(row["rev"], name, baseline))
    return members, left_out


# --- grouping and summarising ----------------------------------------------------------------


def _sort_key(value: Any) -> tuple:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value, sort_keys=True))


def _label(params: dict, reference: dict) -> str:
    """`key=value` of the params that differ from the reference's (all of them where none do)."""
    changed = {k: v for k, v in params.items() if reference.get(k, _MISSING) != v}
    return ", ".join(f"{k}={v}" for k, v in (changed or params).items()) or "all"


def per_run(members: list[dict], reference: dict) -> list[dict]:
    """One entry per member and run with a fresh stage, holding that run alone, its params
    those that can change the run's numbers: the member's global params and its
    `runs.<run>.*`, with every other run's taken from the reference (the baseline's). Members
    without a run stay whole."""
    entries = []
    for m in members:
        if not m["runs"]:
            entries.append(m)
        for run, values in m["runs"].items():
            own = f"runs.{run}."
            params = {
                k: v
                for source, keep in ((m["params"], True), (reference, False))
                for k, v in source.items()
                if (not k.startswith("runs.") or k.startswith(own)) is keep
            }
            entries.append(m | {"params": params, "runs": {run: values}})
    return entries


def _differing(members: list[dict]) -> list[str]:
    keys = sorted({k for m in members for k in m["params"]} - set(NUISANCE))
    return [
        k
        for k in keys
        if len({json.dumps(m["params"].get(k), sort_keys=True) for m in members}) > 1
    ]


def kind(key: str, values: list) -> str:
    """How a key's per-seed values are summarised (module docstring; method.md section 7)."""
    if values and all(isinstance(v, bool) for v in values):
        return "flag"
    name = key.rsplit(".", 1)[-1]
    if name.endswith(("_p", "p_value")):
        return "p"
    if name.endswith(("_rho", "_r", "_tau")):
        return "correlation"
    if name.endswith("_reliability"):
        return "reliability"
    if values and all(isinstance(v, int) for v in values):
        return "count"
    return "estimate"


def seeds_for_power(mean: float, sd: float) -> int | None:
    """The seeds a one-sample t-test at 5% needs to detect `mean` with 80% power when the
    per-seed values spread by `sd`: (POWER_Z * sd / |mean|)^2, at least 2; None for a mean of 0
    or an unknown spread."""
    if not math.isfinite(sd) or not math.isfinite(mean) or mean == 0:
        return None
    return max(2, math.ceil((POWER_Z * sd / abs(mean)) ** 2))


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


def _select(members: list[dict], reference: dict, by: list[str] | None) -> tuple:
    """The members that count, the grouping params, and a line for each member left out."""
    left, kept = [], []
    for m in members:
        if m["runs"]:
            kept.append(m)
        else:
            left.append(f"{m['name']} ({m['rev']}): no stage ran with its own params")
    if by is None:
        return kept, _differing(kept), left
    ignored = set(by) | set(NUISANCE)
    selected = []
    for m in kept:
        other = sorted(
            k
            for k in (set(m["params"]) | set(reference)) - ignored
            if m["params"].get(k, _MISSING) != reference.get(k, _MISSING)
        )
        if other:
            left.append(f"{m['name']} ({m['rev']}): params differ in {', '.join(other)}")
        else:
            selected.append(m)
    return selected, list(by), left


def _group(entries: list[dict], by: list[str], reference: dict) -> tuple[list[dict], list[str]]:
    """[{params, members}] sorted by the params' values, each seed of a run once per group (the
    baseline's first, then the one with the most numbers, then by experiment name), the entries
    of one member (per_run) joined again; and a line for each duplicate left out."""
    groups: dict[str, dict] = {}
    left = []
    order = sorted(
        entries,
        key=lambda m: (
            not m["baseline"],
            _sort_key(m["seed"]),
            -sum(map(len, m["runs"].values())),  # of one seed, the member with the most numbers
            m["name"],
        ),
    )
    for m in order:
        params = {k: m["params"].get(k) for k in by}
        group = groups.setdefault(json.dumps(params, sort_keys=True), {"params": params})
        seen = group.setdefault("members", [])
        (run,) = m["runs"]
        same = next((o for o in seen if o["seed"] == m["seed"] and run in o["runs"]), None)
        mine = next((o for o in seen if (o["name"], o["rev"]) == (m["name"], m["rev"])), None)
        if same:
            left.append(
                f"{m['name']} ({m['rev']}): seed {m['seed']} already in "
                f"{_label(params, reference)} ({same['name']})"
            )
        elif mine:
            mine["runs"] = mine["runs"] | m["runs"]
        else:
            seen.append(m)
    ordered = sorted(groups.values(), key=lambda g: [_sort_key(g["params"][k]) for k in by])
    return ordered, left


def _pooled(members: list[dict]) -> dict[str, list]:
    """{param: its distinct values} of the NUISANCE params that vary among `members`."""
    pooled = {}
    for key in NUISANCE:
        distinct = {json.dumps(m["params"].get(key)): m["params"].get(key) for m in members}
        if len(distinct) > 1:
            pooled[key] = sorted(distinct.values(), key=_sort_key)
    return pooled


def _summarise_group(group: dict, reference: dict) -> dict:
    members = group["members"]
    runs = {}
    for run in sorted({r for m in members for r in m["runs"]}):
        found = [m for m in members if run in m["runs"]]
        keys = sorted({k for m in found for k in m["runs"][run]})
        runs[run] = {
            key: summarise_values(
                [(m["seed"], m["runs"][run][key]) for m in found if key in m["runs"][run]], key
            )
            for key in keys
        }
    return {
        "label": _label(group["params"], reference),
        "params": group["params"],
        "baseline": all(v == reference.get(k) for k, v in group["params"].items()),
        "members": [
            {"name": m["name"], "rev": m["rev"], "seed": m["seed"], "runs": sorted(m["runs"])}
            for m in members
        ],
        "pooled": _pooled(members),
        "runs": runs,
    }


def summarise(
    members: list[dict],
    reference: dict,
    by: list[str] | None = None,
    left_out: list[str] = (),
    rev: str = "",
) -> dict:
    """The summary (written by --json) of `members` (collect), grouped by the params `by`
    (None: every param that differs among the members, NUISANCE aside; []: none, a seed sweep of
    the baseline's params). `reference` is the baseline's flattened params: with `by` given, a
    run (per_run) that differs from it outside `by` and NUISANCE is left out."""
    selected, by, left = _select(per_run(members, reference), reference, by)
    groups, duplicates = _group(selected, by, reference)
    return {
        "rev": rev,
        "by": by,
        "pooled": _pooled([m for group in groups for m in group["members"]]),
        "confidence": CONFIDENCE,
        "groups": [_summarise_group(group, reference) for group in groups],
        "left_out": sorted({*left_out, *left, *duplicates}),
    }


def rounded(obj: Any, digits: int = DIGITS) -> Any:
    """Every float of `obj` to `digits` significant digits (JSON-ready, stable diffs)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


def to_json(summary: dict) -> str:
    return json.dumps(rounded(summary), indent=1, sort_keys=True) + "\n"


# --- text for a terminal (80 columns) --------------------------------------------------------


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
            key=_sort_key,
        )
        for run in group["runs"]
    }


def seeds_text(group: dict) -> str:
    """`0, 1, 2` where every run has these seeds, else `mnist 0, 1, 2; cifar10 0, 1`."""
    by_run = {run: ", ".join(map(str, seeds)) for run, seeds in run_seeds(group).items()}
    if len(set(by_run.values())) <= 1:
        return next(iter(by_run.values()), "")
    return "; ".join(f"{run} {seeds}" for run, seeds in by_run.items())


def _members_line(group: dict) -> str:
    note = ", the baseline's params" if group["baseline"] else ""
    return f"{group['label']}: {len(group['members'])} member(s), seeds {seeds_text(group)}{note}"


def render(summary: dict, width: int = 80) -> str:
    """Per group and run, each key's n and summary by its kind, one line each, in 80 columns:
    mean and 95% CI (correlations: on Fisher's z, transformed back), p-values as the seeds
    below ALPHA and the median, counts as the median, flags as the seeds where they hold."""
    lines = []
    for group in summary["groups"]:
        lines.append(_members_line(group)[:width])
        for run, values in group["runs"].items():
            lines.append(f"  run {run[:33]:<34}{'n':>3}  {'value':>10}  95% CI or count")
            for key, s in values.items():
                lines.append(f"    {_clip(key, 36):<36}{s['n']:>3}  {_summary_cells(s)}"[:width])
    lines += [f"left out: {line}"[:width] for line in summary["left_out"]]
    return "\n".join(lines) if summary["groups"] else "no finished experiments with metrics found"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


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
    """One row per member and run, in at most 80 columns: a terminal shows every column
    (`dvc exp show` would drop most of them there). Xref rho: the clean phi's Spearman rho with
    the reference excess X^ref (claim 1's primary endpoint), D rho: with the paper's D; FGSM+
    and PGD+: the AUC+ gains (PGD+: claim 2's primary endpoint); PGD mrg: PGD's margin over
    random; clean: the clean-accuracy change."""
    head = f"{'experiment':<12}{'run':<8}{'seed':>5}" + "".join(f"{h:>{w}}" for h, _, w in TABLE)
    lines = []
    for group in summary["groups"]:
        lines += [group["label"][:80], head, "-" * len(head)]
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
                lines.append(f"{member['name'][:11]:<12}{run[:7]:<8}{seed[:5]:>5}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fragile-neurons sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rev", default=None, help="the baseline commit (default HEAD)")
    parser.add_argument("-n", "--num", type=int, default=1, help="commits back from --rev")
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--by",
        action="append",
        metavar="KEY",
        help="group by this param (repeatable); members that differ from the baseline in "
        "another param are left out (default: group by every param that differs)",
    )
    how.add_argument(
        "--seeds", action="store_true", help="only members with the baseline's params: one group"
    )
    how.add_argument(
        "--from", dest="source", metavar="FILE", help="show a summary written by --json"
    )
    parser.add_argument("--json", default=None, help="write the summary to this file")
    parser.add_argument(
        "--table", action="store_true", help="also each member's values, in 80 columns"
    )
    args = parser.parse_args(argv)
    if args.source:
        try:
            summary = resummarise(load_summary(args.source))
        except SummaryError as err:
            parser.error(f"--from {err}")
    else:
        rev = (_git("rev-parse", args.rev or "HEAD") or "").strip()
        if not rev:
            parser.error(f"{args.rev or 'HEAD'} is not a commit here")
        reference = flatten(parse_yaml(_git_show(rev, "params.yaml") or "{}") or {})
        unknown = [key for key in args.by or () if key not in reference]
        if unknown:
            parser.error(f"--by {unknown[0]}: no such param in params.yaml")
        members, left_out = collect(args.rev, args.num)
        by = [] if args.seeds else args.by
        summary = json.loads(to_json(summarise(members, reference, by, left_out, rev)))
    if args.table and summary["groups"]:
        print(render_table(summary) + "\n")
    print(render(summary))
    if args.json:
        from .io import write_with

        text = to_json(summary)
        write_with(args.json, lambda p: p.write_text(text))
    sys.exit(0 if summary["groups"] else 1)


if __name__ == "__main__":
    main()
