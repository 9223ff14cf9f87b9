"""Summarise the DVC experiments of a sweep: every headline number, mean and 95% CI over seeds.

    fragile-neurons sweep                          # experiments derived from HEAD, grouped
    fragile-neurons sweep --seeds --json metrics/sweeps/seeds.json
    fragile-neurons sweep --by harden.compress --json metrics/sweeps/compress.json
    fragile-neurons sweep --from metrics/sweeps/seeds.json --table   # a committed summary
    fragile-neurons sweep --seeds --merge metrics/sweeps/seeds.json --json metrics/sweeps/seeds.json

Members: `experiments` (read from their commits with git and DVC). Numbers: `seedstats` (each
key's summary over seeds by its kind). Text for a terminal: `terminal`.

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
another seed), and `workers` (which changes no result). Within a group, each seed of a run counts
once (the baseline first, then by experiment name).

Method. A summary records `method`, the method version (METHOD, docs/method.md's title)
of the baseline commit it summarises; one without the field predates it and is method v3
(`method_of`). The sweep summarises the experiments of one baseline commit, so one method; it
pools a committed summary only with `--merge` (`--from` shows one).

Provenance. Each member records `provenance`: its commit, its method (its docs/method.md's), the CPU
model, thread count and device its counted stages ran on (their runtime blocks; None where a stage
records none: stages before the v4 seeds recorded no CPU model), and its NUISANCE params. A group
records `settings`, the other params its members share, and `runtime`, the distinct CPU models,
thread counts and devices it rests on; a summary records `code`, {stage: {path: md5}}, the code
dependencies (experiments.CODE) that its members' counted stages ran, as their dvc.lock says. Within
one sweep a member whose code differs from an earlier one's (the baseline's first) in a stage both
ran is left out.

Slices (`--merge FILE`): a sweep spread over days commits each day's seeds, and the next day adds
its own to FILE (a summary of this version) rather than starting over: each group of the
experiments collected now joins FILE's group of the same params (a group FILE lacks is added),
a seed of a run that FILE holds with the same values is kept from FILE, and every key of a run
that gets seeds is summarised again from the merged per-seed values; `baselines` lists the
commits the summary's experiments derive from, `rev` the latest. Nothing is written, and each
reason is one line (exit 1), where the experiments group by other params than FILE, are of
another method, ran other code in a stage FILE's members ran (naming the stage and file), have
other params than FILE's group (naming the first), or hold a seed of a run that FILE has with
other values (naming the run, seed and first differing key). Thread count, device and CPU type
are pooled like seeds, and recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..running.yaml_file import parse_yaml
from .experiments import MISSING, RUNTIME, collect, flatten, git, git_show, one_or_all, sort_key
from .seedstats import CONFIDENCE, resummarise, resummarise_run, summarise_values
from .terminal import render, render_table

# The method version (docs/method.md's title) the pipeline measures: `fragile-neurons sweep
# --json` records it in a summary, and `report` marks a summary of an older one (a summary
# without the field predates it: OLDEST_METHOD).
METHOD = "v4"
OLDEST_METHOD = "v3"

# Params whose values vary within a group: they change random draws and float rounding only
# (`workers` not even those: the same bytes for any count).
NUISANCE = ("seed", "threads", "device", "deterministic", "workers")
DIGITS = 6  # significant digits in the JSON


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


def method_of(summary: dict) -> str:
    """A summary's method version: its `method`, or OLDEST_METHOD for a summary written before
    the field was (method v3)."""
    method = summary.get("method")
    return method if isinstance(method, str) and method else OLDEST_METHOD


def method_at(rev: str) -> str:
    """The method version of a commit: the `(vN)` of its docs/method.md's title, else METHOD."""
    import re

    text = git_show(rev, "docs/method.md") or ""
    found = re.match(r"#[^\n]*\((v\d+)\)", text)
    return found.group(1) if found else METHOD


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


# --- grouping and summarising ----------------------------------------------------------------


def _label(params: dict, reference: dict) -> str:
    """`key=value` of the params that differ from the reference's (all of them where none do)."""
    changed = {k: v for k, v in params.items() if reference.get(k, MISSING) != v}
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
            code = {
                stage: deps
                for stage, deps in (m.get("code") or {}).items()
                if "@" not in stage or stage.endswith(f"@{run}")
            }
            runtime = {run: (m.get("runtime") or {}).get(run) or {}}
            entries.append(
                m | {"params": params, "runs": {run: values}, "code": code, "runtime": runtime}
            )
    return entries


