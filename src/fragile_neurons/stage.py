"""The frame every stage script shares: `python stages/<stage>.py <run>`.

It reads and validates params.yaml before any work, seeds everything, picks the device, and turns
a bad setting or missing data into one line on stderr and exit status 2. The stage's wall-clock
time goes to stderr, never into an output, so a rerun writes the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import get_run, load_params
from .errors import DataError, ParamError
from .runtime import keep_freed_memory, seed_everything, select_device


@dataclass
class Context:
    name: str  # the run's name, a key of `runs`
    run: dict  # that run's settings
    params: dict  # all of params.yaml, validated
    device: torch.device
    generator: torch.Generator  # seeded from params `seed`


def run_stage(body: Callable[[Context], None], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=body.__doc__)
    parser.add_argument("run", help="a key of `runs` in params.yaml")
    parser.add_argument("--params", default="params.yaml", help="the params file")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        params = load_params(args.params)
        run = get_run(params, args.run)
        device = select_device(params["device"])
        generator = seed_everything(params["seed"], device)
        start = time.perf_counter()
        body(Context(args.run, run, params, device, generator))
        stage = Path(sys.argv[0]).stem if argv is None else body.__name__
        print(
            f"{stage} {args.run}: {time.perf_counter() - start:.1f} s on {device}", file=sys.stderr
        )
    except (ParamError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
