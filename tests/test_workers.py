"""A stage's independent units in worker processes (running/workers.py): the same results, in the
units' order, at one thread, whatever the number of workers; a unit's error reaches the caller as
it was raised; a stop leaves no worker behind."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time

import pytest
import torch

from fragile_neurons.running.errors import ParamError
from fragile_neurons.running.workers import resolve, run_units

CPU = torch.device("cpu")

# A model of one's own architecture, in a module of the project's root as archs/ holds them:
# a worker must unpickle it, though the module is not on the import path it inherits.
MINE = """
import torch
from torch import nn


class Doubled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return 2 * self.fc(torch.relu(self.conv(x)).flatten(1))
"""


def _unit(delay: float, model: torch.nn.Module, x: torch.Tensor):
    """After `delay` seconds: torch's threads, the process, the logits and the input gradient."""
    time.sleep(delay)
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
    return torch.get_num_threads(), os.getpid(), logits.detach(), grad


def _raises(value: int):
    if value < 0:
        raise ParamError("workers", value, "what a test allows")
    return value


@pytest.fixture
def mine(tmp_path, monkeypatch):
    """An instance of MINE's model, its module imported from `tmp_path` (the working folder) as
    models.import_builder imports one: from a path that is taken away again, no bytecode written."""
    (tmp_path / "fn_workers_mine.py").write_text(MINE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("fn_workers_mine")
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    yield module.Doubled().eval()
    del sys.modules["fn_workers_mine"]


def test_two_workers_give_what_one_gives_in_the_units_order_at_one_thread(mine, tmp_path):
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    # the first unit finishes last
    units = {"slow": (1.0, mine, x), "fast": (0.0, mine, x[:3]), "middle": (0.2, mine, x[3:])}
    threads = torch.get_num_threads()
    finished = {1: [], 2: []}
    one, two = (
        run_units(_unit, units, workers, CPU, finished[workers].append) for workers in (1, 2)
    )
    assert list(one) == list(two) == list(units)
    assert sorted(finished[2]) == sorted(units) and finished[1] == list(units)
    for name in units:
        assert one[name][0] == two[name][0] == 1  # one torch thread, here and in a worker
        assert one[name][1] == os.getpid() != two[name][1]
        assert torch.equal(one[name][2], two[name][2]) and torch.equal(one[name][3], two[name][3])
    assert torch.get_num_threads() == threads  # restored here
    assert not multiprocessing.active_children()
    assert not (tmp_path / "__pycache__").exists()  # the worker wrote no bytecode either


def test_a_units_error_reaches_the_caller_as_it_was_raised():
    threads = torch.get_num_threads()
    units = {"fine": (1,), "bad": (-3,)}
    for workers in (1, 2):
        with pytest.raises(ParamError) as err:
            run_units(_raises, units, workers, CPU)
        assert str(err.value) == str(ParamError("workers", -3, "what a test allows"))
        assert err.value.key == "workers" and "\n" not in str(err.value)
        assert torch.get_num_threads() == threads
    assert not multiprocessing.active_children()


def test_a_stop_terminates_the_workers():
    """A stop while units run (here KeyboardInterrupt from the progress callback, as a signal
    raises stage.Stopped in the main thread) ends the call at once, and no worker is left."""

    def stop(name):
        raise KeyboardInterrupt

    units = {"long": (60.0, torch.nn.Identity(), torch.zeros(1, 1)),
             "short": (0.0, torch.nn.Identity(), torch.zeros(1, 1))}  # fmt: skip
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_units(_unit, units, 2, CPU, stop)
    assert time.monotonic() - start < 30
    assert not multiprocessing.active_children()


def test_one_unit_or_none_runs_here():
    assert run_units(_raises, {}, 2, CPU) == {}
    assert run_units(_raises, {"one": (5,)}, None, CPU) == {"one": 5}
    assert resolve(None) == len(os.sched_getaffinity(0)) and resolve(3) == 3