def _differing(members: list[dict]) -> list[str]:
    keys = sorted({k for m in members for k in m["params"]} - set(NUISANCE))
    return [
        k
        for k in keys
        if len({json.dumps(m["params"].get(k), sort_keys=True) for m in members}) > 1
    ]


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
            if m["params"].get(k, MISSING) != reference.get(k, MISSING)
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
    code: dict[str, tuple[dict, str]] = {}  # stage: its code md5s, the member that set them
    order = sorted(
        entries,
        key=lambda m: (
            not m["baseline"],
            sort_key(m["seed"]),
            -sum(map(len, m["runs"].values())),  # of one seed, the member with the most numbers
            m["name"],
        ),
    )
    for m in order:
        differs = code_difference({s: c for s, (c, _) in code.items()}, m.get("code") or {})
        if differs:
            stage, path = differs
            left.append(
                f"{m['name']} ({m['rev']}): its code differs from {code[stage][1]}'s "
                f"in stage {stage}: {path}"
            )
            continue
        for stage, deps in (m.get("code") or {}).items():
            code.setdefault(stage, (deps, m["name"]))
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
            for field in ("runs", "runtime", "code"):
                mine[field] = (mine.get(field) or {}) | (m.get(field) or {})
        else:
            seen.append(m)
    ordered = sorted(groups.values(), key=lambda g: [sort_key(g["params"][k]) for k in by])
    return ordered, left


def code_difference(known: dict[str, dict], code: dict[str, dict]) -> tuple[str, str] | None:
    """(stage, path) of the first stage in both {stage: {path: md5}} whose code differs: a
    file of another md5, or one that only one of them depends on; None where none does."""
    for stage in sorted(set(known) & set(code)):
        for path in sorted(set(known[stage]) | set(code[stage])):
            if known[stage].get(path, MISSING) != code[stage].get(path, MISSING):
                return stage, path
    return None


def provenance(member: dict, method: str) -> dict:
    """Where a member's numbers come from: its commit, method version, and (over the runs it
    holds) the CPU model, thread count and device its counted stages recorded (None where none
    did; the distinct values where they differ), and its NUISANCE params."""
    runtime = [(member.get("runtime") or {}).get(run) or {} for run in member["runs"]]
    flat = {key: [] for key in RUNTIME}
    for entry in runtime:
        for key in RUNTIME:
            value = entry.get(key)
            flat[key] += value if isinstance(value, list) else [value]
    return {
        "commit": member["rev"],
        "method": member.get("method") or method,
        **{key: one_or_all(values) for key, values in flat.items()},
        "params": {k: member["params"][k] for k in NUISANCE if k in member["params"]},
    }


def _runtime(members: list[dict]) -> dict[str, list]:
    """{field: its distinct values} of the members' provenance (RUNTIME), fields recorded."""
    found = {}
    for key in RUNTIME:
        values = []
        for m in members:
            value = (m.get("provenance") or {}).get(key)
            values += value if isinstance(value, list) else [value]
        distinct = one_or_all(values)
        if distinct is not None:
            found[key] = distinct if isinstance(distinct, list) else [distinct]
    return found


def _pooled(members: list[dict]) -> dict[str, list]:
    """{param: its distinct values} of the NUISANCE params that vary among `members`."""
    pooled = {}
    for key in NUISANCE:
        distinct = {json.dumps(m["params"].get(key)): m["params"].get(key) for m in members}
        if len(distinct) > 1:
            pooled[key] = sorted(distinct.values(), key=sort_key)
    return pooled


def _summarise_group(group: dict, reference: dict, method: str = METHOD) -> dict:
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
    entries = [
        {
            "name": m["name"],
            "rev": m["rev"],
            "seed": m["seed"],
            "runs": sorted(m["runs"]),
            "provenance": provenance(m, method),
        }
        for m in members
    ]
    return {
        "label": _label(group["params"], reference),
        "params": group["params"],
        "baseline": all(v == reference.get(k) for k, v in group["params"].items()),
        "members": entries,
        "pooled": _pooled(members),
        "runtime": _runtime(entries),
        "settings": {k: v for k, v in members[0]["params"].items() if k not in NUISANCE},
        "runs": runs,
    }


