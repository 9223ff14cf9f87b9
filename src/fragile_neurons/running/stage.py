"""The frame every stage script shares: `python stages/<stage>.py <run>` runs one stage module of
`fragile_neurons.pipeline` through the contract every stage module keeps (docs/architecture.md):

    settings = module.Settings.from_params(params, name)  # what the stage reads of params.yaml
    inputs = module.load(ctx, settings)                    # the records and checkpoints it reads
    outputs = module.run(inputs, settings, progress)       # the computation: no file touched
    module.write(ctx, outputs)                             # its records, metrics and plots

It reads and validates params.yaml before any work (`config`), sets torch's threads, seeds
everything and picks the device (`runtime`: what shapes results lives there, so that every stage
depends on it), and turns a bad setting or missing data into one line on stderr and exit status 2.
The stage's wall-clock time goes to stderr, never into an output, so a rerun writes the same
bytes. `progress(step)` is a tqdm line on a terminal, or what the module's own `watch(ctx)`
yields (train's DVCLive curves, written after every epoch). A module with `PER_RUN = False` (check)
runs once for all of params.yaml, without a run's name and without importing torch; one with
`TORCH = False` (publish) runs for a run without importing torch. Nothing here
shapes a result: it is the one package module no stage lists in dvc.yaml besides `errors`, `paths`
and `__init__` (tests/test_dvc_deps.py).

Signals: a stage stops when its parent dies (on Linux the kernel sends it SIGTERM), or DVC behind
a shell that stayed (a watcher thread: DVC killed mid-stage leaves no stage writing outputs
afterwards, outside DVC's lock), and SIGTERM, SIGINT or
SIGHUP stop it with one line and exit status 128 + the signal's number, after removing the
temporary file of a write in progress (every output is written to a temporary file and renamed,
so each output is either whole or as it was). SIGXFSZ is ignored, so a write beyond a file-size
limit fails with EFBIG, which io.py reports as one line naming the file.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import origin
from .config import get_run, load_params
from .errors import DataError, ParamError

if TYPE_CHECKING:
    import torch


@dataclass
class Context:
    """The run a stage runs for: its name and settings, where it runs, and what it reports."""

    name: str  # the run's name, a key of `runs`
    run: dict  # that run's settings
    params: dict  # all of params.yaml, validated
    device: torch.device | None  # None for a stage of all of params.yaml (check)
    nondeterministic: list[str] = field(default_factory=list)  # ops that ran without one
    stage: str = "stage"  # the stage's name, for messages

    def runtime(self) -> dict:
        """Where the stage ran, for its metrics: the device type, torch's CPU threads (results are
        exact for a given count), and the operations that ran without a deterministic kernel
        (empty: a rerun writes the same bytes)."""
        from .runtime import describe

        return describe(self.device, self.nondeterministic)

    bar: Any = None  # tqdm's bar, once a step is done

    def progress(self, step: str, values: dict | None = None) -> None:
        """A step done: a tqdm progress line on stderr, on a terminal only (tqdm's disable=None),
        so logs and captured output stay quiet; never in an output. `values` (a step's numbers,
        e.g. an epoch's accuracy) are for a module's own `watch`; the bar shows only the step."""
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(desc=f"{self.stage} {self.name}", unit="step", disable=None)
        self.bar.set_postfix_str(step, refresh=False)
        self.bar.update(1)


class Stopped(BaseException):
    """A stop signal, raised in the main thread (a BaseException, so no `except Exception` of a
    stage swallows it; `finally` blocks still run, and remove temporary files)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "busybox"}


def _runner() -> int:
    """The process that runs this stage: the parent, or where the parent is a shell that did not
    exec the command (DVC runs `$SHELL -c <cmd>`; dash keeps itself between), its parent."""
    parent = os.getppid()
    try:
        comm = Path(f"/proc/{parent}/comm").read_text().strip()
        if comm in SHELLS:
            stat = Path(f"/proc/{parent}/stat").read_text()
            return int(stat.rpartition(")")[2].split()[1])  # field 4: the shell's parent
    except (OSError, ValueError, IndexError):
        pass
    return parent


@contextmanager
def stopped_with_runner() -> Iterator[None]:
    """Within the block, SIGTERM to this process when the runner (`_runner`: DVC) exits, by a
    thread that waits on a pidfd of it (Linux >= 5.3; elsewhere nothing). The parent-death
    signal covers a direct parent; this covers DVC behind a shell that stays."""
    runner = _runner()
    try:
        pidfd = os.pidfd_open(runner)
    except (AttributeError, OSError):
        yield
        return
    stop_r, stop_w = os.pipe()

    def watch():
        ready, _, _ = select.select([pidfd, stop_r], [], [])
        if pidfd in ready and stop_r not in ready:
            os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, name="runner-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        os.write(stop_w, b"x")
        watcher.join()
        for fd in (pidfd, stop_r, stop_w):
            os.close(fd)


def stop_with_parent() -> bool:
    """Linux: ask the kernel to send this process SIGTERM when its parent dies (DVC runs a
    stage's command through a shell that execs it, so the parent is DVC). Returns whether the
    request took; a parent that died before it is a Stopped(SIGTERM) at once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        took = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if took and os.getppid() == 1:  # orphaned already: adopted by init
        raise Stopped(signal.SIGTERM)
    return took


@contextmanager
def signals_handled() -> Iterator[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP raise Stopped and SIGXFSZ is ignored (writes
    fail with EFBIG); the handlers before it are restored after it (a stage run in-process, as
    the tests do, leaves the process as it found it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signum: _stop for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    handlers[signal.SIGXFSZ] = signal.SIG_IGN
    before = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@contextmanager
def _watched(module: ModuleType, ctx: Context) -> Iterator[Callable[..., None]]:
    """The module's progress callback: its own `watch(ctx)` context, else the tqdm line."""
    watch = getattr(module, "watch", None)
    if watch is None:
        yield ctx.progress
        return
    with watch(ctx) as callback:
        yield callback


def run_stage(module: ModuleType, argv: list[str] | None = None) -> None:
    """Run the stage module `module` (its contract: the module docstring) from the command line:
    `<script> <run> [--params FILE]`, or `<script> [--params FILE]` for a module with
    `PER_RUN = False`."""
    per_run = getattr(module, "PER_RUN", True)
    parser = argparse.ArgumentParser(description=(module.__doc__ or "").split("\n\n")[0])
    if per_run:
        parser.add_argument("run", help="a key of `runs` in params.yaml")
    parser.add_argument("--params", default="params.yaml", help="the params file")
    args = parser.parse_args(argv)
    stage = module.__name__.rpartition(".")[2]
    if not per_run or not getattr(module, "TORCH", True):
        with signals_handled():
            _run_once(module, args, stage)
        return
    from .runtime import keep_freed_memory

    keep_freed_memory()
    with signals_handled(), stopped_with_runner():
        _run(module, args, stage)


def _contract(module: ModuleType, ctx: Context) -> None:
    """Settings, load, run, write: the stage module's four steps."""
    settings = module.Settings.from_params(ctx.params, ctx.name)
    inputs = module.load(ctx, settings)
    with _watched(module, ctx) as progress:
        outputs = module.run(inputs, settings, progress)
    module.write(ctx, outputs)


def _run_once(module: ModuleType, args: argparse.Namespace, stage: str) -> None:
    """A stage without torch (no device, no seeds): of all of params.yaml (check), or of one run
    that only moves files (`TORCH = False`: publish)."""
    name = getattr(args, "run", "")
    with one_line(f"{stage} {name}".strip()):
        params = load_params(args.params)
        run = get_run(params, name) if name else {}
        _contract(module, Context(name, run, params, None, stage=stage))


def _run(module: ModuleType, args: argparse.Namespace, stage: str) -> None:
    from .runtime import (
        NONDETERMINISTIC,
        seed_everything,
        select_device,
        use_threads,
        watch_nondeterminism,
    )

    with one_line(f"{stage} {args.run}"):
        stop_with_parent()
        params = load_params(args.params)
        run = get_run(params, args.run)
        use_threads(params["threads"])
        device = select_device(params["device"])
        seed_everything(params["seed"], device, params["deterministic"])
        start = time.perf_counter()
        with watch_nondeterminism() as ops:
            ctx = Context(args.run, run, params, device, ops, stage)
            try:
                with origin.within(args.run, run["dataset"]):  # what it reads and writes
                    _contract(module, ctx)
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


@contextmanager
def one_line(what: str) -> Iterator[None]:
    """Within the block, a bad setting or input (ParamError, DataError) or memory run out is one
    `error:` line on stderr and exit status 2; a stop signal one line and 128 + its number."""
    try:
        yield
    except (ParamError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except MemoryError:  # a bad input never gets here (sizes are checked first); a big batch may
        print(
            f"error: {what} ran out of memory; lower batch_size (or the run's sizes), or free "
            f"memory, and rerun",
            file=sys.stderr,
        )
        sys.exit(2)
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        print(
            f"error: {what} stopped by {name}; every output is whole or as it was, and DVC "
            f"records the stage as not run: rerun it",
            file=sys.stderr,
        )
        sys.exit(128 + stop.signum)
