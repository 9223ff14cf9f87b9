"""dvc.yaml lists, for every stage, exactly the package modules its script runs: changing code that
shapes a result reruns the stages it shapes (a stale cache would otherwise keep old results), and
changing code a stage does not run reruns nothing (editing PGD does not relabel)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fragile_neurons"
# The only modules that cannot change a value, and so are no stage's dependency:
# - errors: the error types (a message changes, no number);
# - paths: where files live (a changed path is a changed dvc.yaml out, which DVC sees itself);
# - stage: the frame (parse the run name, call the body, print errors and the time; what shapes
#   results, threads, seeds and device, is in runtime, and the params check is in config);
# - __init__: the lazy API export and OpenMP's passive wait (how threads wait, not what they do).
# config (it normalises params), runtime (threads, seeds, device) and io (how CSVs and PNGs are
# written) shape what a stage writes, so every stage that runs them depends on them.
PLUMBING = {"__init__", "errors", "paths", "stage"}


def _module_file(dotted: str) -> Path | None:
    """The file of a fragile_neurons module ('fragile_neurons.figures.scan'), if it is one."""
    parts = dotted.split(".")
    if parts[0] != "fragile_neurons":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    """The package modules `path` imports directly (absolute and relative forms)."""
    package = (
        ".".join(("fragile_neurons", *path.parent.relative_to(PACKAGE).parts))
        if (PACKAGE in path.parents)
        else "fragile_neurons"
    )
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found |= {f for f in map(_module_file, names) if f is not None}
    return found


def _closure(script: Path, plumbing: bool = False) -> set[str]:
    """The package modules `script` runs, directly or through others; plumbing only if asked."""
    seen, todo = set(), [script]
    while todo:
        for module in _imports(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return {str(m.relative_to(ROOT)) for m in seen if plumbing or m.stem not in PLUMBING}


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_one_of_its_deps(name):
    stage = STAGES[name].get("do", STAGES[name])
    script = ROOT / stage["cmd"].split()[1]
    missing = _closure(script) - set(stage["deps"])
    assert not missing, f"dvc.yaml stage {name!r} runs {sorted(missing)} but does not depend on it"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_depends_on_a_module_it_does_not_run(name):
    stage = STAGES[name].get("do", STAGES[name])
    script = ROOT / stage["cmd"].split()[1]
    code = {dep for dep in stage["deps"] if dep.startswith("src/")}
    extra = code - _closure(script, plumbing=True)
    assert not extra, f"dvc.yaml stage {name!r} depends on {sorted(extra)}, which it never runs"


def _outs(stage: dict) -> dict[str, dict]:
    """{path: its options} of a stage's outputs (metrics and plots not included)."""
    found = {}
    for out in stage.get("outs", []):
        path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
        found[path] = options or {}
    return found


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_run_cache_can_restore_every_computing_stage(name):
    """DVC's run-cache restores a stage only when every output is cached, a metric or a plot:
    every stage but publish (which copies files) keeps it so; publish's outputs are exactly the
    views of paths.PUBLISHED, and each stage writes its views as a cached folder."""
    from fragile_neurons.storage import paths

    stage = STAGES[name].get("do", STAGES[name])
    outs = _outs(stage)
    if name == "publish":
        wanted = {paths.published("${key}", n).as_posix()
                  for names in paths.PUBLISHED.values() for n in names}  # fmt: skip
        assert set(outs) == wanted
        assert {f"data/views/${{key}}/{s}" for s in paths.PUBLISHED} <= set(stage["deps"])
        return
    assert all(options.get("cache", True) for options in outs.values()), name
    if name in paths.PUBLISHED:
        assert f"data/views/${{key}}/{name}" in outs