def summarise(
    members: list[dict],
    reference: dict,
    by: list[str] | None = None,
    left_out: list[str] = (),
    rev: str = "",
    method: str = METHOD,
) -> dict:
    """The summary (written by --json) of `members` (collect), grouped by the params `by`
    (None: every param that differs among the members, NUISANCE aside; []: none, a seed sweep of
    the baseline's params). `reference` is the baseline's flattened params: with `by` given, a
    run (per_run) that differs from it outside `by` and NUISANCE is left out. `method`: the
    method version of the baseline commit (method_at)."""
    selected, by, left = _select(per_run(members, reference), reference, by)
    groups, duplicates = _group(selected, by, reference)
    return {
        "method": method,
        "rev": rev,
        "by": by,
        "pooled": _pooled([m for group in groups for m in group["members"]]),
        "confidence": CONFIDENCE,
        "groups": [_summarise_group(group, reference, method) for group in groups],
        "code": {
            stage: deps
            for group in groups
            for m in group["members"]
            for stage, deps in (m.get("code") or {}).items()
        },
        "left_out": sorted({*left_out, *left, *duplicates}),
    }


# --- merging a committed summary with today's seeds (slices that add up) -----------------------


def _names(members: list[dict], most: int = 3) -> str:
    names = [f"{m['name']} ({m['rev']})" for m in members]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _seeds(group: dict, run: str) -> set[str]:
    """The seeds (as in `values`) that a group holds for `run`."""
    return {seed for stats in group["runs"].get(run, {}).values() for seed in stats["values"]}


def _refusals(old: dict, new: dict, source: str) -> list[str]:
    """Why `new`'s members cannot join `old` (a summary committed as `source`), one line each;
    the first kind of problem found only (empty: they can)."""
    members = [m for group in new["groups"] for m in group["members"]]
    if old["by"] != new["by"]:
        return [f"{source} groups by {old['by'] or 'nothing (--seeds)'}, this sweep by "
                f"{new['by'] or 'nothing (--seeds)'}: merge the same kind of sweep"]  # fmt: skip
    want = method_of(old)
    other = {}
    for m in members:
        method = (m.get("provenance") or {}).get("method") or method_of(new)
        if method != want:
            other.setdefault(method, []).append(m)
    if other:
        return [
            f"{_names(ms)}: method {method}, {source} is method {want}: seeds of one method "
            "only (write a new summary: --json without --merge)"
            for method, ms in sorted(other.items())
        ]
    if not isinstance(old.get("code"), dict) or any(
        not isinstance(g.get("settings"), dict) for g in old["groups"]
    ):
        return [f"{source} records no code md5s or params (written before sweep --merge): "
                "merge only into a summary written by this version"]  # fmt: skip
    differs = code_difference(old["code"], new.get("code") or {})
    if differs:
        stage, path = differs
        was, now = old["code"][stage].get(path), new["code"][stage].get(path)
        return [f"code differs from {source}'s in stage {stage}: {path} (md5 {was} there, "
                f"{now} now): seeds of one code only"]  # fmt: skip
    lines = []
    olds = {json.dumps(g["params"], sort_keys=True): g for g in old["groups"]}
    for group in new["groups"]:
        known = olds.get(json.dumps(group["params"], sort_keys=True))
        if known is None:
            continue
        settings, mine = known["settings"], group.get("settings") or {}
        keys = [k for k in sorted(set(settings) | set(mine))
                if settings.get(k, MISSING) != mine.get(k, MISSING)]  # fmt: skip
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            there, now = (repr(d.get(keys[0], "unset")) for d in (settings, mine))
            lines.append(
                f"{_names(group['members'])}: params differ from {source}'s group "
                f"{known['label']} in {keys[0]} ({there} there, {now} now){more}"
            )
            continue
        for m in group["members"]:
            seed = str(m["seed"])
            for run in m["runs"]:
                if seed not in _seeds(known, run):
                    continue
                was, now = known["runs"].get(run, {}), group["runs"].get(run, {})
                for key in sorted(set(was) | set(now)):
                    a = was.get(key, {}).get("values", {}).get(seed, "missing")
                    b = now.get(key, {}).get("values", {}).get(seed, "missing")
                    if a != b:
                        lines.append(
                            f"{m['name']} ({m['rev']}): {run} seed {seed} is in {source} with "
                            f"other values: {key} {a} there, {b} now (remove one of them)"
                        )
                        break
    return lines


def _nuisance(members: list[dict]) -> list[dict]:
    """Summary members as _pooled reads them: their NUISANCE params (provenance)."""
    return [{"params": (m.get("provenance") or {}).get("params", {})} for m in members]


