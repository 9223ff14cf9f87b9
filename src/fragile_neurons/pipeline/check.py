"""check: all of params.yaml, before any other stage runs.

Every other stage of dvc.yaml depends on this stage's output, so `dvc repro` (and `dvc exp run`)
runs it first whenever params.yaml changed. A misspelt key in a section no stage reads, an empty
`runs`, or a run name that is not a plain name stops the pipeline with one line and exit status
2, before any command with a run name in it runs. The output's content never changes, so a
passing check reruns nothing downstream.

`fragile-neurons check -S key=value ...` checks `dvc exp run -S` overrides the same way before
anything is queued: the overrides are applied by DVC's own code (Hydra's override grammar,
sweeps such as `seed=0,1,2` expanded into every combination) to a copy of params.yaml. A sweep's
experiments are counted first, without expanding it: more than MAX_EXPERIMENTS (each a whole
pipeline run) need `--max-experiments N`, since `dvc exp run -S` itself expands and queues any
number of them without asking.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..running.config import Integer, load_params
from ..running.errors import ParamError
from ..running.yaml_file import read_yaml
from ..storage import paths
from ..storage.io import write_with

# The check stage's output, which every other stage depends on: constant, so a passing check
# reruns nothing downstream (its words predate the package's layout; changing them would rerun
# every stage of every run).
PASSED = "params.yaml passed the check of fragile_neurons.config\n"
PER_RUN = False  # the stage runs once for all of params.yaml (running/stage.py)
MAX_EXPERIMENTS = 100  # a sweep of more needs --max-experiments


def count_experiments(overrides: Sequence[str], limit: int) -> int:
    """How many experiments `dvc exp run -S <overrides>` makes (the product of each sweep's
    values, as DVC's get_hydra_sweeps expands them), counting each sweep no further than
    `limit` + 1 values: a result above `limit` means "more than `limit`"."""
    import itertools

    from dvc.utils.hydra import to_hydra_overrides

    count = 1
    for override in to_hydra_overrides(list(overrides)):
        if override.is_sweep_override():
            values = sum(1 for _ in itertools.islice(override.sweep_iterator(), limit + 1))
            count = min(count * values, limit + 1)
    return count


def with_overrides(
    params: str | Path, overrides: Sequence[str], max_experiments: int = MAX_EXPERIMENTS
) -> list[dict]:
    """The validated params of every combination that `dvc exp run -S <overrides>` would run
    (one when no override sweeps). ParamError for an override DVC would refuse, a sweep of more
    than `max_experiments` combinations (counted before anything is expanded), or a value the
    schema refuses."""
    if not overrides:
        return [load_params(params)]
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

    read_yaml(params)  # a file DVC's own parser should not see (aliases, size) stops here
    given = " ".join(overrides)
    try:
        count = count_experiments(overrides, max_experiments)
        if count > max_experiments:
            raise ParamError(
                "-S",
                given,
                f"a sweep of at most {max_experiments} experiments (this one has more; each is a "
                "whole pipeline run, and `dvc exp run -S` queues them all without asking): pass "
                "--max-experiments N to allow N",
            )
        combinations = get_hydra_sweeps({"params.yaml": list(overrides)})
    except ParamError:
        raise
    except Exception as err:  # Hydra's grammar errors come in several types
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ParamError("-S", given, f"overrides DVC accepts ({cause})") from None
    checked = []
    with tempfile.TemporaryDirectory() as tmp:
        for combination in combinations:
            copy = Path(tmp) / "params.yaml"
            shutil.copyfile(params, copy)
            try:
                try:
                    apply_overrides(copy, combination["params.yaml"])
                except InvalidArgumentError:
                    # a key params.yaml lacks: added (Hydra's `++`), so that the check below
                    # refuses it with what is allowed, not Hydra's advice to add it with `+`
                    shutil.copyfile(params, copy)
                    apply_overrides(copy, [_forced(o) for o in combination["params.yaml"]])
            except InvalidArgumentError as err:
                cause = " ".join(str(err.__cause__ or err).split())
                given = " ".join(combination["params.yaml"])
                raise ParamError("-S", given, f"keys of params.yaml ({cause})") from None
            checked.append(load_params(copy))
    return checked


def _integer(text):
    """A command-line number as an int where it is one (else as given, for the rule to refuse)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return text


def _forced(override: str) -> str:
    """`key=value` as Hydra's add-or-override `++key=value`; `+`, `++` and `~` ones unchanged."""
    return override if override.startswith(("+", "~")) else f"++{override}"


# --- the stage (stages/check.py): the frame has loaded and validated params.yaml already ------


class Settings:
    """The check stage reads all of params.yaml; the frame's `load_params` checked it."""

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        return cls()


def load(ctx, settings: Settings) -> None:
    return None


def run(inputs: None, settings: Settings, progress=None) -> str:
    return PASSED


def write(ctx, outputs: str) -> None:
    """data/params.ok."""
    write_with(paths.params_checked(), lambda p: p.write_text(outputs))


# --- the command `fragile-neurons check` -----------------------------------------------------


def main(argv: list[str] | None = None, command: bool = False) -> None:
    """`python -m fragile_neurons.pipeline.check` (a refusal is one `error:` line) or, with
    `command`, `fragile-neurons check` (a refusal is argparse's usage and error lines); without
    overrides it also writes the check stage's output."""
    parser = argparse.ArgumentParser(
        prog="fragile-neurons check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", default="params.yaml", help="the params file")
    parser.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override as `dvc exp run -S` takes it (only checked, nothing is written)",
    )
    parser.add_argument(
        "--max-experiments",
        default=MAX_EXPERIMENTS,
        metavar="N",
        help=f"the most experiments a sweep of -S may make (default {MAX_EXPERIMENTS})",
    )
    args = parser.parse_args(argv)
    if command and not Path(args.params).is_file():
        parser.error(f"--params {args.params}: no such file")
    try:
        limit = Integer(1)("--max-experiments", _integer(args.max_experiments))
        combinations = with_overrides(args.params, args.overrides, limit)
    except ParamError as err:
        if command:
            parser.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.overrides:
        print(f"{args.params} with {' '.join(args.overrides)}: {len(combinations)} run(s) checked")
    else:
        write(None, PASSED)
        runs = combinations[0]["runs"]
        print(f"{args.params}: every key, type and range passed the check; runs: "
              f"{', '.join(runs)}; wrote {paths.params_checked()}")  # fmt: skip


if __name__ == "__main__":
    main()
