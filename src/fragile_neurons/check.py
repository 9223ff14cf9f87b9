"""check: all of params.yaml, before any other stage runs.

Every other stage of dvc.yaml depends on this stage's output, so `dvc repro` (and `dvc exp run`)
runs it first whenever params.yaml changed. A misspelt key in a section no stage reads, an empty
`runs`, or a run name that is not a plain name stops the pipeline with one line and exit status
2, before any command with a run name in it runs. The output's content never changes, so a
passing check reruns nothing downstream.
"""

from __future__ import annotations

import argparse
import sys

from . import paths
from .config import load_params
from .errors import ParamError
from .io import write_with

PASSED = "params.yaml passed the check of fragile_neurons.config\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file")
    args = parser.parse_args(argv)
    try:
        load_params(args.params)
    except ParamError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    write_with(paths.params_checked(), lambda p: p.write_text(PASSED))


if __name__ == "__main__":
    main()
