"""End to end: `dvc repro` of the whole pipeline on tiny synthetic data in a fresh git repository.

Checks what a researcher relies on: every stage runs for every run, a second `dvc repro` reruns
nothing, a rerun rewrites identical bytes, and changing one param dirties only what reads it; and
that a run of one's own architecture (`arch: archs.<module>:<function>`) goes through every stage,
reruns when its builder changes, and stops with one line when its builder is bad.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_dvc_deps import STAGES, _closure

from fragile_neurons.datasets.files import file_md5s
from fragile_neurons.storage import headline

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 0,
    "device": "cpu",
    "deterministic": "warn",
    "threads": None,
    "workers": None,
    "batch_size": 64,
    "data": {"root": None, "download": False, "accept_checksum_mismatch": None},  # pinned below
    "runs": {
        "digits": {
            "dataset": "mnist", "arch": "mnist_cnn", "selection_size": 50, "reference": True,
            "placebo": True, "train_size": 200, "test_size": 80,
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0,
                      "augment": False},
            "attack": {"epsilons": [0, 0.1, 0.2], "labels": True, "surrogate_iterations": 20},
        },
        "objects": {
            "dataset": "cifar10", "arch": "cifar_cnn", "selection_size": 50, "reference": False,
            "placebo": False, "train_size": 100, "test_size": 60,
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0,
                      "augment": True},
            "attack": {"epsilons": [0, "2/255", "8/255"], "labels": "predicted",
                       "surrogate_iterations": 20},
        },
    },
    "scan": {"layer": None, "samples": 40, "adversarial": "transfer"},
    "label": {"score": "clean", "fraction": 0.25},
    "correlate": {"top_fraction": 0.25},
    "harden": {"compress": 0.5, "mode": "proportional", "max_gain": 4.0, "random_controls": 2,
               "match_tolerance": 0.1},
    "evaluate": {"images": 60, "samples": 30,
                 "random_samples": 20,
                 "pgd": {"attack": "pgd", "steps": 2, "restarts": 1},
                 "autoattack": {"images": 8, "steps": 3}},
}  # fmt: skip


def dvc(repo: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def new_project(repo: Path, synthetic_root: Path, runs: dict) -> Path:
    """A git and DVC repository in `repo` with this project's pipeline and code, the TINY params
    with `runs` on the synthetic data, nothing run yet."""
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    for folder in ("stages", "src", "archs"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pins = {d: file_md5s(d, synthetic_root) for d in ("mnist", "cifar10")}  # synthetic copies
    data = dict(TINY["data"], root=str(synthetic_root), accept_checksum_mismatch=pins)
    params = dict(TINY, data=data, runs=runs)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    return repo


@pytest.fixture(scope="module")
def project(tmp_path_factory, synthetic_root):
    repo = new_project(tmp_path_factory.mktemp("project"), synthetic_root, TINY["runs"])
    dvc(repo, "repro")
    return repo


def read(repo: Path, run: str, stage: str) -> dict:
    return json.loads((repo / "metrics" / run / f"{stage}.json").read_text())


def test_every_stage_ran_for_every_run(project):
    for run in TINY["runs"]:
        for stage in (
            "data",
            "train",
            "attack",
            "scan",
            "label",
            "correlate",
            "harden",
            "evaluate",
        ):
            assert (project / "metrics" / run / f"{stage}.json").is_file(), (run, stage)
        train, attack = read(project, run, "train"), read(project, run, "attack")
        assert attack["fgsm_accuracy"]["0"] == train["test_accuracy"]
        evaluate = read(project, run, "evaluate")
        assert evaluate["autoattack"]["images"] == 8 and evaluate["autoattack"]["steps"] == 3
        for stage, keys in headline.HEADLINES.items():  # the headlines, DVC's metrics
            found = {p.stem for p in (project / "metrics" / run / stage).glob("*.json")}
            assert found == {k.file for k in keys}, (run, stage)
        values = headline.read_folder(project / "metrics" / run)  # NaN, None (undefined) left out
        assert set(values) <= set(headline.declared())
        assert isinstance(values["evaluate.masking"], bool)
        assert values["train.test_accuracy"] == train["test_accuracy"]
        # the label stage's flag reaches every later stage, through the gains record
        resolved = read(project, run, "label")["resolved"]
        assert values["label.resolved"] is resolved
        assert read(project, run, "correlate")["labels_resolved"] is resolved
        assert read(project, run, "harden")["labels_resolved"] is resolved
        assert evaluate["labels_resolved"] is resolved
        # FGSM on the first 60 test images (all of the objects run's 60), PGD on 30, the random
        # draws' PGD on 20 of those
        assert evaluate["samples"] == {
            "fgsm": 60, "pgd": 30, "transfer": 60, "pgd_random": 20, "bootstrap": 1000
        }  # fmt: skip
        assert evaluate["margin_over_random"]["pgd"]["auc_plus"]["images"] == 20
        assert read(project, run, "data")["checksums_verified"] is False
        assert read(project, run, "data")["selection_size"] == 50
        assert attack["scan_samples"] == 40 and 0 <= attack["scan_clean_accuracy"] <= 1
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    scan_deps = {dep["path"] for dep in lock["scan@digits"]["deps"]}
    assert {"data/prepared/digits/selection.pt", "data/attack/digits/scan_sweep.pt"} <= scan_deps
    assert not {"data/prepared/digits/test.pt", "data/attack/digits/sweep.pt"} & scan_deps


def test_second_repro_reruns_nothing(project):
    out = dvc(project, "repro")
    assert "Running stage" not in out
    assert json.loads(dvc(project, "status", "--json")) == {}


def cached_outputs(repo: Path) -> dict:
    """md5 of every output in dvc.lock: models, tensors, CSVs, PNGs and metrics."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