def merge(old: dict, new: dict, source: str = "FILE") -> tuple[dict, list[str]]:
    """`old` (a summary committed as `source`) with the seeds of `new` (a summary of the
    experiments collected now, as to_json writes it) added, group by group (the same params),
    and every key's summary rebuilt from the merged per-seed values; and the refusals, one line
    each (_refusals: another grouping, method, code or params, or a seed of a run already in
    `source` with other values), in which case the summary is `old` unchanged. A seed of a run
    that `source` holds with the same values is kept from `source`."""
    refused = _refusals(old, new, source)
    if refused:
        return old, refused
    groups = {json.dumps(g["params"], sort_keys=True): dict(g) for g in old["groups"]}
    for group in new["groups"]:
        label = json.dumps(group["params"], sort_keys=True)
        if label not in groups:
            groups[label] = group
            continue
        known = groups[label]
        members = list(known["members"])
        runs = {run: dict(values) for run, values in known["runs"].items()}
        grown = set()  # the runs that get seeds: each key of theirs summarised again
        for m in group["members"]:
            seed = str(m["seed"])
            fresh = [run for run in m["runs"] if seed not in _seeds(known, run)]
            if not fresh:
                continue  # every run of it already there, with the same values
            members.append(m | {"runs": fresh})
            grown.update(fresh)
            for run in fresh:
                target = runs.setdefault(run, {})
                for key, stats in group["runs"].get(run, {}).items():
                    if seed in stats["values"]:
                        values = (target.get(key) or {"values": {}})["values"]
                        target[key] = {"values": values | {seed: stats["values"][seed]}}
        groups[label] = known | {
            "members": members,
            "pooled": _pooled(_nuisance(members)),
            "runtime": _runtime(members),
            "runs": {
                run: resummarise_run(values) if run in grown else values
                for run, values in sorted(runs.items())
            },
        }
    ordered = sorted(groups.values(), key=lambda g: [sort_key(g["params"][k]) for k in old["by"]])
    everyone = [m for g in ordered for m in g["members"]]
    baselines = [*(old.get("baselines") or [old["rev"]]), new["rev"]]
    return old | {
        "rev": new["rev"],
        "baselines": list(dict.fromkeys(baselines)),
        "groups": ordered,
        "pooled": _pooled(_nuisance(everyone)),
        "code": old["code"] | (new.get("code") or {}),
        "left_out": sorted({*old["left_out"], *new["left_out"]}),
    }, []


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
    parser.add_argument(
        "--merge",
        metavar="FILE",
        help="add the seeds of the experiments to the summary FILE (written by --json), group "
        "by group; refused, with one line each, where their method, code or params differ "
        "from FILE's or a seed of a run is in FILE with other values",
    )
    parser.add_argument("--json", default=None, help="write the summary to this file")
    parser.add_argument(
        "--table", action="store_true", help="also each member's values, in 80 columns"
    )
    args = parser.parse_args(argv)
    if args.merge and args.source:
        parser.error("--merge adds experiments to a summary: not with --from")
    if args.merge:
        try:
            committed = load_summary(args.merge)
        except SummaryError as err:
            parser.error(f"--merge {err}")
    if args.source:
        try:
            summary = resummarise(load_summary(args.source))
        except SummaryError as err:
            parser.error(f"--from {err}")
    else:
        rev = (git("rev-parse", args.rev or "HEAD") or "").strip()
        if not rev:
            parser.error(f"{args.rev or 'HEAD'} is not a commit here")
        reference = flatten(parse_yaml(git_show(rev, "params.yaml") or "{}") or {})
        unknown = [key for key in args.by or () if key not in reference]
        if unknown:
            parser.error(f"--by {unknown[0]}: no such param in params.yaml")
        members, left_out = collect(args.rev, args.num)
        by = [] if args.seeds else args.by
        method = method_at(rev)
        methods: dict[str, str] = {}
        for m in members:  # each member's own docs/method.md (one commit's once)
            m["method"] = methods.get(m["rev"]) or methods.setdefault(m["rev"], method_at(m["rev"]))
        summary = json.loads(to_json(summarise(members, reference, by, left_out, rev, method)))
        if args.merge:
            summary, refused = merge(committed, summary, args.merge)
            for line in refused:
                print(f"fragile-neurons sweep: --merge refused: {line}", file=sys.stderr)
            if refused:
                sys.exit(1)
            summary = json.loads(to_json(summary))
    if args.table and summary["groups"]:
        print(render_table(summary) + "\n")
    print(render(summary))
    if args.json:
        from ..storage.io import write_with

        text = to_json(summary)
        write_with(args.json, lambda p: p.write_text(text))
    sys.exit(0 if summary["groups"] else 1)


if __name__ == "__main__":
    main()
