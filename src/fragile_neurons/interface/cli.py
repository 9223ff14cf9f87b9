"""The `fragile-neurons` command (a console script of the package, and `python -m
fragile_neurons`): a subcommand per module, each with its own `--help`; help and the version go to
stdout; a bad command line is argparse's usage line and one `fragile-neurons ...: error:` line on
stderr, and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module whose main(argv) runs it, what it does)
COMMANDS = {
    "check": (
        "fragile_neurons.pipeline.check",
        "validate params.yaml and -S overrides, queue nothing",
    ),
    "report": (
        "fragile_neurons.reporting.report",
        "the README's findings and the full results, from files",
    ),
    "sweep": (
        "fragile_neurons.reporting.sweep",
        "a sweep's headlines over seeds, from DVC experiments",
    ),
}


def version() -> str:
    from .. import __version__

    return __version__


def parser() -> argparse.ArgumentParser:
    """The top level, for --help and --version; each command parses its own arguments."""
    top = argparse.ArgumentParser(
        prog="fragile-neurons",
        description="Fragile neurons: the pipeline's command-line tools (the pipeline itself "
        "runs with `dvc repro`).",
        epilog="`fragile-neurons <command> --help` describes a command.",
    )
    top.add_argument("--version", action="version", version=f"fragile-neurons {version()}")
    commands = top.add_subparsers(title="commands", metavar="<command>")
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return top


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = f"the commands are {', '.join(COMMANDS)} (fragile-neurons --help)"
    if not argv:
        parser().error(f"no command; {commands}")
    if argv[0] in ("-h", "--help", "--version"):
        parser().parse_args(argv[:1])  # prints to stdout, exits 0
        return
    if argv[0].startswith("-"):
        parser().error(f"unknown option {argv[0]!r}; the options are -h, --help and --version")
    if argv[0] not in COMMANDS:
        parser().error(f"unknown command {argv[0]!r}; {commands}")
    module = importlib.import_module(COMMANDS[argv[0]][0])
    if argv[0] == "check":  # the command, not the stage: errors as argparse gives them
        module.main(argv[1:], command=True)
    else:
        module.main(argv[1:])


if __name__ == "__main__":
    main()