def test_forced_rerun_rewrites_identical_bytes(project):
    before = cached_outputs(project)
    curves = [f"plots/digits/train/plots/metrics/{c}.tsv" for c in ("train/accuracy", "test/loss")]
    outputs = [
        "plots/digits/train/metrics.json",
        *curves,
        "plots/digits/targeting.csv",
        "metrics/digits/train.json",
    ]  # published copies, rewritten by publish
    saved = {p: (project / p).read_bytes() for p in outputs}
    dvc(project, "repro", "--force", "--downstream", "train@digits")
    assert cached_outputs(project) == before  # same md5 for every model, tensor, CSV and PNG
    assert {p: (project / p).read_bytes() for p in outputs} == saved


def test_outputs_are_the_same_bytes_whatever_the_worker_count(project):
    """baseline and evaluate run their units (epsilons, networks) in `workers` processes at one
    thread each: at one worker they rewrite every output as the fixture's run (`null`: one per
    core, here at least two) wrote it, and the published copies too."""
    from fragile_neurons.running.config import cores

    if cores() < 2:
        pytest.skip("the fixture's run had one worker too")
    params_file = project / "params.yaml"
    original = params_file.read_text()
    before = cached_outputs(project)
    try:
        params = yaml.safe_load(original)
        params["workers"] = 1
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        out = dvc(project, "repro", "--force", "--downstream", "baseline@digits")
        assert ran_stages(out) == {"baseline@digits", "evaluate@digits", "publish@digits"}
        after = cached_outputs(project)
        assert {p: after[p] for p in before} == before
    finally:
        params_file.write_text(original)
        dvc(project, "repro")


def test_changing_one_param_dirties_only_what_reads_it(project):
    params_file = project / "params.yaml"
    original = params_file.read_text()
    try:
        params = yaml.safe_load(original)
        params["runs"]["digits"]["train"]["epochs"] = 3
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        dirty = set(json.loads(dvc(project, "status", "--json")))
        # check reads all of params.yaml; the reference and placebo networks are trained as f is
        assert dirty == {"check", "train@digits", "reference@digits", "placebo@digits"}
        params = yaml.safe_load(original)
        params["workers"] = 1  # how many processes: no result depends on it
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        assert set(json.loads(dvc(project, "status", "--json"))) == {"check"}
        params = yaml.safe_load(original)
        params["harden"]["compress"] = 0.25
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        ran = ran_stages(dvc(project, "repro"))
        stages = {f"{stage}@{run}" for stage in ("harden", "evaluate") for run in TINY["runs"]}
        publish = {f"publish@{run}" for run in TINY["runs"]}  # copies what evaluate wrote
        assert ran == {"check"} | stages | publish
    finally:
        params_file.write_text(original)
        back = dvc(project, "repro")
    # back to the params of before: every computing stage is restored from DVC's run-cache, and
    # only publish (it copies files; no run-cache) runs
    assert ran_stages(back) == publish
    assert restored(back) == {"check"} | stages


