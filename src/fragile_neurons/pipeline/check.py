"""check: all of params.yaml, before any other stage runs.

Every other stage of dvc.yaml depends on this stage's output, so `dvc repro` (and `dvc exp run`)
runs it first whenever params.yaml changed. A misspelt key in a section no stage reads, an empty
`runs`, or a run name that is not a plain name stops the pipeline with one line and exit status
2, before any command with a run name in it runs. The output's content never changes, so a
passing check reruns nothing downstream.

`fragile-neurons check -S key=value ...` checks `dvc exp run -S` overrides the same way before
anything is queued: the overrides are parsed once by Hydra's parser, as DVC parses them (Hydra's
override grammar, sweeps such as `seed=0,1,2` expanded into every combination), and applied by
Hydra's code, as DVC's apply_overrides applies them, to params.yaml's values in memory. A sweep's
experiments are counted first, without expanding it: more than MAX_EXPERIMENTS (each a whole
pipeline run) need `--max-experiments N`, since `dvc exp run -S` itself expands and queues any
number of them without asking.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..running.config import MAX_EPSILONS, MAX_RUNS, Integer, load_params
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


# The most values one list or mapping of an override may hold: no key of params.yaml takes more
# (at most MAX_EPSILONS epsilons, MAX_RUNS runs), and Hydra's parser takes time growing with
# the square of a list's length (10,000 values: tens of seconds), so a longer one is refused by
# a linear scan of the text before Hydra sees it. Sweeps (`seed=0,1,2`, range(...)) are not
# lists: their values are counted against --max-experiments.
MAX_OVERRIDE_ITEMS = 1000


def _items(text: str) -> int:
    """The most values any one `[...]` or `{...}` of an override holds (commas counted outside
    quotes), in one pass over its text."""
    most, open_, quote, escaped = 0, [], None, False
    for char in text:
        if quote:
            if char == quote and not escaped:
                quote = None
            escaped = not escaped and char == "\\"
        elif char in "'\"":
            quote = char
        elif char in "[{":
            open_.append(1)
        elif char in "]}" and open_:
            most = max(most, open_.pop())
        elif char == "," and open_:
            open_[-1] += 1
    return max([most, *open_])


def _parse(overrides: Sequence[str]) -> list:
    """Hydra's Override objects of `overrides`, parsed once, as DVC parses them (ParamError for
    text Hydra's grammar refuses, a list or mapping of more than MAX_OVERRIDE_ITEMS values, or a
    glob sweep, which DVC refuses too)."""
    from dvc.utils.hydra import to_hydra_overrides
    from hydra.core.override_parser.types import ValueType

    for override in overrides:
        if _items(override) > MAX_OVERRIDE_ITEMS:
            raise ParamError(
                "-S",
                override,
                f"lists and mappings of at most {MAX_OVERRIDE_ITEMS} values (no key of "
                f"params.yaml takes more: at most {MAX_EPSILONS} epsilons, {MAX_RUNS} runs)",
            )
    try:
        parsed = to_hydra_overrides(list(overrides))
    except Exception as err:  # Hydra's grammar errors come in several types
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ParamError("-S", " ".join(overrides), f"overrides DVC accepts ({cause})") from None
    for override in parsed:
        if override.value_type == ValueType.GLOB_CHOICE_SWEEP or (
            override.is_sweep_override() and not override.is_discrete_sweep()
        ):
            raise ParamError(
                "-S", override.input_line, "overrides DVC accepts (a glob or interval sweep is not)"
            )
    return parsed


def count_experiments(parsed: Sequence, limit: int) -> int:
    """How many experiments `dvc exp run -S` makes of the parsed overrides (the product of each
    sweep's values, as DVC's get_hydra_sweeps expands them), counting each sweep no further than
    `limit` + 1 values: a result above `limit` means "more than `limit`"."""
    import itertools

    count = 1
    for override in parsed:
        if override.is_sweep_override():
            values = sum(1 for _ in itertools.islice(override.sweep_iterator(), limit + 1))
            count = min(count * values, limit + 1)
    return count


def _choices(parsed: Sequence) -> list[list]:
    """Per override, its values as Override objects, as DVC's get_hydra_sweeps splits them
    (BasicSweeper.split_arguments): a sweep's values, each `key=value` (the values of one sweep
    parsed together, once), or the override itself."""
    from dvc.utils.hydra import to_hydra_overrides

    choices = []
    for override in parsed:
        if not override.is_sweep_override():
            choices.append([override])
            continue
        key = override.get_key_element()
        choices.append(to_hydra_overrides([f"{key}={v}" for v in override.sweep_string_iterator()]))
    return choices


def _plain(value) -> bool:
    """A value Hydra sets as it is: a number, string (without an interpolation), bool or null,
    or a list of them."""
    if isinstance(value, list):
        return all(_plain(v) and not isinstance(v, list) for v in value)
    if isinstance(value, str):
        return "${" not in value
    return value is None or isinstance(value, bool | int | float)


def _set_plain(data: dict, override) -> bool:
    """Apply `override` to `data` in place where Hydra would just replace the value of a key
    that exists (a plain `key=value` of a plain value); return whether it did. Anything else
    (a new key, a deletion, a mapping merged in, an interpolation) goes through Hydra."""
    from hydra.core.override_parser.types import OverrideType

    if override.type != OverrideType.CHANGE or override.package or override.is_sweep_override():
        return False
    value = override.value()
    if not _plain(value):
        return False
    *parents, last = override.key_or_group.split(".")
    node = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        return False
    node[last] = value
    return True


def _apply(params: dict, overrides: list) -> dict:
    """A copy of `params` with parsed overrides applied as DVC's apply_overrides applies them
    (Hydra's own code on an OmegaConf copy, merged back), in memory. A key params.yaml lacks is
    added (Hydra's `++`), so that the schema refuses it with what is allowed, not Hydra's advice
    to add it with `+`; an override Hydra refuses is a ParamError naming it."""
    import copy
    import dataclasses

    from dvc.utils.collections import merge_dicts, remove_missing_keys, to_omegaconf
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf import OmegaConf

    def applied(overrides: list) -> dict:
        data = copy.deepcopy(params)
        rest = list(overrides)
        while rest and _set_plain(data, rest[0]):  # the common case, without OmegaConf's cost
            rest.pop(0)
        if not rest:
            return data
        overrides = rest
        new = OmegaConf.create(to_omegaconf(data), flags={"allow_objects": True})
        OmegaConf.set_struct(new, True)
        ConfigLoaderImpl._apply_overrides_to_config(overrides, new)
        new = OmegaConf.to_object(new)
        merge_dicts(data, new)
        remove_missing_keys(data, new)
        return data

    errors = (ConfigCompositionException, OverrideParseException)
    try:
        try:
            return applied(overrides)
        except errors:
            forced = [
                dataclasses.replace(o, type=OverrideType.FORCE_ADD)
                if o.type == OverrideType.CHANGE
                else o
                for o in overrides
            ]
            return applied(forced)
    except errors as err:
        cause = " ".join(str(err).split())
        given = " ".join(o.input_line or o.key_or_group for o in overrides)
        raise ParamError("-S", given, f"keys of params.yaml ({cause})") from None


def with_overrides(
    params: str | Path, overrides: Sequence[str], max_experiments: int = MAX_EXPERIMENTS
) -> list[dict]:
    """The validated params of every combination that `dvc exp run -S <overrides>` would run
    (one when no override sweeps). ParamError for an override DVC would refuse, a sweep of more
    than `max_experiments` combinations (counted before anything is expanded), or a value the
    schema refuses.

    The overrides are parsed once (Hydra's parser), and each combination is applied to the
    params in memory by Hydra's own code, as DVC applies them, and validated: the cost grows
    with the overrides' length and the number of combinations, not with their product."""
    if not overrides:
        return [load_params(params)]
    import itertools

    from ..running.config import validate

    base = read_yaml(params)  # a file DVC's own parser should not see (aliases, size) stops here
    given = " ".join(overrides)
    parsed = _parse(overrides)
    if count_experiments(parsed, max_experiments) > max_experiments:
        raise ParamError(
            "-S",
            given,
            f"a sweep of at most {max_experiments} experiments (this one has more; each is a "
            "whole pipeline run, and `dvc exp run -S` queues them all without asking): pass "
            "--max-experiments N to allow N",
        )
    if not isinstance(base, dict):
        return [load_params(params)]  # the schema's one line about the file itself
    return [
        validate(_apply(base, list(combination)))
        for combination in itertools.product(*_choices(parsed))
    ]


def _integer(text):
    """A command-line number as an int where it is one (else as given, for the rule to refuse)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return text


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
