"""The members of a sweep, read from their commits with git and DVC.

Members. The baseline commit (`--rev`, default HEAD; its params.yaml and its committed metrics)
and every finished experiment DVC lists for it (`dvc.api.exp_show`), read from their commits with
git. A stage's numbers count in a member only where that commit's dvc.lock says the stage ran with
the member's params on inputs that its fresh upstream stages made (fresh_stages): an experiment of
`evaluate@mnist` also carries the baseline's cifar10 files, which are not counted again under
another seed, and one of `label@mnist` counts its mnist stages up to label, not the baseline's
correlate and evaluate files it carries. So a 5-seed sweep is the baseline (seed 0) and four
queued seeds.

Provenance. A member also carries what a pooled seed must share and what it may not: `code`, the
md5 that its dvc.lock records for each code dependency (CODE: the stages' scripts, the package,
`archs`) of each fresh stage, {stage: {path: md5}}, and `runtime`, per run, where the counted
stages ran (RUNTIME: the device, torch's thread count, and the CPU model where a stage records
it), read from the runtime block (`Context.runtime`) of their details, metrics/<run>/<stage>.json.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ..running.yaml_file import parse_yaml
from ..storage.headline import read_files


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


MISSING = object()


def _lookup(params: dict, dotted: str):
    obj = params
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
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


# A dependency is code (its md5 must agree for seeds to pool) where it ends in .py or lies in one
# of these folders; raw data and params.yaml are not (params are compared as params).
CODE = ("src", "stages", "archs")
# The fields of a stage's runtime block (Context.runtime) that say where it ran.
RUNTIME = ("cpu", "threads", "device")


def is_code(path: str) -> bool:
    return path.endswith(".py") or any(path == d or path.startswith(f"{d}/") for d in CODE)


def code_deps(lock: dict, stages: set[str]) -> dict[str, dict[str, str]]:
    """{stage: {path: md5}} of the code dependencies (is_code) of `stages` in `lock`."""
    entries = lock.get("stages") or {}
    return {
        name: {
            dep["path"]: dep.get("md5")
            for dep in entries[name].get("deps") or []
            if is_code(dep["path"])
        }
        for name in sorted(stages)
        if name in entries
    }


def one_or_all(values: list) -> Any:
    """None for no values, the value where all are one, else the distinct values sorted."""
    distinct = {json.dumps(v, sort_keys=True): v for v in values if v is not None}
    found = sorted(distinct.values(), key=sort_key)
    return None if not found else found[0] if len(found) == 1 else found


def git(*args: str) -> str | None:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def git_show(rev: str, path: str) -> str | None:
    return git("show", f"{rev}:{path}")


def _short(rev: str) -> str:
    return (git("rev-parse", "--short=7", rev) or rev).strip()


def read_commit(rev: str, name: str, baseline: bool) -> dict:
    """One member: its name, short rev, params (flattened) and, for each run with a stage that
    ran with its params (fresh_stages), the headline numbers of those stages; its provenance:
    the code md5s of its fresh stages (code_deps) and each run's runtime (module docstring)."""
    params = parse_yaml(git_show(rev, "params.yaml") or "{}") or {}  # as DVC reads it
    lock = parse_yaml(git_show(rev, "dvc.lock") or "{}", "dvc.lock") or {}
    fresh = fresh_stages(lock, params)
    made = [  # the outputs of the fresh stages: their headline files count
        out["path"].rstrip("/")
        for name, entry in (lock.get("stages") or {}).items()
        if name in fresh
        for out in entry.get("outs") or []
    ]
    runs, runtime = {}, {}
    for run in params.get("runs") or {}:
        folder = f"metrics/{run}/"
        listing = git("ls-tree", "-r", "--name-only", rev, folder) or ""
        files = {}
        for path in listing.split():
            counted = any(path == out or path.startswith(f"{out}/") for out in made)
            if counted and path.endswith(".json") and path.count("/") == 3:
                # metrics/<run>/<stage>/<file>, written by a stage that ran with these params
                text = git_show(rev, path)
                files[path[len(folder) :]] = json.loads(text) if text else {}
        values = read_files(files)
        if values:
            runs[run] = values
            details = [  # metrics/<run>/<stage>.json of the counted stages: their runtime block
                json.loads(git_show(rev, path) or "{}")
                for path in listing.split()
                if path.count("/") == 2 and path.endswith(".json") and path in made
            ]
            runtime[run] = {
                key: one_or_all([d.get(key) for d in details if isinstance(d, dict)])
                for key in RUNTIME
            }
    return {
        "name": name,
        "rev": _short(rev),
        "baseline": baseline,
        "seed": params.get("seed"),
        "params": flatten(params),
        "runs": runs,
        "code": code_deps(lock, fresh),
        "runtime": runtime,
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


def sort_key(value: Any) -> tuple:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value, sort_keys=True))