def ran_stages(out: str) -> set[str]:
    """The stages `dvc repro` printed as run."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def restored(out: str) -> set[str]:
    """The stages `dvc repro` restored from its run-cache instead of running them."""
    return {
        line.split("'")[1]
        for line in out.splitlines()
        if line.startswith("Stage '") and "is cached - skipping run" in line
    }


def test_an_interrupted_repro_resumes_from_the_run_cache(project, tmp_path):
    """A queued experiment killed mid-way (a reboot, a killed worker, the end of a day) and run
    again in a fresh workspace, as a re-queued experiment is: the stages that had finished are
    restored from DVC's run-cache, and only the rest runs."""
    import signal
    import time

    params_file, lock_file = project / "params.yaml", project / "dvc.lock"
    original, lock = params_file.read_text(), lock_file.read_text()
    log = tmp_path / "repro.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
    try:
        params = yaml.safe_load(original)
        params["harden"]["compress"] = 0.75
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "dvc"), "repro"],
                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not stage_processes(project, "stages/evaluate.py"):  # harden done, evaluate on
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "evaluate never started"
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            deadline = time.monotonic() + 30
            while stage_processes(project, "stages/evaluate.py"):  # it stops with its parent
                assert time.monotonic() < deadline, "evaluate outlived DVC"
                time.sleep(0.1)
        finally:
            process.kill()
        started = [line.split("'")[1] for line in log.read_text().splitlines()
                   if line.startswith("Running stage")]  # fmt: skip
        finished, killed = set(started[:-1]), started[-1]
        assert killed.startswith("evaluate@") and "check" in finished
        assert any(stage.startswith("harden@") for stage in finished)
        # a fresh workspace: the state before, outputs checked out, the experiment's params
        lock_file.write_text(lock)
        dvc(project, "checkout", "--force", "-q")
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        out = dvc(project, "repro")
        assert restored(out) == finished  # nothing that had finished runs again
        stages = {f"{stage}@{run}" for stage in ("harden", "evaluate") for run in TINY["runs"]}
        assert ran_stages(out) == (stages - finished) | {f"publish@{run}" for run in TINY["runs"]}
    finally:
        params_file.write_text(original)
        dvc(project, "repro")
    assert json.loads(dvc(project, "status", "--json")) == {}


