"""The frame every stage script shares: `python stages/<stage>.py <run>`.

It reads and validates params.yaml before any work (`config`), sets torch's threads, seeds
everything and picks the device (`runtime`: what shapes results lives there, so that every stage
depends on it), and turns a bad setting or missing data into one line on stderr and exit status 2.
The stage's wall-clock time goes to stderr, never into an output, so a rerun writes the same
bytes. Nothing here shapes a result: it is the one package module no stage lists in dvc.yaml
besides `errors`, `paths` and `__init__` (tests/test_dvc_deps.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .config import get_run, load_params
from .errors import DataError, ParamError
from .runtime import (
    NONDETERMINISTIC,
    describe,
    keep_freed_memory,
    seed_everything,
    select_device,
    use_threads,
    watch_nondeterminism,
)


@dataclass
class Context:
    name: str  # the run's name, a key of `runs`
    run: dict  # that run's settings
    params: dict  # all of params.yaml, validated
    device: torch.device
    generator: torch.Generator  # seeded from params `seed`
    nondeterministic: list[str] = field(default_factory=list)  # ops that ran without one
    stage: str = "stage"  # the stage's name, for messages

    def runtime(self) -> dict:
        """Where the stage ran, for its metrics: the device type, torch's CPU threads (results are
        exact for a given count), and the operations that ran without a deterministic kernel
        (empty: a rerun writes the same bytes)."""
        return describe(self.device, self.nondeterministic)

    bar: tqdm | None = None

    def progress(self, step: str) -> None:
        """A step done: a tqdm progress line on stderr, on a terminal only (tqdm's disable=None),
        so logs and captured output stay quiet; never in an output."""
        if self.bar is None:
            self.bar = tqdm(desc=f"{self.stage} {self.name}", unit="step", disable=None)
        self.bar.set_postfix_str(step, refresh=False)
        self.bar.update(1)


def run_stage(body: Callable[[Context], None], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=body.__doc__)
    parser.add_argument("run", help="a key of `runs` in params.yaml")
    parser.add_argument("--params", default="params.yaml", help="the params file")
    args = parser.parse_args(argv)
    stage = Path(sys.argv[0]).stem if argv is None else body.__name__
    keep_freed_memory()
    try:
        params = load_params(args.params)
        run = get_run(params, args.run)
        use_threads(params["threads"])
        device = select_device(params["device"])
        generator = seed_everything(params["seed"], device, params["deterministic"])
        start = time.perf_counter()
        with watch_nondeterminism() as ops:
            ctx = Context(args.run, run, params, device, generator, ops, stage)
            try:
                body(ctx)
            except RuntimeError as err:  # `deterministic: strict` met an op without such a kernel
                if NONDETERMINISTIC not in str(err):
                    raise
                op = str(err).split(NONDETERMINISTIC)[0].strip()
                allowed = f"'warn': {op} has no deterministic kernel on {device}"
                raise ParamError("deterministic", "strict", allowed) from None
        if ctx.bar is not None:
            ctx.bar.close()
        print(
            f"{stage} {args.run}: {time.perf_counter() - start:.1f} s on {device}", file=sys.stderr
        )
    except (ParamError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
