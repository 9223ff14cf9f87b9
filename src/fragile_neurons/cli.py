"""The `fragile-neurons` command (a console script of the package):

fragile-neurons check [-S key=value ...]   validate params.yaml and overrides, queue nothing
fragile-neurons report [--readme FILE]     the README's results section, from committed files
fragile-neurons sweep [--seeds | --by KEY] a sweep's headlines: mean and 95% CI over seeds
"""

from __future__ import annotations

import sys

COMMANDS = {
    "check": "fragile_neurons.check",
    "report": "fragile_neurons.report",
    "sweep": "fragile_neurons.sweep",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    import importlib

    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