def _edit_a_function_body(path: Path) -> None:
    """Add a statement (`pass`) at the end of the first function of `path` (of the module, if it
    has none): an edit of code that runs, which changes the file's md5 as any real edit would."""
    text = path.read_text()
    functions = [
        node
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    if not functions:  # a module of definitions only: a statement of its own
        path.write_text(text + "pass\n")
        return
    last = functions[0].body[-1]
    lines = text.splitlines(keepends=True)
    lines.insert(last.end_lineno, " " * last.col_offset + "pass\n")
    path.write_text("".join(lines))


def test_editing_a_module_dirties_exactly_the_stages_that_run_it(project):
    """For every package module: an edit of a function body marks, in `dvc status`, exactly the
    stages whose scripts run the module (directly or through others), for every run; a module no
    stage runs (api, report, ...) or one that cannot change a value (PLUMBING) marks none."""
    stages = {
        name: _closure(ROOT / stage.get("do", stage)["cmd"].split()[1])
        for name, stage in STAGES.items()
    }
    package = project / "src" / "fragile_neurons"
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(project).as_posix()
        wanted = {
            name if name == "check" else f"{name}@{run}"
            for name, modules in stages.items()
            if module in modules
            for run in TINY["runs"]
        }
        original = path.read_text()
        try:
            _edit_a_function_body(path)
            dirty = set(json.loads(dvc(project, "status", "--json")))
        finally:
            path.write_text(original)
        assert dirty == wanted, module
    assert json.loads(dvc(project, "status", "--json")) == {}


def test_report_tabulates_every_run(project):
    result = subprocess.run(
        [sys.executable, "-m", "fragile_neurons.reporting.report"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| seed 0 | digits | objects |" in result.stdout
    assert "| data (checksums) | mnist (NOT verified) | cifar10 (NOT verified) |" in result.stdout
    assert "| model | mnist_cnn | cifar_cnn |" in result.stdout
    assert "| hardened |" in result.stdout and "FGSM accuracy" in result.stdout
    assert "No seed sweep is committed yet" in result.stdout


def dvc_fails(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    dvc_bin = str(Path(sys.executable).parent / "dvc")
    result = subprocess.run([dvc_bin, *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode != 0, result.stdout
    return result


def edited(project: Path, edit) -> str:
    """params.yaml after `edit(params)`; returns the original text to restore."""
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return original


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (lambda p: p["scan"].update(layr=1), "params: scan.layr = 1 is not allowed"),
        (lambda p: p.update(sed=0), "params: sed = 0 is not allowed"),
        (lambda p: p.update(runs={}), "params: runs = {} is not allowed"),
    ],
)
def test_an_edit_no_stage_reads_is_still_checked(project, edit, line):
    """A misspelt key in a section no stage reruns for, or no runs at all, stops `dvc repro`."""
    original = edited(project, edit)
    try:
        result = dvc_fails(project, "repro")
        assert f"error: {line}" in result.stderr
        assert "Running stage 'check'" in result.stdout
        assert "Running stage 'prepare" not in result.stdout
    finally:
        (project / "params.yaml").write_text(original)
        dvc(project, "repro")


def test_a_run_name_never_reaches_a_shell(project):
    """A run name with shell syntax is refused by the check before any command holding it runs."""
    marker = project / "marker"

    def inject(params):
        params["runs"]["x;touch marker;echo"] = params["runs"]["digits"]

    original = edited(project, inject)
    try:
        result = dvc_fails(project, "repro")
        assert "params: runs = 'x;touch marker;echo' is not allowed" in result.stderr
        assert not marker.exists()
        assert not (project / "data" / "params.ok").exists()  # so no stage after check can run
        (project / "data" / "params.ok").write_text("stale\n")  # as if it were left over
        result = dvc_fails(project, "repro", "--single-item", "prepare@x;touch marker;echo")
        assert not marker.exists()  # quoted: the stage gets the name as one argument
        assert "params: runs = 'x;touch marker;echo' is not allowed" in result.stderr
    finally:
        (project / "params.yaml").write_text(original)
        dvc(project, "repro")


def test_results_travel_through_a_dvc_remote(project, tmp_path):
    """What a collaborator does: push to a remote, clone afresh, pull, and find nothing to redo."""
    remote, clone = tmp_path / "remote", tmp_path / "clone"
    dvc(project, "remote", "add", "--force", "-d", "shared", str(remote))
    dvc(project, "push", "--run-cache")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "results"], cwd=project, check=True)
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    assert not (clone / "models" / "digits" / "model.pt").exists()  # models are not in git
    dvc(clone, "pull")
    assert cached_outputs(clone) == cached_outputs(project)
    assert (clone / "models" / "digits" / "model.pt").read_bytes() == (
        project / "models" / "digits" / "model.pt"
    ).read_bytes()
    assert json.loads(dvc(clone, "status", "--json")) == {}
    assert "Running stage" not in dvc(clone, "repro")


def test_a_resnet18_configuration_runs_as_an_experiment_of_its_run_alone(project, monkeypatch):
    """The README's ResNet-18 configuration (`dvc exp run -S '~runs.<other>' -S
    runs.<run>.arch=resnet18`) reproduces that run alone through every stage, ResNet-18's
    neuron being its stem's BatchNorm channel; the sweep reads it back as a group of that run."""
    from fragile_neurons.network.models import build_model
    from fragile_neurons.reporting.experiments import collect, flatten
    from fragile_neurons.reporting.sweep import summarise

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "baseline", "--allow-empty"], cwd=project, check=True)
    baseline = yaml.safe_load((project / "params.yaml").read_text())
    try:
        out = dvc(project, "exp", "run", "-n", "digits-rn18", "-S", "~runs.objects",
                  "-S", "runs.digits.arch=resnet18")  # fmt: skip
        ran = ran_stages(out)
        stages = ("train", "reference", "placebo", "attack", "scan", "label", "correlate",
                  "harden", "baseline", "evaluate", "publish")  # fmt: skip
        assert ran == {"check", *(f"{stage}@digits" for stage in stages)}  # not prepare
        assert list(yaml.safe_load((project / "params.yaml").read_text())["runs"]) == ["digits"]
        train, attack = read(project, "digits", "train"), read(project, "digits", "attack")
        net = build_model("resnet18", 1, 28, 10, [0.5], [0.5])
        assert train["parameters"] == sum(p.numel() for p in net.parameters())
        assert attack["layer"] == {"conv": "conv1", "neuron_module": "bn1", "neurons": 64}
        assert read(project, "digits", "scan")["neurons"] == 64
        assert read(project, "digits", "evaluate")["labels_resolved"] in (True, False)

        monkeypatch.chdir(project)
        members, left_out = collect()
        assert left_out == [] and len(members) == 2
        summary = summarise(members, flatten(baseline))
        assert [g["label"] for g in summary["groups"]] == [
            "runs.digits.arch=mnist_cnn", "runs.digits.arch=resnet18"
        ]  # fmt: skip
        assert list(summary["groups"][1]["runs"]) == ["digits"]
        assert summary["groups"][1]["members"][0]["name"] == "digits-rn18"
    finally:
        subprocess.run(["git", "reset", "-q", "--hard"], cwd=project, check=True)
        dvc(project, "checkout", "--force", "-q")
    assert json.loads(dvc(project, "status", "--json")) == {}


