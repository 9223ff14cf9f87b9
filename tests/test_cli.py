"""The `fragile-neurons` command: `check` validates params.yaml and `dvc exp run -S` overrides
with the stages' own messages before anything is queued."""

import shutil
import subprocess
import sys
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
