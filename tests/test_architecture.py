"""The layout docs/architecture.md describes, kept by the code: the package's layers as folders,
each importing only from its own layer or those below; one contract for every stage module; stage
scripts of one shape; and each stage reading of params.yaml exactly what dvc.yaml declares."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml
from test_dvc_deps import PACKAGE, ROOT, _imports

# The layers, from the bottom up: a module imports only from its own layer or one below it.
LAYERS = (
    "running",  # params schema and reader, device, threads, seeds, the stage frame, errors
    "stats",  # curve measures, paired statistics, ranking, McNemar and ALPHA
    "datasets",  # raw files, their safe parsers, the seeded splits
    "storage",  # atomic writes, paths, records, headline metrics
    "network",  # architectures and checkpoints, the layer, the gate, recalibration, training
    "attacks",  # FGSM and PGD, targeting, the nodal-dropout scan, masking, robustness
    "figures",  # the stages' pictures and how numbers are written
    "pipeline",  # the stage modules, one per stage
    "reporting",  # the README's results, sweeps over seeds, the offline plots page
    "interface",  # the command line, the dataset fetch, the Python API
)
TOP = len(LAYERS)  # the package's own __init__ and __main__
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def layer_of(path: Path) -> int:
    parts = path.relative_to(PACKAGE).parts
    return LAYERS.index(parts[0]) if len(parts) > 1 else TOP


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_lives_in_a_layer():
    loose = [p.name for p in modules() if layer_of(p) == TOP]
    assert set(loose) <= {"__init__.py", "__main__.py"}, loose
    assert {p.relative_to(PACKAGE).parts[0] for p in modules() if layer_of(p) < TOP} == set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_its_own(path):
    own = layer_of(path)
    above = [
        str(m.relative_to(PACKAGE))
        for m in _imports(path)
        if layer_of(m) > own and not (m.name == "__init__.py" and m.parent == PACKAGE)
    ]
    assert not above, f"{path.relative_to(PACKAGE)} ({LAYERS[own]}) imports from above: {above}"


def test_no_stage_module_imports_another():
    stages = {p for p in (PACKAGE / "pipeline").glob("*.py") if p.name != "__init__.py"}
    for path in stages:
        others = {m.stem for m in _imports(path) & stages} - {path.stem}
        assert not others, f"pipeline/{path.name} imports the stage modules {sorted(others)}"


def test_the_architecture_doc_draws_these_layers_in_this_order():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)/` \|", doc, flags=re.MULTILINE)
    assert rows == list(reversed(LAYERS)), "docs/architecture.md's layer table, top down"


# --- one contract, one shape ---------------------------------------------------------------------

SCRIPT = '''"""{doc}"""

from fragile_neurons.pipeline import {name}
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage({name})
'''


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_script_has_the_same_shape(name):
    stage = STAGES[name].get("do", STAGES[name])
    assert stage["cmd"].split()[:2] == ["python", f"stages/{name}.py"]
    text = (ROOT / "stages" / f"{name}.py").read_text()
    doc = ast.get_docstring(ast.parse(text), clean=False)
    assert doc and doc.startswith(f"{name}: "), "the docstring names the stage first"
    assert text == SCRIPT.format(doc=doc, name=name)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_module_keeps_the_contract(name):
    module = importlib.import_module(f"fragile_neurons.pipeline.{name}")
    settings = inspect.signature(module.Settings.from_params)
    assert list(settings.parameters) == ["params", "name"]
    assert list(inspect.signature(module.load).parameters) == ["ctx", "settings"]
    assert list(inspect.signature(module.run).parameters)[:2] == ["inputs", "settings"]
    assert list(inspect.signature(module.write).parameters) == ["ctx", "outputs"]


def test_every_stage_module_is_a_stage():
    names = {p.stem for p in (PACKAGE / "pipeline").glob("*.py")} - {"__init__"}
    assert names == set(STAGES)


# --- each stage reads of params.yaml what dvc.yaml declares ---------------------------------------

FRAME = {"device", "threads", "deterministic"}  # the frame's (running/stage.py), for every stage
# What a stage's load reads of its run to check an input, rather than its Settings
LOAD_READS = {"attack": {"runs.{run}.reference", "runs.{run}.placebo"}}  # controls.load_control
# What a stage's Settings reads but its computation never uses: the baseline shares evaluate's
# robustness.Settings, and attacks only the original, never the random draws
UNUSED = {"baseline": {"evaluate.random_samples"}}
# What a stage reads that no stage declares: no result depends on it, so changing it reruns nothing
# - workers: the processes the independent units run in, each at one thread (running/workers.py)
NO_DEPENDENCY = {"workers"}


class Reading(dict):
    """params, recording the dotted key of every value read."""

    def __init__(self, value: dict, seen: set, prefix: str = ""):
        super().__init__(value)
        self.seen, self.prefix = seen, prefix

    def __getitem__(self, key):
        value = super().__getitem__(key)
        dotted = f"{self.prefix}{key}"
        if isinstance(value, dict):
            return Reading(value, self.seen, f"{dotted}.")
        self.seen.add(dotted)
        return value

    def get(self, key, default=None):  # through __getitem__, which records the key
        return self[key] if key in self else default  # noqa: SIM401


def declared(name: str, run: str) -> set[str]:
    stage = STAGES[name].get("do", STAGES[name])
    keys = set()
    for entry in stage.get("params", []):
        keys |= set(entry) if isinstance(entry, dict) else {entry}
    return {key.replace("${key}", run) for key in keys}


@pytest.mark.parametrize("name", sorted(set(STAGES) - {"check"}))
def test_each_stage_reads_exactly_the_params_dvc_yaml_declares(name, monkeypatch):
    """A key read but not declared would leave a stale result when it changes; a key declared
    but not read reruns the stage for nothing."""
    import torch

    from fragile_neurons.attacks import masking
    from fragile_neurons.running.config import load_params

    monkeypatch.setattr(masking, "require_torchattacks", lambda images: None)
    params = load_params(ROOT / "params.yaml")
    run = next(iter(params["runs"]))
    seen: set[str] = set()
    module = importlib.import_module(f"fragile_neurons.pipeline.{name}")
    with torch.device("cpu"):
        module.Settings.from_params(Reading(params, seen), run)
    seen -= UNUSED.get(name, set()) | NO_DEPENDENCY
    seen |= {key.format(run=run) for key in LOAD_READS.get(name, ())}
    assert not declared(name, run) & NO_DEPENDENCY, "declared, yet no result depends on it"
    wanted = declared(name, run) - FRAME
    covered = {key for key in seen if any(key == w or key.startswith(f"{w}.") for w in wanted)}
    assert seen - FRAME == covered, f"read, not declared: {sorted(seen - FRAME - covered)}"
    unread = {w for w in wanted if not any(k == w or k.startswith(f"{w}.") for k in seen)}
    assert not unread, f"declared in dvc.yaml, never read: {sorted(unread)}"


# --- the records: one inventory, docs/architecture.md's table, checked against the code ----------


def record_rows() -> list[list[str]]:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("| record | file |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return [[cell.strip().strip("`") for cell in row] for row in rows]


def test_the_record_table_is_the_records_and_dvc_yaml():
    """Each row: a record class of storage/records.py, its file as dvc.yaml names it, written by
    the stage that has it among its outs, read by exactly the stages that have it among their
    deps; and every record class has a row."""
    from fragile_neurons.storage import records

    rows = record_rows()
    classes = {row[0] for row in rows}
    defined = {
        name
        for name, obj in vars(records).items()
        if inspect.isclass(obj) and issubclass(obj, records.Record) and obj is not records.Record
    }
    assert classes == defined
    for record, path, _, writer, readers in rows:
        file = path.replace("<run>", "${key}")
        stages = {name: st.get("do", st) for name, st in STAGES.items()}
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stages[writer]["outs"]]
        assert file in outs, f"{record}: {writer} does not write {file}"
        reading = {name for name, st in stages.items() if file in st.get("deps", [])}
        assert reading == {r.strip() for r in readers.split(",")}, f"{record} {file}"