# --- a builder of one's own: runs.<name>.arch = 'archs.<module>:<function>' --------------------

BUILDER = '''"""A builder of one's own, as a user writes it (README: Your own architecture)."""

from torch import nn


def tiny_cnn(channels, size, classes):
    side = (size - 2) // 2
    return [
        ("conv1", nn.Conv2d(channels, 8, 3)),
        ("bn1", nn.BatchNorm2d(8)),
        ("pool1", nn.MaxPool2d(2)),
        ("relu1", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(8 * side * side, classes)),
    ]


def no_conv(channels, size, classes):
    return [("flatten", nn.Flatten()), ("fc", nn.Linear(channels * size * size, classes))]
'''
MINE = dict(TINY["runs"]["digits"], arch="archs.my_models:tiny_cnn")


@pytest.fixture(scope="module")
def custom_project(tmp_path_factory, synthetic_root):
    """One run, `mine`, of a builder in archs/my_models.py, reproduced."""
    repo = new_project(tmp_path_factory.mktemp("custom"), synthetic_root, {"mine": MINE})
    (repo / "archs" / "my_models.py").write_text(BUILDER)
    dvc(repo, "repro")
    return repo


def test_a_builder_of_ones_own_runs_through_every_stage(custom_project):
    for stage in ("data", "train", "attack", "scan", "label", "correlate", "harden", "evaluate"):
        assert (custom_project / "metrics" / "mine" / f"{stage}.json").is_file(), stage
    train, attack = read(custom_project, "mine", "train"), read(custom_project, "mine", "attack")
    assert train["parameters"] == 8 * 9 + 8 + 2 * 8 + 8 * 13 * 13 * 10 + 10  # tiny_cnn's
    assert attack["layer"] == {"conv": "conv1", "neuron_module": "bn1", "neurons": 8}
    assert "evaluate.fgsm_auc_plus_gain" in headline.read_folder(custom_project / "metrics/mine")
    assert not (custom_project / "archs" / "__pycache__").exists()
    assert json.loads(dvc(custom_project, "status", "--json")) == {}


