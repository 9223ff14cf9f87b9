"""The `fragile-neurons` command: `check` validates params.yaml and `dvc exp run -S` overrides
with the stages' own messages before anything is queued."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = Path(sys.executable).parent / "fragile-neurons"


def fragile_neurons(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMMAND), *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def project(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["runs.mnist.train.epochs=0"], "runs.mnist.train.epochs = 0 is not allowed"),
        (["seed=0,1,-1"], "seed = -1 is not allowed; expected an integer >= 0"),
        (["scan.layr=1"], "scan.layr = 1 is not allowed; expected no such key; known keys"),
        (["+scan.layr=1"], "scan.layr = 1 is not allowed; expected no such key"),
        (["seed=["], "overrides DVC accepts"),
    ],
)
def test_check_refuses_a_bad_override_with_the_stages_message(project, overrides, line):
    args = [a for o in overrides for a in ("-S", o)]
    result = fragile_neurons("check", *args, cwd=project)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and line in result.stderr
    assert result.stderr.startswith("error: params: ")
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]  # nothing written


def test_check_expands_a_sweep_as_dvc_exp_run_would(project):
    result = fragile_neurons("check", "-S", "seed=0,1,2", "-S", "harden.compress=0.25", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "3 run(s) checked" in result.stdout
    assert (project / "params.yaml").read_bytes() == (ROOT / "params.yaml").read_bytes()


def test_a_long_sweep_is_checked_in_time_linear_in_its_length(project):
    """Issue 35: the overrides are parsed once and each combination applied in memory, so a
    sweep of 10,000 seeds (allowed by --max-experiments) takes seconds, not minutes; and a list
    of 10,000 values is refused by a linear scan before Hydra's parser (whose time grows with
    the square of a list's length) sees it. The bounds are generous (the machine may be busy)."""
    start = time.monotonic()
    sweep = ("--max-experiments", "10000", "-S", "seed=range(0,10000)")
    result = fragile_neurons("check", *sweep, cwd=project)
    assert result.returncode == 0, result.stderr
    assert "10000 run(s) checked" in result.stdout
    assert time.monotonic() - start < 120
    start = time.monotonic()
    long_list = "seed=[" + ",".join(str(i) for i in range(10_000)) + "]"
    result = fragile_neurons("check", "-S", long_list, cwd=project)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "lists and mappings of at most 1000 values" in result.stderr
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=3", "harden.compress=0.25"],
        ["runs.mnist.attack.epsilons=[0,'8/255',0.1]"],
        ["runs.mnist.train={epochs: 2, batch_size: 64, lr: 1e-3, weight_decay: 0, augment: false}"],
        ["scan.layer=conv1", "scan.samples=null"],
        ["data.root='data/raw dir'", "seed=5", "seed=6"],
    ],
)
def test_overrides_applied_in_memory_give_what_dvc_writes(project, overrides):
    """What the check validates is what DVC's apply_overrides writes into params.yaml (and the
    stages then read)."""
    from dvc.utils.hydra import apply_overrides

    from fragile_neurons.pipeline.check import with_overrides
    from fragile_neurons.running.config import load_params

    (checked,) = with_overrides(project / "params.yaml", overrides)
    apply_overrides(project / "params.yaml", overrides)
    assert checked == load_params(project / "params.yaml")


def test_without_overrides_check_is_the_check_stage(project):
    result = fragile_neurons("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert (project / "data" / "params.ok").is_file()


def test_an_unknown_command_is_one_line_naming_the_commands(project):
    result = fragile_neurons("chekc", cwd=project)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: unknown command 'chekc'; the commands are check, report, sweep "
        "(fragile-neurons --help)\n"
    )


def test_help_and_version_go_to_stdout(project):
    result = fragile_neurons("--help", cwd=project)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: fragile-neurons [-h] [--version] <command> ...")
    for command in ("check", "report", "sweep"):
        assert f"    {command} " in result.stdout
    version = fragile_neurons("--version", cwd=project)
    assert version.returncode == 0 and version.stdout.startswith("fragile-neurons 0.")


@pytest.mark.parametrize("command", ["check", "report", "sweep"])
def test_a_command_s_usage_names_the_command(project, command):
    result = fragile_neurons(command, "--help", cwd=project)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: fragile-neurons {command} ")
