"""Fetch the raw datasets that the runs of params.yaml read, before `dvc repro`.

`prepare` depends on `data.root` in dvc.yaml (a changed raw file reruns it), and DVC refuses to
run a stage whose dependency is missing, so on a fresh machine the raw files must be there first:
`python -m fragile_neurons.interface.fetch` downloads each run's dataset into `data.root` through
torchvision when it is absent and `data.download` is true (`make repro` does this). It checks
nothing beyond presence: `prepare` compares every file's md5 with the original or a pin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..running.config import load_params
from ..running.errors import DataError, ParamError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fragile_neurons.interface.fetch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", default="params.yaml", help="the params file")
    args = parser.parse_args(argv)
    if not Path(args.params).is_file():
        parser.error(f"--params {args.params}: no such file")
    try:
        params = load_params(args.params)
        from ..datasets.files import (
            ensure_files,  # torchvision: imported once the params are known good
        )

        root, download = Path(params["data"]["root"]), params["data"]["download"]
        for dataset in sorted({run["dataset"] for run in params["runs"].values()}):
            ensure_files(dataset, root, download)
    except (ParamError, DataError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
