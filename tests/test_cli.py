"""The `fragile-neurons` command: `check` validates params.yaml and `dvc exp run -S` overrides
with the stages' own messages before anything is queued; every bad command line is argparse's
usage and one error line, exit status 2; `python -m fragile_neurons` is the same command."""

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


def argparse_error(result: subprocess.CompletedProcess, prog: str) -> str:
    """The message of argparse's refusal: exit status 2, nothing on stdout, and on stderr the
    usage (`usage: <prog> ...`, wrapped over indented lines) then exactly one line
    `<prog>: error: <message>`; fails the test otherwise."""
    assert result.returncode == 2, result
    assert result.stdout == "", result.stdout
    *usage, line = result.stderr.splitlines()
    assert usage and usage[0].startswith(f"usage: {prog} "), result.stderr
    assert all(u.startswith(" ") for u in usage[1:]), result.stderr  # the usage's wrapped lines
    assert line.startswith(f"{prog}: error: "), result.stderr
    return line.removeprefix(f"{prog}: error: ")


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
    message = argparse_error(result, "fragile-neurons check")
    assert message.startswith("params: ") and line in message
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
    lines = result.stderr.splitlines()  # argparse's usage, then one error line
    assert result.returncode == 2 and lines[0].startswith("usage: fragile-neurons check")
    assert lines[-1].startswith("fragile-neurons check: error: params: -S = ")
    assert "lists and mappings of at most 1000 values" in lines[-1]
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


def test_without_overrides_check_is_the_check_stage_and_says_what_it_checked(project):
    result = fragile_neurons("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert (project / "data" / "params.ok").is_file()
    assert result.stdout == (
        "params.yaml: every key, type and range passed the check; runs: mnist, cifar10; "
        "wrote data/params.ok\n"
    )


def test_the_check_stage_keeps_its_one_line_error(project):
    """`python stages/check.py`, as dvc.yaml runs it: a refusal is one `error:` line, no usage."""
    text = (project / "params.yaml").read_text().replace("seed: 0", "seed: -1", 1)
    (project / "params.yaml").write_text(text)
    stage = [sys.executable, str(ROOT / "stages" / "check.py")]
    result = subprocess.run(stage, cwd=project, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: params: seed = -1 is not allowed")
    assert result.stderr.count("\n") == 1


# (arguments, the prog that refuses them, what its message says, a file the case needs)
BAD_COMMAND_LINES = [
    ((), "fragile-neurons", "no command; the commands are check, report, sweep", None),
    (("-V",), "fragile-neurons", "unknown option '-V'; the options are -h, --help", None),
    (("--bogus", "check"), "fragile-neurons", "unknown option '--bogus'", None),
    (("chekc",), "fragile-neurons", "unknown command 'chekc'; the commands are check", None),
    (("check", "--params", "missing.yaml"), "fragile-neurons check",
     "--params missing.yaml: no such file", None),
    (("check", "-S", "seed=-1"), "fragile-neurons check", "params: seed = -1 is not allowed", None),
    (("check", "--max-experiments", "0"), "fragile-neurons check",
     "params: --max-experiments = 0 is not allowed", None),
    (("check", "--bogus"), "fragile-neurons check", "unrecognized arguments: --bogus", None),
    (("report", "--params", "missing.yaml"), "fragile-neurons report",
     "--params missing.yaml: no such file", None),
    (("report", "--check"), "fragile-neurons report", "--check needs --readme FILE", None),
    (("report", "--readme", "NOTES.md"), "fragile-neurons report",
     "NOTES.md: expected one line", ("NOTES.md", "no markers\n")),
    (("report", "--results", "nowhere/results.md"), "fragile-neurons report",
     "nowhere/results.md: cannot be read", None),
    (("sweep", "--seeds", "--by", "seed"), "fragile-neurons sweep",
     "argument --by: not allowed with argument --seeds", None),
    (("sweep", "--from", "missing.json"), "fragile-neurons sweep",
     "--from missing.json: cannot be read", None),
    (("sweep", "--seeds"), "fragile-neurons sweep", "HEAD is not a commit here", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "prog", "message", "file"),
    BAD_COMMAND_LINES,
    ids=[" ".join(case[0]) or "no command" for case in BAD_COMMAND_LINES],
)
def test_a_bad_command_line_is_argparse_s_usage_and_one_error_line(
    tmp_path, args, prog, message, file
):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    if file:
        (tmp_path / file[0]).write_text(file[1])
    assert message in argparse_error(fragile_neurons(*args, cwd=tmp_path), prog)


@pytest.mark.parametrize(
    ("command", "prog"),
    [
        (["-m", "fragile_neurons"], "fragile-neurons"),
        (
            ["-m", "fragile_neurons.interface.fetch", "--params", "missing.yaml"],
            "python -m fragile_neurons.interface.fetch",
        ),
    ],
)
def test_python_m_refuses_as_the_command_does(tmp_path, command, prog):
    result = subprocess.run(
        [sys.executable, *command], cwd=tmp_path, capture_output=True, text=True
    )
    assert argparse_error(result, prog)


def test_python_m_fragile_neurons_is_the_command(project):
    result = subprocess.run(
        [sys.executable, "-m", "fragile_neurons", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("fragile-neurons 0.")


def test_help_texts_are_whole(project):
    """`report --help` gives its whole description (the first line of the module's docstring
    used to cut a sentence in two); so do the other commands'."""
    from fragile_neurons.pipeline import check
    from fragile_neurons.reporting import report, sweep

    for command, module in (("report", report), ("sweep", sweep), ("check", check)):
        result = fragile_neurons(command, "--help", cwd=project)
        assert result.returncode == 0 and result.stderr == ""
        first = module.__doc__.split("\n\n")[0]
        assert " ".join(first.split()) in " ".join(result.stdout.split()), command


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