def test_an_edited_builder_reruns_its_run(custom_project):
    builder = custom_project / "archs" / "my_models.py"
    try:
        builder.write_text(
            BUILDER.replace("nn.Conv2d(channels, 8, 3)", "nn.Conv2d(channels, 8, 3)  # edited")
        )
        dirty = set(json.loads(dvc(custom_project, "status", "--json")))
        stages = ("train", "reference", "placebo", "attack", "scan", "harden", "baseline",
                  "evaluate")  # fmt: skip
        assert dirty == {f"{stage}@mine" for stage in stages}  # all that build the model
    finally:
        builder.write_text(BUILDER)
    assert json.loads(dvc(custom_project, "status", "--json")) == {}


def set_arch(project: Path, arch: str) -> str:
    return edited(project, lambda params: params["runs"]["mine"].update(arch=arch))


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_malformed_builder_path_stops_at_the_check(custom_project):
    original = set_arch(custom_project, "my_models.tiny_cnn")
    try:
        result = dvc_fails(custom_project, "repro")
        assert error_lines(result) == [
            "error: params: runs.mine.arch = 'my_models.tiny_cnn' is not allowed; expected "
            "'mnist_cnn' or 'cifar_cnn' or 'resnet18' or a builder 'package.module:function' "
            "(e.g. 'archs.my_models:small_cnn')"
        ]
        assert "Running stage 'train@mine'" not in result.stdout
    finally:
        (custom_project / "params.yaml").write_text(original)
        dvc(custom_project, "repro")


@pytest.mark.parametrize(
    ("arch", "problem"),
    [
        ("archs.my_modles:tiny_cnn", "archs.my_modles does not import (ModuleNotFoundError"),
        ("archs.my_models:no_conv", "archs.my_models:no_conv(1, 28, 10) returned no nn.Conv2d"),
    ],
)
def test_a_builder_that_fails_stops_train_with_one_line(custom_project, arch, problem):
    original = set_arch(custom_project, arch)
    try:
        result = dvc_fails(custom_project, "repro")
        (line,) = error_lines(result)
        assert line.startswith(f"error: params: runs.mine.arch = {arch!r} is not allowed; ")
        assert problem in line
        assert "Running stage 'train@mine'" in result.stdout
        assert "Traceback" not in result.stderr
    finally:
        (custom_project / "params.yaml").write_text(original)
        dvc(custom_project, "repro")


def stage_processes(repo: Path, script: str) -> list[int]:
    """Pids of the processes that run `script` (e.g. stages/train.py) in `repo`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if any(part.endswith(script.encode()) for part in cmdline) and (
                os.readlink(proc / "cwd") == str(repo)
            ):
                state = (proc / "status").read_text()
                if "\nState:\tZ" not in state:
                    pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal")
@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_sigterm_to_dvc_mid_stage_stops_the_stage(tmp_path, synthetic_root, shell):
    """DVC killed by SIGTERM exits at once without stopping the stage it runs (with $SHELL dash,
    a shell stays between them): the stage must stop too, and write nothing afterwards outside
    DVC's lock. DVC deleted the stage's outputs before running it; they stay absent."""
    import signal
    import time

    runs = {"digits": dict(TINY["runs"]["digits"], train=dict(TINY["runs"]["digits"]["train"],
                                                              epochs=2000))}  # fmt: skip
    repo = new_project(tmp_path, synthetic_root, runs)
    env = dict(os.environ, SHELL=shell,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dvc"), "repro", "train@digits"],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    curves = repo / "data/views/digits/train/train/metrics.json"  # DVCLive's, after an epoch
    try:
        deadline = time.monotonic() + 120
        while not curves.exists():  # an epoch done: training is under way
            assert process.poll() is None and time.monotonic() < deadline, "train never started"
            time.sleep(0.1)
        assert stage_processes(repo, "stages/train.py")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while stage_processes(repo, "stages/train.py"):
            assert time.monotonic() < deadline, "the stage outlived DVC"
            time.sleep(0.1)
    finally:
        process.kill()
        for pid in stage_processes(repo, "stages/train.py"):
            os.kill(pid, signal.SIGKILL)
    time.sleep(1)  # a stage that had gone on could write now: none does
    assert not (repo / "models" / "digits" / "model.pt").exists()
    assert not (repo / "data/views/digits/train/train.json").exists()  # the curves are, per epoch
    assert not (repo / "metrics" / "digits" / "train").exists()
    assert not list(repo.rglob("*.tmp"))
