"""A stage's independent units of work in worker processes: `run_units` runs `function(*args)`
for every unit, and returns the results in the units' order (params.yaml's `workers`).

Every unit runs with torch at one CPU thread, in a worker as in this process, so a unit's result is
the same bytes whatever the number of workers (torch's CPU kernels are exact for a given thread
count: runtime.use_threads); a unit must not depend on what ran before it in its process (the
global random generators included: the attacks draw from generators of their own). With one
worker, or on a CUDA device, the units run here, one after another (on a GPU they would share the
one device). Otherwise they run in a pool of processes started by "spawn" (never by fork: torch's
OpenMP pool does not survive a fork), each of which dies with this process (the kernel's
parent-death signal), ignores SIGINT (this process handles a stop) and runs at one thread.
`function` and the arguments must pickle: a module-level function; models and tensors cross
between the processes as they are (torch shares a tensor's memory rather than copying it).

A unit's exception is raised here as it was raised there (ParamError and DataError keep their
one line). A stop here (stage.Stopped, KeyboardInterrupt) or a unit's exception cancels the units
not yet started and terminates the workers before it goes on: no worker outlives the call.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .config import cores


def resolve(workers: int | None) -> int:
    """params.yaml's `workers`: None is the CPU cores this process may run on (config.cores)."""
    return cores() if workers is None else workers


@contextmanager
def one_thread() -> Iterator[None]:
    """torch at one CPU thread within the block; the thread count before it restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _start_worker(project: str) -> None:
    """A worker's set-up, before any unit: SIGTERM when its parent dies, SIGINT ignored, one torch
    thread, freed memory kept (runtime.keep_freed_memory); and `project`, the root the parent runs
    in, last on the import path, so that a model of one's own architecture (`archs/`, imported
    there by models.import_builder) unpickles, with no bytecode written (as there)."""
    from .runtime import keep_freed_memory
    from .stage import stop_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_with_parent()  # a parent gone already: the worker ends, the pool breaks
    torch.set_num_threads(1)
    keep_freed_memory()
    sys.dont_write_bytecode = True
    if project not in sys.path:
        sys.path.append(project)


def _stop(pool: ProcessPoolExecutor) -> None:
    """The pool's workers terminated, its units not yet started cancelled, and then waited for."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def run_units(
    function: Callable[..., Any],
    units: dict[str, tuple],
    workers: int | None,
    device: torch.device,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """{name: function(*args)} for every unit `name: args` of `units`, in the order of `units`:
    in min(`workers`, units) processes (`resolve`: None is every core), or here where that is one
    or `device` is a CUDA device; each unit at one torch thread. `progress(name)` is called here
    as each unit finishes."""
    count = min(resolve(workers), len(units))
    if count <= 1 or device.type == "cuda":
        results = {}
        with one_thread():
            for name, args in units.items():
                results[name] = function(*args)
                if progress is not None:
                    progress(name)
        return results
    pool = ProcessPoolExecutor(
        count,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(str(Path.cwd().resolve()),),
    )
    done = {}
    try:
        futures: dict[Future, str] = {pool.submit(function, *args): n for n, args in units.items()}
        for future in as_completed(futures):
            done[futures[future]] = future.result()  # a unit's exception, raised here
            if progress is not None:
                progress(futures[future])
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return {name: done[name] for name in units}
