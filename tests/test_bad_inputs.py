"""Bad inputs, one at a time, against a tiny project whose every stage has run once.

Each case copies that project, spoils one input (a param, a raw data file, a checkpoint, a record,
a run name; a size, a structure, a disk that refuses a write) and runs one stage in a forked child
of the test process, as `python stages/<stage>.py <run>` would run it, under a memory cap (its
address space at most 1 GiB beyond the test process's) and a time cap. It must stop with exit
status 2 and exactly one line on stderr, ``error: ...``, that names the key or file, what was
given and what is allowed (for a file: what to do about it), and it must leave every other file
of the project as it was, with no new file. The malicious files would create a marker file if
anything unpickled them with the general unpickler (`test_the_payloads_are_live` proves it); the
marker must never appear.
"""

from __future__ import annotations

import codecs
import copy
import errno
import hashlib
import io
import os
import pickle
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from contextlib import chdir, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import yaml
from conftest import run_script

from fragile_neurons.datasets import cifar, files
from fragile_neurons.network.models import build_model, save_checkpoint
from fragile_neurons.pipeline import check
from fragile_neurons.pipeline.train import CURVES
from fragile_neurons.running import origin

RUN = "mnist"
STAGES = (
    "prepare", "train", "reference", "placebo", "attack", "scan", "label", "correlate", "harden",
    "baseline", "evaluate", "publish",
)  # fmt: skip
MARKER = "MARKER"  # beside the project: what a payload creates when it runs
# train's curves (DVCLive), rewritten after every epoch; the first is watched for an epoch's end
TRAIN_VIEW = "data/views/mnist/train/train"
TRAIN_CURVES = (
    *(f"{TRAIN_VIEW}/plots/metrics/{c}.tsv" for c in sorted(CURVES, key="train/loss".__ne__)),
    f"{TRAIN_VIEW}/metrics.json",
)
TRAIN_CSV = TRAIN_CURVES[0]

PARAMS = {
    "seed": 0,
    "device": "cpu",
    "deterministic": "warn",
    "threads": None,
    "workers": None,
    "batch_size": 64,
    "data": {"root": "data/raw", "download": False, "accept_checksum_mismatch": None},
    "runs": {
        RUN: {
            "dataset": "mnist", "arch": "mnist_cnn", "selection_size": 50, "reference": True,
            "placebo": True, "train_size": 200, "test_size": 80,
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0,
                      "augment": False},
            "attack": {"epsilons": [0, 0.1, 0.2], "labels": True,
                       "surrogate_iterations": 20},
        },
    },
    "scan": {"layer": None, "samples": 40, "adversarial": "transfer"},
    "label": {"score": "clean", "fraction": 0.25},
    "correlate": {"top_fraction": 0.25},
    "harden": {"compress": 0.5, "mode": "proportional", "max_gain": 4.0, "random_controls": 2,
               "match_tolerance": 0.1},
    "evaluate": {"images": None, "samples": 20,
                 "random_samples": None,
                 "pgd": {"attack": "pgd", "steps": 2, "restarts": 1},
                 "autoattack": {"images": 8, "steps": 2}},
}  # fmt: skip
CIFAR_RUN = {
    "dataset": "cifar10", "arch": "cifar_cnn", "selection_size": 50, "reference": False,
    "placebo": False, "train_size": 100, "test_size": 60,
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0, "augment": True},
    "attack": {"epsilons": [0, "2/255", "8/255"], "labels": True, "surrogate_iterations": 20},
}  # fmt: skip

MNIST_RAW = "data/raw/MNIST/raw"
CIFAR_RAW = "data/raw/cifar-10-batches-py"
TEST_SPLIT = "data/prepared/mnist/test.pt"
TRAIN_SPLIT = "data/prepared/mnist/train.pt"
SELECTION_SPLIT = "data/prepared/mnist/selection.pt"
MODEL = "models/mnist/model.pt"
REFERENCE = "models/mnist/reference.pt"
PLACEBO = "models/mnist/placebo.pt"
HARDENED = "models/mnist/hardened.pt"
SWEEP = "data/attack/mnist/sweep.pt"
SCAN_SWEEP = "data/attack/mnist/scan_sweep.pt"
LAYER = "data/attack/mnist/layer.pt"
TARGETING = "data/attack/mnist/targeting.pt"
MEASUREMENTS = "data/scan/mnist/measurements.pt"
LABELS = "data/label/mnist/labels.pt"
GAINS = "data/harden/mnist/gains.pt"


# --- the stages, run in-process as `python stages/<stage>.py <run>` runs them ----------------


def run(stage: str, run_name: str = RUN, args: tuple[str, ...] = ()) -> None:
    """One stage in the current directory; `check` validates params.yaml as dvc.yaml runs it (or
    the overrides `args`, as `fragile-neurons check` takes them)."""
    if stage == "check":
        check.main(list(args))
    else:
        run_script(stage, run_name)


MEMORY_HEADROOM = 1 << 30  # what a case may map beyond the test process's address space
TIME_CAP = 90  # seconds a case may take (a few, but this machine may be busy)


def address_space() -> int:
    """This process's virtual memory size in bytes (Linux: VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def run_bounded(
    project: Path,
    stage: str,
    run_name: str = RUN,
    args: tuple[str, ...] = (),
    fault: Callable[[], None] | None = None,
    file_limit: int | None = None,
) -> tuple[int, str]:
    """`run(stage, run_name, args)` in `project`, in a forked child whose address space may grow
    by MEMORY_HEADROOM at most (RLIMIT_AS) and whose files may hold `file_limit` bytes
    (RLIMIT_FSIZE), after `fault()` (a fault injected into the child alone). Returns its exit
    status (-N: killed by signal N) and its stderr; fails the test beyond TIME_CAP seconds."""
    err_path = project.parent / f"stderr-{time.monotonic_ns()}.txt"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            limit = address_space() + MEMORY_HEADROOM
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            if file_limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
            os.chdir(project)
            if fault is not None:
                fault()
            try:
                run(stage, run_name, args)
                code = 0
            except SystemExit as err:
                code = err.code if isinstance(err.code, int) else 1
        except BaseException:  # a traceback instead of one line: shown in the failure
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + TIME_CAP
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{stage} took more than {TIME_CAP} s")
        time.sleep(0.02)
    stderr = err_path.read_text()
    err_path.unlink()
    return os.waitstatus_to_exitcode(status), stderr


def md5s(project: Path, skip: set[str] = frozenset()) -> dict[str, str]:
    """md5 of every file of the project but `skip` (relative paths; a huge sparse file is not
    read)."""
    return {
        rel: hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(project.rglob("*"))
        if p.is_file() and (rel := p.relative_to(project).as_posix()) not in skip
    }


def read_params(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


def write_params(project: Path, params: Any) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def one_thread_here():
    """Tiny tensors gain nothing from more threads, and this machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, synthetic_root, one_thread_here) -> tuple[Path, dict[str, str]]:
    """A tiny project (raw data in data/raw, every stage run once for `mnist`), and its md5s."""
    project = tmp_path_factory.mktemp("pristine") / "project"
    shutil.copytree(synthetic_root / "MNIST", project / MNIST_RAW.removesuffix("/raw"))
    shutil.copytree(synthetic_root / "cifar-10-batches-py", project / CIFAR_RAW)
    params = copy.deepcopy(PARAMS)
    params["data"]["accept_checksum_mismatch"] = {
        "mnist": files.file_md5s("mnist", project / "data/raw")
    }
    write_params(project, params)
    with chdir(project), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        run("check")
        for stage in STAGES:
            run(stage)
    assert (project / "metrics/mnist/evaluate.json").is_file()
    return project, md5s(project)


# --- mutations: each changes `paths` of a project and nothing else ---------------------------


class Mutation(NamedTuple):
    paths: tuple[str, ...]  # the files it changes, relative to the project
    apply: Callable[[Path], None]


def params_edit(edit: Callable[[dict, Path], Any]) -> Mutation:
    """params.yaml read, edited in place by edit(params, project), and written again."""

    def apply(project):
        params = read_params(project)
        edit(params, project)
        write_params(project, params)

    return Mutation(("params.yaml",), apply)


def set_param(dotted: str, value: Any) -> Mutation:
    def edit(params, _):
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value

    return params_edit(edit)


def drop_param(dotted: str) -> Mutation:
    def edit(params, _):
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        del node[last]

    return params_edit(edit)


def rename_run(name: Any) -> Mutation:
    return params_edit(lambda params, _: params.update(runs={name: params["runs"][RUN]}))


def params_text(edit: Callable[[str], str]) -> Mutation:
    def apply(project):
        path = project / "params.yaml"
        text = path.read_text()
        new = edit(text)
        assert new != text, "the edit did not apply"
        path.write_text(new)

    return Mutation(("params.yaml",), apply)


def replace(old: str, new: str) -> Mutation:
    return params_text(lambda text: text.replace(old, new, 1))


def file_bytes(rel: str, edit: Callable[[bytes], bytes]) -> Mutation:
    def apply(project):
        path = project / rel
        path.write_bytes(edit(path.read_bytes()))

    return Mutation((rel,), apply)


def truncate(rel: str) -> Mutation:
    return file_bytes(rel, lambda blob: blob[: len(blob) // 2])


def random_bytes(rel: str) -> Mutation:
    return file_bytes(rel, lambda blob: random.Random(0).randbytes(len(blob)))


def remove(rel: str) -> Mutation:
    return Mutation((rel,), lambda project: (project / rel).unlink())


def torch_file(rel: str, make: Callable[[Path], Any]) -> Mutation:
    """`rel` replaced by torch.save of make(project)."""
    return Mutation((rel,), lambda project: torch.save(make(project), project / rel))


def record(project: Path, rel: str) -> Any:
    return torch.load(project / rel, weights_only=True)


def edit_record(rel: str, edit: Callable[[dict], Any]) -> Mutation:
    """`rel` (a record this pipeline wrote) loaded, edited in place and saved again."""

    def make(project):
        blob = record(project, rel)
        edit(blob)
        return blob

    return torch_file(rel, make)


def both(*mutations: Mutation) -> Mutation:
    def apply(project):
        for m in mutations:
            m.apply(project)

    return Mutation(tuple(p for m in mutations for p in m.paths), apply)


class Payload:
    """Unpickled by the general unpickler, this creates the file `marker` (io.open(marker, 'w'))."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload(project: Path) -> Payload:
    return Payload(project.parent / MARKER)


def malicious_pickle(rel: str) -> Mutation:
    def apply(project):
        blob = {"data": payload(project), "labels": [0], "label_names": [payload(project)]}
        (project / rel).write_bytes(pickle.dumps(blob, protocol=2))

    return Mutation((rel,), apply)


def cifar_run(tamper: Mutation | None) -> Mutation:
    """A run `cifar` of CIFAR-10, its raw files tampered by `tamper`, every md5 pinned: only the
    parsing of the files stands between them and the stage."""

    def pin(params, project):
        params["runs"]["cifar"] = copy.deepcopy(CIFAR_RUN)
        md5 = files.file_md5s("cifar10", project / "data/raw")
        params["data"]["accept_checksum_mismatch"]["cifar10"] = md5

    return both(*([tamper] if tamper else []), params_edit(pin))


def pin_mnist() -> Mutation:
    """Pin the md5s of MNIST's raw files as they are now."""

    def pin(params, project):
        md5 = files.file_md5s("mnist", project / "data/raw")
        params["data"]["accept_checksum_mismatch"]["mnist"] = md5

    return params_edit(pin)


def flip_byte(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]


def md5_of(rel: str) -> Callable[[Path], str]:
    return lambda project: hashlib.md5((project / rel).read_bytes()).hexdigest()


# --- the table ---------------------------------------------------------------------------------


class Case(NamedTuple):
    stage: str  # `check`, or a stage of STAGES
    mutation: Mutation
    key: str  # the key or file the line must name
    given: str | Callable[[Path], str]  # what was given (computed from the spoilt project)
    allowed: str  # what is allowed, or for a file what to do about it
    run: str = RUN
    args: tuple[str, ...] = ()  # check's command line
    fault: Callable[[], None] | None = None  # injected into the stage's process alone
    file_limit: int | None = None  # RLIMIT_FSIZE of the stage's process


def case(id_, *args, marks=(), **kwargs):
    return pytest.param(Case(*args, **kwargs), id=id_, marks=marks)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
NOTHING = Mutation((), lambda _: None)  # for a bad command line
KNOWN_RUNS = "one of the configured runs ['mnist']"
RUN_NAME = "a letter, then letters, digits, '_' or '-'"
RERUN_PREPARE = "rerun `dvc repro --force prepare@mnist`"
IDX = f"{MNIST_RAW}/t10k-images-idx3-ubyte"
LABELS_IDX = f"{MNIST_RAW}/train-labels-idx1-ubyte"
BATCH, META = f"{CIFAR_RAW}/data_batch_1", f"{CIFAR_RAW}/batches.meta"

PARAMS_CASES = [
    case("seed-negative", "check", set_param("seed", -1), "seed", "-1", ">= 0"),
    case("seed-2**32", "check", set_param("seed", 2**32), "seed", "4294967296", "4294967295]"),
    case("seed-string", "check", set_param("seed", "0"), "seed", "'0'", "an integer"),
    case("device-cuda:abc", "check", set_param("device", "cuda:abc"), "device", "'cuda:abc'",
         "'cuda:N'"),
    case("deterministic-maybe", "check", set_param("deterministic", "maybe"), "deterministic",
         "'maybe'", "'warn' or 'strict'"),
    case("workers-0", "check", set_param("workers", 0), "workers", "0", "an integer in [1, "),
    case("workers-negative", "check", set_param("workers", -1), "workers", "-1", "or an integer"),
    case("workers-10000", "check", set_param("workers", 10_000), "workers", "10000", "CPU cores"),
    case("workers-1.5", "check", set_param("workers", 1.5), "workers", "1.5", "or an integer"),
    case("workers-string", "check", set_param("workers", "two"), "workers", "'two'", "null ("),
    case("batch_size-0", "check", set_param("batch_size", 0), "batch_size", "0", ">= 1"),
    case("download-yes", "check", replace("download: false", "download: yes"), "data.download",
         "'yes'", "true or false"),
    case("root-empty", "check", set_param("data.root", ""), "data.root", "''",
         "a non-empty string"),
    case("pins-old-list", "check", set_param("data.accept_checksum_mismatch", ["mnist"]),
         "data.accept_checksum_mismatch", "['mnist']", "{raw file name: md5}"),
    case("pin-not-md5", "check",
         set_param("data.accept_checksum_mismatch.mnist.t10k-images-idx3-ubyte", "abc"),
         "data.accept_checksum_mismatch.mnist.t10k-images-idx3-ubyte", "'abc'",
         "32 lowercase hex digits"),
    case("pin-uppercase-md5", "check",
         set_param("data.accept_checksum_mismatch.mnist.t10k-images-idx3-ubyte", "A" * 32),
         "data.accept_checksum_mismatch.mnist.t10k-images-idx3-ubyte", "'" + "A" * 32 + "'",
         "32 lowercase hex digits"),
    case("pin-unknown-dataset", "check",
         set_param("data.accept_checksum_mismatch.svhn", {"train_32x32.mat": "0" * 32}),
         "data.accept_checksum_mismatch.svhn", "train_32x32.mat", "a dataset name from"),
    case("runs-empty", "check", set_param("runs", {}), "runs", "{}", "a non-empty mapping"),
    case("run-name-shell", "check", rename_run("x;touch marker;echo"), "runs",
         "'x;touch marker;echo'", RUN_NAME),
    case("run-name-space", "check", rename_run("a b"), "runs", "'a b'", RUN_NAME),
    case("run-name-option", "check", rename_run("-h"), "runs", "'-h'", RUN_NAME),
    case("run-name-int", "check", rename_run(7), "runs", "= 7 ", RUN_NAME),
    case("dataset-svhn", "check", set_param("runs.mnist.dataset", "svhn"), "runs.mnist.dataset",
         "'svhn'", "'mnist' or 'fashion_mnist' or 'cifar10'"),
    case("arch-vgg", "check", set_param("runs.mnist.arch", "vgg"), "runs.mnist.arch", "'vgg'",
         "'mnist_cnn'"),
    case("train_size-0", "check", set_param("runs.mnist.train_size", 0), "runs.mnist.train_size",
         "0", ">= 1 or null"),
    case("test_size-missing", "check", drop_param("runs.mnist.test_size"),
         "runs.mnist.test_size", "<missing>", "required"),
    case("selection_size-0", "check", set_param("runs.mnist.selection_size", 0),
         "runs.mnist.selection_size", "0", "an integer >= 1"),
    case("selection_size-null", "check", set_param("runs.mnist.selection_size", None),
         "runs.mnist.selection_size", "None", "an integer >= 1"),
    case("selection_size-missing", "check", drop_param("runs.mnist.selection_size"),
         "runs.mnist.selection_size", "<missing>", "required"),
    case("reference-7", "check", set_param("runs.mnist.reference", 7),
         "runs.mnist.reference", "7", "true or false"),
    case("reference-missing", "check", drop_param("runs.mnist.reference"),
         "runs.mnist.reference", "<missing>", "required"),
    case("autoattack-images-beyond-the-pgd-images", "check",
         set_param("evaluate.autoattack.images", 21), "evaluate.autoattack.images", "21",
         "evaluate.samples = 20"),
    case("placebo-7", "check", set_param("runs.mnist.placebo", 7),
         "runs.mnist.placebo", "7", "true or false"),
    case("placebo-without-reference", "check",
         params_edit(lambda p, _: p["runs"]["mnist"].update(reference=False, placebo=True)),
         "runs.mnist.placebo", "True", "false where runs.mnist.reference is false"),
    case("scan.samples-0", "check", set_param("scan.samples", 0), "scan.samples", "0",
         "an integer >= 1 or null"),
    case("scan.samples-beyond-selection", "check", set_param("scan.samples", 51), "scan.samples",
         "51", "at most the selection split's 50 images (runs.mnist.selection_size)"),
    case("epochs-2.5", "check", set_param("runs.mnist.train.epochs", 2.5),
         "runs.mnist.train.epochs", "2.5", "an integer >= 1"),
    case("lr-0", "check", set_param("runs.mnist.train.lr", 0), "runs.mnist.train.lr", "= 0 ",
         "(0.0, inf)"),
    case("lr-nan", "check", set_param("runs.mnist.train.lr", float("nan")),
         "runs.mnist.train.lr", "nan", "(0.0, inf)"),
    case("lr-comma", "check", replace("lr: 0.003", "lr: 0,003"), "runs.mnist.train.lr",
         "'0,003'", "(0.0, inf)"),
    case("weight_decay-negative", "check", set_param("runs.mnist.train.weight_decay", -0.1),
         "runs.mnist.train.weight_decay", "-0.1", "[0.0, inf)"),
    case("augment-on-digits", "check", set_param("runs.mnist.train.augment", True),
         "runs.mnist.train.augment", "True", "false for digit-like data"),
    case("run-unknown-key", "check", set_param("runs.mnist.train.momentum", 0.9),
         "runs.mnist.train.momentum", "0.9", "known keys here"),
    case("epsilons-decreasing", "check", set_param("runs.mnist.attack.epsilons", [0, 0.2, 0.1]),
         "runs.mnist.attack.epsilons", "[0, 0.2, 0.1]", "strictly increasing"),
    case("epsilon-8/0", "check", set_param("runs.mnist.attack.epsilons", [0, "8/0"]),
         "runs.mnist.attack.epsilons[1]", "'8/0'", "a fraction such as '8/255'"),
    case("epsilon-1.5", "check", set_param("runs.mnist.attack.epsilons", [0, 1.5]),
         "runs.mnist.attack.epsilons[1]", "1.5", "[0, 1]"),
    case("epsilons-only-0", "check", set_param("runs.mnist.attack.epsilons", [0]),
         "runs.mnist.attack.epsilons", "[0]", "at least one positive epsilon"),
    case("labels-adversarial", "check", set_param("runs.mnist.attack.labels", "adversarial"),
         "runs.mnist.attack.labels", "'adversarial'", "true or 'predicted'"),
    case("surrogate_iterations-0", "check", set_param("runs.mnist.attack.surrogate_iterations", 0),
         "runs.mnist.attack.surrogate_iterations", "0", "an integer >= 1, at most 1000"),
    case("surrogate_iterations-10000", "check",
         set_param("runs.mnist.attack.surrogate_iterations", 10000),
         "runs.mnist.attack.surrogate_iterations", "10000", "an integer >= 1, at most 1000"),
    case("scan.layr", "check", set_param("scan.layr", "conv1"), "scan.layr", "'conv1'",
         "known keys here: ['adversarial', 'layer', 'samples']"),
    case("top-level-sed", "check", set_param("sed", 0), "sed", "0", "known keys here"),
    case("label_fraction-0.75", "check", set_param("label.fraction", 0.75),
         "label.fraction", "0.75", "(0.0, 0.5]"),
    case("score-fragility", "check", set_param("label.score", "fragility"), "label.score",
         "'fragility'", "'clean' or 'adversarial' or 'difference'"),
    case("adversarial-pgd", "check", set_param("scan.adversarial", "pgd"), "scan.adversarial",
         "'pgd'", "'transfer' or 'adaptive'"),
    case("top_fraction-0", "check", set_param("correlate.top_fraction", 0),
         "correlate.top_fraction", "= 0 ", "(0.0, 1.0]"),
    case("compress-1.5", "check", set_param("harden.compress", 1.5), "harden.compress", "1.5",
         "[0.0, 1.0]"),
    case("mode-random", "check", set_param("harden.mode", "random"), "harden.mode", "'random'",
         "'proportional' or 'uniform'"),
    case("max_gain-0.5", "check", set_param("harden.max_gain", 0.5), "harden.max_gain", "0.5",
         "(1.0, inf)"),
    case("random_controls-0", "check", set_param("harden.random_controls", 0),
         "harden.random_controls", "0", ">= 1"),
    case("match_tolerance-0", "check", set_param("harden.match_tolerance", 0),
         "harden.match_tolerance", "0", "(0.0, 1.0]"),
    case("random_samples-over-samples", "check", set_param("evaluate.random_samples", 21),
         "evaluate.random_samples", "21", "[1, evaluate.samples = 20]"),
    case("pgd.stepz", "check",
         set_param("evaluate.pgd", {"attack": "pgd", "stepz": 2, "steps": 2, "restarts": 1}),
         "evaluate.pgd.stepz", "2", "known keys here: ['attack', 'restarts', 'steps']"),
    case("pgd-attack-cw", "check", set_param("evaluate.pgd.attack", "cw"), "evaluate.pgd.attack",
         "'cw'", "'pgd' or 'apgd-ce'"),
    case("pgd-restarts-negative", "check", set_param("evaluate.pgd.restarts", -1),
         "evaluate.pgd.restarts", "-1", "an integer >= 1"),
    case("pgd-restarts-1000", "check", set_param("evaluate.pgd.restarts", 1000),
         "evaluate.pgd.restarts", "1000", "at most 100 (each restart is the whole attack again"),
    case("autoattack-images-negative", "check", set_param("evaluate.autoattack.images", -8),
         "evaluate.autoattack.images", "-8", "an integer >= 0"),
    case("section-missing", "check", drop_param("correlate"), "correlate", "<missing>",
         "required"),
    case("lr-beyond-float-range", "check", set_param("runs.mnist.train.lr", 10**400),
         "runs.mnist.train.lr", "1" + "0" * 50, "(0.0, inf)"),
    case("epsilon-beyond-float-range", "check",
         set_param("runs.mnist.attack.epsilons", [0, 10**400]), "runs.mnist.attack.epsilons[1]",
         "1" + "0" * 50, "[0, 1]"),
    case("unknown-key-with-line-break", "check", set_param("scan.a\nb", 1), "scan.", "= 1 ",
         "known keys here"),
    case("pin-dataset-with-line-break", "check",
         set_param("data.accept_checksum_mismatch", {"mnist\nx": {"a": "0" * 32}}),
         "data.accept_checksum_mismatch.", "{'a': '" + "0" * 32 + "'}", "a dataset name from"),
    case("yaml-unparsable", "check", replace("seed: 0", "seed: [0"), "params.yaml",
         "<not valid YAML>", "valid YAML"),
    case("yaml-duplicate-key", "check", params_text(lambda text: text + "seed: 1\n"),
         "params.yaml", 'duplicate key "seed"', "valid YAML"),
    case("yaml-tab", "check", replace("  root:", "\troot:"), "params.yaml", "<not valid YAML>",
         "valid YAML"),
    case("yaml-empty", "check", params_text(lambda _: ""), "params.yaml", "None",
         "a mapping with keys"),
    case("params-missing", "check", remove("params.yaml"), "params.yaml", "<unreadable>",
         "a readable YAML file"),
    # params that only a stage can judge
    case("device-cuda-absent", "train", set_param("device", "cuda"), "device", "'cuda'",
         "'auto' or 'cpu'", marks=NO_CUDA),
    case("lr-1e6-diverges", "train", set_param("runs.mnist.train.lr", 1.0e6),
         "runs.mnist.train.lr", "1000000.0", "a learning rate at which training"),
    case("train_size-too-big", "prepare", set_param("runs.mnist.train_size", 10_000),
         "runs.mnist.train_size", "10000",
         "at most the 450 images of the raw training split left after the 50 images of the "
         "selection split (runs.mnist.selection_size)"),
    case("train_size-too-big-for-what-the-selection-left", "prepare",
         both(set_param("runs.mnist.selection_size", 400), set_param("runs.mnist.train_size", 110)),
         "runs.mnist.train_size", "110", "at most the 100 images of the raw training split left"),
    case("selection_size-too-big", "prepare", set_param("runs.mnist.selection_size", 501),
         "runs.mnist.selection_size", "501", "at most the 500 images of the raw training split"),
    case("selection_size-leaves-too-few-to-train-on", "prepare",
         set_param("runs.mnist.selection_size", 460), "runs.mnist.selection_size", "460",
         "leaves at least 10 images of every class to train on (class 0 would keep 4"),
    case("scan.layer-fc1", "attack", set_param("scan.layer", "fc1"), "scan.layer", "'fc1'",
         "['conv1', 'conv2']"),
    case("scan.layer-nope", "attack", set_param("scan.layer", "nope"), "scan.layer", "'nope'",
         "['conv1', 'conv2']"),
]  # fmt: skip

RUN_NAME_CASES = [
    case("run-arg-svhn", "prepare", NOTHING, "runs", "'svhn'", KNOWN_RUNS, run="svhn"),
    case("run-arg-shell", "attack", NOTHING, "runs", "'x;touch marker;echo'", KNOWN_RUNS,
         run="x;touch marker;echo"),
    case("run-arg-path", "train", NOTHING, "runs", "'../mnist'", KNOWN_RUNS, run="../mnist"),
]  # fmt: skip

DATA_CASES = [
    # raw files
    case("cifar-batch-malicious", "prepare", cifar_run(malicious_pickle(BATCH)),
         f"{CIFAR_RAW}/data_batch_1", "'io.open'", "holds only arrays", run="cifar"),
    case("cifar-meta-malicious", "prepare", cifar_run(malicious_pickle(META)),
         f"{CIFAR_RAW}/batches.meta", "'io.open'", "holds only arrays", run="cifar"),
    case("cifar-batch-truncated", "prepare", cifar_run(truncate(f"{CIFAR_RAW}/data_batch_2")),
         f"{CIFAR_RAW}/data_batch_2", "not a readable pickle", "truncated or corrupt",
         run="cifar"),
    case("cifar-batch-not-a-batch", "prepare",
         cifar_run(file_bytes(f"{CIFAR_RAW}/test_batch",
                              lambda _: pickle.dumps({"data": [1, 2], "labels": [3]}))),
         f"{CIFAR_RAW}/test_batch", "not a CIFAR-10 batch", "'labels' (a list of n ints in 0..9)",
         run="cifar"),
    case("mnist-idx-changed", "prepare", file_bytes(IDX, lambda blob: flip_byte(blob, 100)), IDX,
         md5_of(IDX), "pin each file's md5 under data.accept_checksum_mismatch.mnist"),
    case("pin-unknown-file", "prepare",
         set_param("data.accept_checksum_mismatch.mnist.train-images", "0" * 32),
         "data.accept_checksum_mismatch.mnist.train-images", "'" + "0" * 32 + "'",
         "a file name from ['train-images-idx3-ubyte'"),
    case("mnist-unpinned", "prepare", set_param("data.accept_checksum_mismatch", None),
         f"{MNIST_RAW}/train-images-idx3-ubyte", md5_of(f"{MNIST_RAW}/train-images-idx3-ubyte"),
         "pin each file's md5 under data.accept_checksum_mismatch.mnist"),
    case("mnist-idx-missing", "prepare", remove(LABELS_IDX), LABELS_IDX, "files missing",
         "data.download: true"),
    case("mnist-idx-bad-header-pinned", "prepare",
         both(file_bytes(LABELS_IDX, lambda blob: flip_byte(blob, 3)), pin_mnist()),
         LABELS_IDX, "header read: [2302, 500]", "labels (magic 2049, n)"),
    # prepared splits
    case("test-split-malicious", "attack", torch_file(TEST_SPLIT, payload), TEST_SPLIT,
         "'io.open'", RERUN_PREPARE),
    case("test-split-truncated", "attack", truncate(TEST_SPLIT), TEST_SPLIT,
         "truncated or corrupt", RERUN_PREPARE),
    case("test-split-random-bytes", "train", random_bytes(TEST_SPLIT), TEST_SPLIT,
         "truncated or corrupt", RERUN_PREPARE),
    case("test-split-a-list", "attack",
         torch_file(TEST_SPLIT, lambda p: list(record(p, TEST_SPLIT).values())), TEST_SPLIT,
         "lacks ['images', 'labels', 'index', 'classes', 'mean', 'std']", RERUN_PREPARE),
    case("test-split-no-labels", "evaluate",
         edit_record(TEST_SPLIT, lambda split: split.pop("labels")), TEST_SPLIT, "lacks ['labels']",
         RERUN_PREPARE),
    case("test-split-no-index", "attack", edit_record(TEST_SPLIT, lambda split: split.pop("index")),
         TEST_SPLIT, "lacks ['index']", RERUN_PREPARE),
    case("selection-split-missing", "scan", remove(SELECTION_SPLIT), SELECTION_SPLIT,
         "is missing", RERUN_PREPARE),
    case("selection-split-malicious", "attack", torch_file(SELECTION_SPLIT, payload),
         SELECTION_SPLIT, "'io.open'", RERUN_PREPARE),
    case("selection-split-repeated-index", "attack",
         edit_record(SELECTION_SPLIT, lambda s: s["index"].__setitem__(1, int(s["index"][0]))),
         SELECTION_SPLIT, "not a prepared split", RERUN_PREPARE),
    case("selection-split-float-index", "scan",
         edit_record(SELECTION_SPLIT, lambda s: s.update(index=s["index"].float())),
         SELECTION_SPLIT, "int64 index of N distinct raw positions", RERUN_PREPARE),
    case("test-split-float-images", "evaluate",
         edit_record(TEST_SPLIT, lambda s: s.update(images=s["images"].float())), TEST_SPLIT,
         "not a prepared split", RERUN_PREPARE),
    case("train-split-missing", "train", remove(TRAIN_SPLIT), TRAIN_SPLIT, "is missing",
         RERUN_PREPARE),
    # checkpoints
    case("model-malicious", "harden", torch_file(MODEL, payload), MODEL, "'io.open'",
         "rerun `dvc repro --force train@mnist`"),
    case("model-truncated", "attack", truncate(MODEL), MODEL, "truncated or corrupt",
         "rerun `dvc repro --force train@mnist`"),
    case("model-wrong-arch", "scan",
         edit_record(MODEL, lambda blob: blob["spec"].update(arch="cifar_cnn")), MODEL,
         "'cifar_cnn'", "not 'mnist_cnn'"),
    case("model-state-missing-key", "evaluate",
         edit_record(MODEL, lambda blob: blob["state_dict"].pop("fc2.bias")), MODEL,
         "fc2.bias", "rerun `dvc repro --force train@mnist`"),
    case("model-spec-not-a-dict", "scan", edit_record(MODEL, lambda blob: blob.update(spec=[1])),
         MODEL, "spec is not", "rerun `dvc repro --force train@mnist`"),
    case("hardened-holds-the-original", "evaluate",
         Mutation((HARDENED,), lambda p: shutil.copy(p / MODEL, p / HARDENED)), HARDENED,
         "does not hold the gains", "rerun `dvc repro --force harden@mnist`"),
    case("hardened-missing", "evaluate", remove(HARDENED), HARDENED, "is missing",
         "rerun `dvc repro --force harden@mnist`"),
    case("view-missing", "publish", remove("data/views/mnist/evaluate/robustness.png"),
         "data/views/mnist/evaluate/robustness.png", "is missing",
         "rerun `dvc repro --force evaluate@mnist`"),
    case("view-folder-missing", "publish",
         Mutation(TRAIN_CURVES, lambda project: shutil.rmtree(project / TRAIN_VIEW)),
         "data/views/mnist/train/train", "is missing", "rerun `dvc repro --force train@mnist`"),
    # records
    case("sweep-malicious", "evaluate", torch_file(SWEEP, payload), SWEEP, "'io.open'",
         "rerun `dvc repro --force attack@mnist`"),
    case("scan-sweep-malicious", "scan", torch_file(SCAN_SWEEP, payload), SCAN_SWEEP, "'io.open'",
         "rerun `dvc repro --force attack@mnist`"),
    case("sweep-truncated", "evaluate", truncate(SWEEP), SWEEP, "truncated or corrupt",
         "rerun `dvc repro --force attack@mnist`"),
    case("sweep-missing", "evaluate", remove(SWEEP), SWEEP, "is missing",
         "rerun `dvc repro --force attack@mnist`"),
    case("scan-sweep-missing", "scan", remove(SCAN_SWEEP), SCAN_SWEEP, "is missing",
         "rerun `dvc repro --force attack@mnist`"),
    case("scan-sweep-without-signs", "scan", edit_record(SCAN_SWEEP, lambda b: b.pop("signs")),
         SCAN_SWEEP, "lacks ['signs']", "rerun `dvc repro --force attack@mnist`"),
    case("scan-sweep-float-signs", "scan",
         edit_record(SCAN_SWEEP, lambda b: b.update(signs=b["signs"].float())), SCAN_SWEEP,
         "signs is torch.float32", "rerun `dvc repro --force attack@mnist`"),
    case("sweep-of-other-images", "evaluate",
         edit_record(SWEEP, lambda b: b.update(signs=b["signs"][:10],
                                               clean_logits=b["clean_logits"][:10])),
         SWEEP, "not of the images read with it", "rerun `dvc repro --force attack@mnist`"),
    case("scan-sweep-of-other-images", "scan",
         edit_record(SCAN_SWEEP, lambda b: b.update(signs=b["signs"][:10],
                                                    clean_logits=b["clean_logits"][:10])),
         SCAN_SWEEP, "(40, 1, 28, 28)", "rerun `dvc repro --force attack@mnist`"),
    case("scan-sweep-of-the-test-split", "scan",
         Mutation((SCAN_SWEEP,), lambda p: shutil.copy(p / SWEEP, p / SCAN_SWEEP)), SCAN_SWEEP,
         "not of the images read with it (40, 1, 28, 28)",
         "rerun `dvc repro --force attack@mnist`"),
    case("sweep-other-batch-size", "evaluate", edit_record(SWEEP, lambda b: b.update(batch_size=7)),
         SWEEP, "batch size 7", "rerun `dvc repro --force attack@mnist`"),
    case("measurements-truncated", "label", truncate(MEASUREMENTS), MEASUREMENTS,
         "truncated or corrupt", "rerun `dvc repro --force scan@mnist`"),
    case("measurements-without-a-field", "label",
         edit_record(MEASUREMENTS, lambda b: b.pop("dropped_correct")), MEASUREMENTS,
         "dropped_correct", "rerun `dvc repro --force scan@mnist`"),
    case("measurements-discordant-counts-off", "label",
         edit_record(MEASUREMENTS, lambda b: b["dropped_lost"].add_(1)), MEASUREMENTS,
         "minus dropped_lost", "rerun `dvc repro --force scan@mnist`"),
    case("measurements-without-clean", "label",
         edit_record(MEASUREMENTS, lambda b: b.update(epsilons=[0.05, 0.1, 0.2])), MEASUREMENTS,
         "not the clean images", "rerun `dvc repro --force scan@mnist`"),
    case("layer-of-another-model", "scan",
         edit_record(LAYER, lambda b: b.update(conv_name="fc1")), LAYER, "'fc1'",
         "rerun `dvc repro --force attack@mnist`"),
    case("layer-missing", "harden", remove(LAYER), LAYER, "is missing",
         "rerun `dvc repro --force attack@mnist`"),
    case("targeting-truncated", "correlate", truncate(TARGETING), TARGETING,
         "truncated or corrupt", "rerun `dvc repro --force attack@mnist`"),
    case("targeting-other-neurons", "correlate",
         edit_record(TARGETING, lambda b: b.update(
             {k: b[k][..., :5] for k in ("effect", "relative_effect", "share", "magnitude",
                                         "noise_share", "excess_share", "null_excess",
                                         "filter_gain", "reference_share", "reference_excess",
                                         "reference_excess_halves", "placebo_share",
                                         "placebo_excess", "surrogate_share",
                                         "surrogate_excess")})),
         TARGETING, "holds 5 neurons, not the 32", "rerun `dvc repro --force attack@mnist`"),
    case("labels-missing", "harden", remove(LABELS), LABELS, "is missing",
         "rerun `dvc repro --force label@mnist`"),
    case("labels-malicious", "correlate", torch_file(LABELS, payload), LABELS, "'io.open'",
         "rerun `dvc repro --force label@mnist`"),
    case("labels-without-warnings", "harden", edit_record(LABELS, lambda b: b.pop("warnings")),
         LABELS, "lacks ['warnings']", "rerun `dvc repro --force label@mnist`"),
    case("labels-unknown-label", "harden",
         edit_record(LABELS, lambda b: b["label"].__setitem__(0, "brittle")), LABELS,
         "every label", "rerun `dvc repro --force label@mnist`"),
    case("gains-without-a-field", "evaluate", edit_record(GAINS, lambda b: b.pop("inverse_gain")),
         GAINS, "lacks ['inverse_gain']", "rerun `dvc repro --force harden@mnist`"),
    case("gains-not-finite", "evaluate",
         edit_record(GAINS, lambda b: b["gain"].__setitem__(0, float("inf"))), GAINS,
         "gain must be finite", "rerun `dvc repro --force harden@mnist`"),
    # records that know where they belong (issue 35 item 2): the origin each carries
    case("labels-of-another-run", "harden",
         edit_record(LABELS, lambda b: b["origin"].update(run="twin")), LABELS,
         "was made for run 'twin' (dataset 'mnist'), not for this stage's run 'mnist'",
         "rerun `dvc repro --force label@mnist`"),
    case("targeting-of-another-dataset", "correlate",
         edit_record(TARGETING, lambda b: b["origin"].update(dataset="cifar10")), TARGETING,
         "(dataset 'cifar10'), not for this stage's run 'mnist' (dataset 'mnist')",
         "rerun `dvc repro --force attack@mnist`"),
    case("model-of-other-classes", "attack",
         edit_record(MODEL, lambda b: b["origin"].update(classes=list("abcdefghij"))), MODEL,
         "is of the classes ['a', 'b', 'c', ... (10)]", "rerun `dvc repro --force train@mnist`"),
    case("labels-made-from-another-model", "harden",
         edit_record(LABELS, lambda b: b["origin"]["inputs"].update({MODEL: "0" * 32})), LABELS,
         f"was made from another {MODEL} (md5 {'0' * 32})",
         "rerun `dvc repro --force label@mnist`"),
    case("model-retrained-after-the-hardening", "evaluate",
         edit_record(MODEL, lambda b: b["state_dict"]["fc2.bias"].add_(1e-3)), MODEL,
         f"was made from another {MODEL}", f"{MODEL} changed after it"),
    case("gains-without-an-origin", "evaluate", edit_record(GAINS, lambda b: b.pop("origin")),
         GAINS, "carries no origin", "rerun `dvc repro --force harden@mnist`"),
]  # fmt: skip

# --- hostile sizes, structures and disks (issue 25) ---------------------------------------------

GIB = 1 << 30
# A YAML "billion laughs": 10 levels of 10 aliases each, 10**10 strings once expanded, ~500 bytes.
ALIAS_BOMB = "lol0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)


def sparse(rel: str, size: int, head: bytes = b"") -> Mutation:
    """`rel` replaced by `head` then zeros up to `size` bytes, a sparse file (no disk used)."""

    def apply(project):
        path = project / rel
        path.write_bytes(head)
        os.truncate(path, size)

    return Mutation((rel,), apply)


class Evil:
    """Pickled, this asks the unpickler to call `function(*args)`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def cifar_pickle(rel: str, data: Any) -> Mutation:
    """A CIFAR-10 batch whose 'data' is `data` (pickled by the general pickler, protocol 2)."""
    blob = pickle.dumps({"data": data, "labels": [0]}, protocol=2)
    return file_bytes(rel, lambda _: blob)


def array_of_shape(shape: tuple[int, ...]) -> bytes:
    """A pickled batch whose array's state claims `shape` over 6 bytes of data (the pickle as
    numpy writes it for a 2 x 3 uint8 array, with the shape rewritten)."""
    import numpy as np

    blob = pickle.dumps({"data": np.zeros((2, 3), np.uint8), "labels": [0, 0]}, protocol=2)
    old = b"K\x02K\x03\x86"  # BININT1 2, BININT1 3, TUPLE2: the state's shape
    assert blob.count(old) == 1
    return blob.replace(old, b"".join(b"J" + struct.pack("<i", n) for n in shape) + b"\x86")


def checkpoint(channels: int, size: int, classes: int) -> Mutation:
    """models/mnist/model.pt replaced by a fresh mnist_cnn for other images or classes, its
    spec and weights consistent."""

    def apply(project):
        model = build_model(
            "mnist_cnn", channels, size, classes, [0.5] * channels, [0.25] * channels
        )
        save_checkpoint(project / MODEL, model, {"arch": "mnist_cnn", "channels": channels,
                                                 "size": size, "classes": classes})  # fmt: skip

    return Mutation((MODEL,), apply)


def state(rel: str, edit: Callable[[dict], Any]) -> Mutation:
    """A checkpoint's state_dict edited in place."""
    return edit_record(rel, lambda blob: edit(blob["state_dict"]))


def cifar_images(split: dict) -> None:
    """A prepared split's images swapped for 3 x 32 x 32 ones (and its mean and std for three
    channels): a split of another dataset."""
    n = len(split["labels"])
    split.update(images=torch.zeros(n, 3, 32, 32, dtype=torch.uint8), mean=torch.full((3,), 0.5),
                 std=torch.full((3,), 0.25))  # fmt: skip


def raising(where: Any, name: str, code: int) -> Callable[[], None]:
    """A fault: `where.name` replaced by a function that fails with OSError `code`."""

    def fault():
        def fail(*args, **kwargs):
            raise OSError(code, os.strerror(code))

        setattr(where, name, fail)

    return fault


CHATTR = shutil.which("chattr")


def freeze(rel: str) -> Mutation:
    """`rel` (a folder) made immutable (chattr +i): nothing in it can be created, replaced or
    removed, not even by root."""

    def apply(project):
        subprocess.run([CHATTR, "+i", str(project / rel)], check=True, capture_output=True)

    return Mutation((), apply)


def unfreeze(project: Path) -> None:
    """Undo `freeze` anywhere in the project (a no-op where nothing is frozen)."""
    if CHATTR is not None:
        subprocess.run([CHATTR, "-R", "-i", str(project)], capture_output=True)


def can_freeze() -> bool:
    if CHATTR is None or os.geteuid() != 0:
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([CHATTR, "+i", tmp], capture_output=True).returncode == 0
        subprocess.run([CHATTR, "-i", tmp], capture_output=True)
    return done


# --- hostile inputs, round three (issue 35) -----------------------------------------------------


class _Replay:
    """Deflate's output for blocks of zeros, made once and replayed: after a full flush deflate
    starts afresh, so every block of zeros compresses to the same bytes."""

    def __init__(self, block: bytes):
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        self.packed = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)

    def compress(self, data: bytes) -> bytes:
        return self.packed

    def flush(self) -> bytes:
        return b""


def storage_claim(rel: str, name: str, elements: int, deflated: bool) -> Mutation:
    """A checkpoint whose weight `name` (or a record whose field `name`) has its storage claim
    `elements` values (its shape unchanged), backed by an entry of that many zero elements,
    deflated (a "zip bomb": 4 GB in a few MB), or where not `deflated` by its entry as it was."""

    def apply(project):
        path = project / rel
        blob = torch.load(path, map_location="meta", weights_only=True)
        tensors = blob.get("state_dict", blob)
        tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        key = str(list(tensors).index(name))  # storages are numbered in the order saved
        size = elements * tensors[name].element_size()
        with zipfile.ZipFile(path) as src:
            entries = [(info, src.read(info)) for info in src.infolist()]
        prefix = entries[0][0].filename.split("/")[0]
        block = bytes(1 << 24)
        with zipfile.ZipFile(path, "w") as out:
            for info, data in entries:
                if info.filename == f"{prefix}/data.pkl":  # the storage's numel, rewritten
                    # ('storage', <type>, key, location, numel): key, a memo put, location
                    # ('cpu', or the memo of it), then numel as BININT1, BININT2 or BININT
                    head = b"X" + struct.pack("<I", len(key)) + key.encode()
                    found = re.compile(
                        re.escape(head) + rb"(?:q.|r....)(?:h.|j....|X\x03\0\0\0cpu(?:q.|r....))",
                        re.S,
                    )
                    (match,) = found.finditer(data)
                    numel = re.compile(rb"K.|M..|J....", re.S).match(data, match.end())
                    new = b"J" + struct.pack("<i", elements)
                    data = data[: numel.start()] + new + data[numel.end() :]
                if info.filename != f"{prefix}/data/{key}" or not deflated:
                    out.writestr(info, data)
                else:
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with out.open(info, "w", force_zip64=True) as entry:
                        entry._compressor = _Replay(block)
                        for _ in range(size // len(block)):
                            entry.write(block)
                        entry._compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # goes on
                        entry.write(bytes(size % len(block)))

    return Mutation((rel,), apply)


def recompressed(rel: str) -> Mutation:
    """A record re-zipped with every entry deflated (small, but not as torch.save writes)."""

    def apply(project):
        path = project / rel
        with zipfile.ZipFile(path) as src:
            entries = [(info, src.read(info)) for info in src.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
            for info, data in entries:
                info.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(info, data)

    return Mutation((rel,), apply)


def fifo(rel: str) -> Mutation:
    """`rel` replaced by a FIFO (named pipe) that no one writes: opening it to read would wait
    forever."""

    def apply(project):
        (project / rel).unlink()
        os.mkfifo(project / rel)

    return Mutation((rel,), apply)


def link(rel: str, target: str) -> Mutation:
    def apply(project):
        (project / rel).unlink()
        (project / rel).symlink_to(target)

    return Mutation((rel,), apply)


def split_index(rel: str, edit: Callable[[dict, Path], None]) -> Mutation:
    """A prepared split edited by edit(split, project)."""

    def make(project):
        blob = record(project, rel)
        edit(blob, project)
        return blob

    return torch_file(rel, make)


def take_selection(split: dict, project: Path) -> None:
    """The train split's first 5 images replaced by the selection split's (index, images and
    labels): the selection split trained on."""
    selection = record(project, SELECTION_SPLIT)
    for key in ("index", "images", "labels"):
        split[key][:5] = selection[key][:5]


# Builders of one's own (runs.mnist.arch = archs.<module>:build), each a model that lies
BUILDER_HEAD = """from torch import nn


def head(channels, size, classes, width=4):
    side = (size - 2) // 2
    return [("pool", nn.MaxPool2d(2)), ("relu", nn.ReLU()), ("flatten", nn.Flatten()),
            ("fc", nn.Linear(width * side * side, classes))]
"""
LIARS = {
    "always_training": BUILDER_HEAD
    + """

class Stubborn(nn.BatchNorm2d):
    def train(self, mode=True):
        return super().train(True)


def build(channels, size, classes):
    return [("conv1", nn.Conv2d(channels, 4, 3)), ("bn1", Stubborn(4)), *head(channels, size,
                                                                             classes)]
""",
    "no_running_stats": BUILDER_HEAD
    + """

def build(channels, size, classes):
    return [("conv1", nn.Conv2d(channels, 4, 3)),
            ("bn1", nn.BatchNorm2d(4, track_running_stats=False)), *head(channels, size, classes)]
""",
    "batch_mean": BUILDER_HEAD
    + """

class Centre(nn.Module):
    def forward(self, x):
        return x - x.mean(0, keepdim=True)


def build(channels, size, classes):
    return [("conv1", nn.Conv2d(channels, 4, 3)), ("centre", Centre()), *head(channels, size,
                                                                            classes)]
""",
    "one_neuron": BUILDER_HEAD
    + """

def build(channels, size, classes):
    return [("conv1", nn.Conv2d(channels, 1, 3)), *head(channels, size, classes, width=1)]
""",
}


def builder(module: str) -> Mutation:
    """runs.mnist.arch set to archs.<module>:build, LIARS[module] written there."""

    def apply(project):
        (project / "archs").mkdir(exist_ok=True)
        (project / "archs/__init__.py").write_text("")  # a package, as the project's archs/ is
        (project / f"archs/{module}.py").write_text(LIARS[module])
        set_param("runs.mnist.arch", f"archs.{module}:build").apply(project)

    return Mutation(("params.yaml", "archs/__init__.py", f"archs/{module}.py"), apply)


def one_neuron_checkpoints() -> Mutation:
    """The run's model, reference and placebo trained (here: built) with the one_neuron builder: a
    scanned layer of 1 neuron. Built in this process from the same layers, without importing the
    file."""

    def apply(project):
        builder("one_neuron").apply(project)
        from torch import nn

        from fragile_neurons.network.models import Normalize

        spec = {"arch": "archs.one_neuron:build", "channels": 1, "size": 28, "classes": 10}
        for rel in (MODEL, REFERENCE, PLACEBO):
            layers = [
                ("conv1", nn.Conv2d(1, 1, 3)),
                ("pool", nn.MaxPool2d(2)),
                ("relu", nn.ReLU()),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(169, 10)),
            ]
            model = nn.Sequential(OrderedDict([("normalize", Normalize([0.5], [0.25])), *layers]))
            with chdir(project), origin.within(RUN, "mnist"):  # as the run's train stage would
                save_checkpoint(rel, model, spec)

    return Mutation(
        ("params.yaml", "archs/__init__.py", "archs/one_neuron.py", MODEL, REFERENCE, PLACEBO),
        apply,
    )


BUILDER_KEY = "runs.mnist.arch"
LONG_LIST = "seed=[" + ",".join(str(i) for i in range(10_000)) + "]"

FROZEN = pytest.mark.skipif(not can_freeze(), reason="needs root and a file system with chattr +i")
RERUN_TRAIN = "rerun `dvc repro --force train@mnist`"
RERUN_HARDEN = "rerun `dvc repro --force harden@mnist`"
SIZE = "more than a"

HOSTILE_CASES = [
    # params.yaml: structure and size
    case("yaml-alias-bomb", "check", params_text(lambda text: ALIAS_BOMB + text), "params.yaml",
         "<more than 100000 values by line 5>", "at most 100000 values once its aliases (*name)"),
    case("yaml-alias-bomb-in-a-stage", "train", params_text(lambda text: ALIAS_BOMB + text),
         "params.yaml", "<more than 100000 values", "once its aliases (*name) are expanded"),
    case("yaml-alias-doubling-40-deep", "check",
         params_text(lambda text: "l0: &a0 [x, x]\n" + "".join(
             f"l{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 41)) + text),
         "params.yaml", "<more than 100000 values by line 15>", "expanded (DVC expands them"),
    case("yaml-nested-10000-deep", "check",
         params_text(lambda text: text + "deep: " + "[" * 10_000 + "]" * 10_000 + "\n"),
         "params.yaml", "<nested too deep>", "nested at most 32 levels"),
    case("yaml-10-GB-sparse", "check", sparse("params.yaml", 10 * GIB, b"seed: 0\n"),
         "params.yaml", f"<{10 * GIB} bytes>", "a YAML file of at most 1048576 bytes"),
    case("yaml-2-MB-of-comments", "check",
         params_text(lambda text: text + ("# " + "x" * 98 + "\n") * 20_000), "params.yaml",
         "<202", "at most 1048576 bytes"),
    case("seed-a-string-of-900-kB", "check", set_param("seed", "x" * 900_000), "seed", "'xxxx",
         "an integer >= 0"),
    case("runs-101", "check",
         params_edit(lambda params, _: params["runs"].update(
             {f"r{i}": copy.deepcopy(params["runs"][RUN]) for i in range(100)})),
         "runs", "{'mnist': ", "at most 100 runs"),
    case("run-name-non-ascii", "check", rename_run("mnïst"), "runs", "'mnïst'", "ASCII only"),
    # cost knobs
    case("random_controls-1000000", "check", set_param("harden.random_controls", 1_000_000),
         "harden.random_controls", "1000000", "at most 1000 (the permutation p-value's floor"),
    case("pgd-steps-1000000", "check", set_param("evaluate.pgd.steps", 1_000_000),
         "evaluate.pgd.steps", "1000000", "at most 1000"),
    case("autoattack-steps-1000000", "check", set_param("evaluate.autoattack.steps", 1_000_000),
         "evaluate.autoattack.steps", "1000000", "at most 1000 (AutoAttack's standard is 100)"),
    case("autoattack-images-beyond-a-test-split", "check",
         set_param("evaluate.autoattack.images", 10_001), "evaluate.autoattack.images", "10001",
         "at most 10000"),
    case("samples-10**9", "check", set_param("evaluate.samples", 10**9), "evaluate.samples",
         "1000000000", "at most 10000"),
    case("threads-1000000", "check", set_param("threads", 1_000_000), "threads", "1000000",
         "at most 1024"),
    case("batch_size-10**9", "check", set_param("batch_size", 10**9), "batch_size", "1000000000",
         "at most 60000"),
    case("epsilons-65", "check",
         set_param("runs.mnist.attack.epsilons", [i / 100 for i in range(65)]),
         "runs.mnist.attack.epsilons", "[0.0, 0.01", "at most 64 epsilons"),
    case("sweep-of-100000-seeds", "check", NOTHING, "-S", "'seed=range(0,100000)'",
         "at most 100 experiments", args=("-S", "seed=range(0,100000)")),
    case("sweep-of-10**12-seeds", "check", NOTHING, "-S", "'seed=range(0,1000000000000)'",
         "--max-experiments N", args=("-S", "seed=range(0,1000000000000)")),
    case("sweep-product-over-the-limit", "check", NOTHING, "-S",
         "'seed=range(0,30) label.score=clean,adversarial,difference,clean'",
         "at most 100 experiments",
         args=("-S", "seed=range(0,30)", "-S", "label.score=clean,adversarial,difference,clean")),
    case("max-experiments-0", "check", NOTHING, "--max-experiments", "0", "an integer >= 1",
         args=("--max-experiments", "0", "-S", "seed=1")),
    # epsilon names and messages
    case("epsilon-names-collide", "check",
         set_param("runs.mnist.attack.epsilons", [0, 0.1, 0.1000001]),
         "runs.mnist.attack.epsilons", "[0, 0.1, 0.1000001]",
         "0.1 and 0.1000001 are both named '0.1'"),
    case("epsilon-names-collide-at-6-digits", "check",
         set_param("runs.mnist.attack.epsilons", [0, 0.123456, 0.1234561]),
         "runs.mnist.attack.epsilons", "0.1234561", "are both named '0.123456'"),
    case("data.root-a-file", "prepare",
         both(Mutation(("rootfile",), lambda p: (p / "rootfile").write_text("x")),
              set_param("data.root", "rootfile")),
         "data.root", "'rootfile'", "a folder (torchvision's root"),
    # raw files: sizes before reading, the unpickler's arrays
    case("idx-12-GB-sparse", "prepare", sparse(IDX, 12 * 10**9), IDX,
         f"is {12 * 10**9} bytes", f"{SIZE} t10k-images-idx3-ubyte can be (7840016 bytes)"),
    case("idx-3-GB-sparse-pinned", "prepare",
         both(sparse(LABELS_IDX, 3 * GIB, struct.pack(">II", 2049, 3 * GIB - 8)),
              set_param("data.accept_checksum_mismatch.mnist.train-labels-idx1-ubyte", "0" * 32)),
         LABELS_IDX, f"is {3 * GIB} bytes", f"{SIZE} train-labels-idx1-ubyte can be (60008"),
    case("cifar-batch-2-GB-sparse-pinned", "prepare", both(cifar_run(None), sparse(BATCH, 2 * GIB)),
         BATCH, f"is {2 * GIB} bytes", f"{SIZE} data_batch_1 can be ({64 << 20} bytes)",
         run="cifar"),
    case("cifar-meta-1-MB", "prepare", both(cifar_run(None), sparse(META, 1 << 20)), META,
         f"is {1 << 20} bytes", f"{SIZE} batches.meta can be ({64 << 10} bytes)", run="cifar"),
    case("cifar-ndarray-called", "prepare",
         cifar_run(cifar_pickle(BATCH, Evil(__import__("numpy").ndarray, (400_000_000,), "f4"))),
         BATCH, "numpy.ndarray to be called", "Refusing to load it", run="cifar"),
    case("cifar-array-of-10**10-bytes", "prepare",
         cifar_run(file_bytes(BATCH, lambda _: array_of_shape((100_000, 100_000)))), BATCH,
         "an array of shape (100000, 100000)", "Refusing to load it", run="cifar"),
    case("cifar-reconstruct-of-a-shape", "prepare",
         cifar_run(cifar_pickle(BATCH, Evil(cifar._reconstruct, __import__("numpy").ndarray,
                                            (400_000_000,), b"f"))),
         BATCH, "array reconstruction with arguments numpy never writes", "Refusing", run="cifar"),
    case("cifar-object-array", "prepare",
         cifar_run(cifar_pickle(BATCH, __import__("numpy").array([None, 1], dtype=object))),
         BATCH, "an array of dtype 'object'", "Refusing to load it", run="cifar"),
    case("cifar-codec-hex", "prepare",
         cifar_run(cifar_pickle(BATCH, Evil(codecs.encode, "ab" * 8, "hex"))), BATCH,
         "_codecs.encode with codec 'hex'", "Refusing to load it", run="cifar"),
    # checkpoints and prepared splits against the run
    case("model-of-3-channels", "attack", checkpoint(3, 28, 10), MODEL,
         "a model of 3 x 28 x 28 images and 10 classes", "not of mnist's 1 x 28 x 28 images"),
    case("model-of-100-classes", "scan", checkpoint(1, 28, 100), MODEL, "and 100 classes",
         RERUN_TRAIN),
    case("model-spec-size-1000", "attack",
         edit_record(MODEL, lambda blob: blob["spec"].update(size=1000)), MODEL,
         "1000 x 1000 images", "not of mnist's 1 x 28 x 28"),
    case("hardened-spec-size-1000", "evaluate",
         edit_record(HARDENED, lambda blob: blob["spec"].update(size=1000)), HARDENED,
         "is a model of 1 x 1000 x 1000 images", RERUN_HARDEN),  # against the run's dataset
    case("hardened-weight-of-another-shape", "evaluate",
         edit_record(HARDENED, lambda blob: blob["state_dict"].update(
             {"fc1.weight": torch.zeros(128, 7)})), HARDENED,
         "is (128, 7), not (128, 1600) as its spec builds it", RERUN_HARDEN),
    case("model-nan-weight", "attack",
         state(MODEL, lambda s: s["fc2.weight"].__setitem__((0, 0), float("nan"))), MODEL,
         "its weight fc2.weight is not finite", RERUN_TRAIN),
    case("model-std-0", "harden", state(MODEL, lambda s: s["normalize.std"].zero_()), MODEL,
         "normalisation std [0.0] is not > 0", RERUN_TRAIN),
    case("model-dead", "attack",
         state(MODEL, lambda s: (s["fc2.weight"].zero_(), s["fc2.bias"].zero_())), MODEL,
         "predicts class 0 for every one of 40 images of the scan set S",
         "a dead or degenerate model"),
    case("model-overflowing", "attack",
         state(MODEL, lambda s: s["fc2.weight"].mul_(1e38)), MODEL,
         "gives non-finite logits on 40 images", RERUN_TRAIN),
    case("hardened-nan-weight", "evaluate",
         state(HARDENED, lambda s: s["conv1.weight"].__setitem__(0, float("nan"))), HARDENED,
         "its weight conv1.weight is not finite", RERUN_HARDEN),
    case("selection-split-of-cifar-images", "attack", edit_record(SELECTION_SPLIT, cifar_images),
         SELECTION_SPLIT, "holds 3 x 32 x 32 images", "not mnist's 1 x 28 x 28"),
    case("selection-split-of-cifar-images-at-scan", "scan",
         edit_record(SELECTION_SPLIT, cifar_images), SELECTION_SPLIT, "holds 3 x 32 x 32 images",
         RERUN_PREPARE),
    case("test-split-of-cifar-images-at-evaluate", "evaluate",
         edit_record(TEST_SPLIT, cifar_images), TEST_SPLIT, "holds 3 x 32 x 32 images",
         RERUN_PREPARE),
    case("train-split-std-0", "train", edit_record(TRAIN_SPLIT, lambda s: s["std"].zero_()),
         TRAIN_SPLIT, "its std is not 1 finite numbers > 0", RERUN_PREPARE),
    case("test-split-mean-nan", "attack",
         edit_record(TEST_SPLIT, lambda s: s["mean"].fill_(float("nan"))), TEST_SPLIT,
         "its mean is not 1 finite numbers", RERUN_PREPARE),
    # issue 35: checkpoints that claim gigabytes
    case("model-storage-claims-4-GB-deflated", "attack",
         storage_claim(MODEL, "fc2.bias", 10**9, deflated=True), MODEL,
         "unpacks to 4000", "rerun `dvc repro --force train@mnist`"),
    case("model-storage-claims-more-than-its-weight", "scan",
         storage_claim(MODEL, "fc2.bias", 1000, deflated=False), MODEL,
         "its weight fc2.bias of 10 elements lies in a storage of 4000 bytes", RERUN_TRAIN),
    case("reference-storage-claims-4-GB-deflated", "attack",
         storage_claim(REFERENCE, "fc2.bias", 10**9, deflated=True),
         REFERENCE, "unpacks to 4000",
         "rerun `dvc repro --force reference@mnist`"),
    case("sweep-logits-claim-4-GB-deflated", "evaluate",
         storage_claim(SWEEP, "clean_logits", 10**9, deflated=True), SWEEP,
         "unpacks to 4000", "rerun `dvc repro --force attack@mnist`"),
    case("sweep-logits-claim-more-than-the-archive", "evaluate",
         storage_claim(SWEEP, "clean_logits", 10**6, deflated=False), SWEEP,
         "claims a storage of 4000000 bytes",
         "rerun `dvc repro --force attack@mnist`"),
    case("selection-split-entries-deflated", "scan", recompressed(SELECTION_SPLIT),
         SELECTION_SPLIT, "holds compressed entries", RERUN_PREPARE),
    case("hardened-weight-float64", "evaluate",
         state(HARDENED, lambda s: s.update({"fc2.bias": s["fc2.bias"].double()})), HARDENED,
         "its weight fc2.bias is torch.float64, not torch.float32", RERUN_HARDEN),
    # split integrity
    case("train-split-shares-selection-images", "train",
         split_index(TRAIN_SPLIT, take_selection), TRAIN_SPLIT, SELECTION_SPLIT,
         "share 5 raw images"),
    case("train-split-shares-selection-images-at-reference", "reference",
         split_index(TRAIN_SPLIT, take_selection), TRAIN_SPLIT, SELECTION_SPLIT,
         "the selection split must never be trained on"),
    case("test-split-index-beyond-the-raw-split", "attack",
         split_index(TEST_SPLIT, lambda s, _: s["index"].__setitem__(0, 10_000)), TEST_SPLIT,
         "raw position 10000", "beyond mnist's raw test split of 10000 images"),
    # models that lie
    case("arch-batchnorm-always-training", "train", builder("always_training"), BUILDER_KEY,
         "'archs.always_training:build'", "stay in train mode after .eval()"),
    case("arch-batchnorm-without-running-stats", "train", builder("no_running_stats"),
         BUILDER_KEY, "'archs.no_running_stats:build'", "keeps no running statistics"),
    case("arch-logits-depend-on-the-batch", "train", builder("batch_mean"), BUILDER_KEY,
         "'archs.batch_mean:build'", "between one batch and two of 4"),
    case("scanned-layer-of-1-neuron", "attack", one_neuron_checkpoints(), "scan.layer",
         "'conv1' has 1 neuron", "needs at least 2"),
    # numbers that break downstream
    case("epsilon-1e-300", "check", set_param("runs.mnist.attack.epsilons", [0, 1e-300]),
         "runs.mnist.attack.epsilons", "1e-300", "0 or at least 1/255"),
    case("epsilon-1e-40-among-others", "check",
         set_param("runs.mnist.attack.epsilons", [0, 1e-40, 0.1]), "runs.mnist.attack.epsilons",
         "1e-40", "changes no pixel of an 8-bit image"),
    case("train-batch_size-10**9", "check", set_param("runs.mnist.train.batch_size", 10**9),
         "runs.mnist.train.batch_size", "1000000000", "at most 60000"),
    case("batch_size-60000-at-attack", "attack", set_param("batch_size", 60_000), "batch_size",
         "60000", "a batch that fits this machine's memory"),
    case("train-batch_size-60000-at-train", "train",
         set_param("runs.mnist.train.batch_size", 60_000), "runs.mnist.train.batch_size", "60000",
         "GiB is available"),
    case("threads-1024", "check", set_param("threads", 1024), "threads", "1024",
         "CPU cores this machine lets the stage use",
         marks=pytest.mark.skipif(len(os.sched_getaffinity(0)) >= 1024, reason="1024 cores")),
    # params.yaml and inputs: regular files only
    case("params-a-fifo", "check", fifo("params.yaml"), "params.yaml", "<a FIFO (named pipe)>",
         "a regular file of YAML"),
    case("params-a-fifo-in-a-stage", "attack", fifo("params.yaml"), "params.yaml",
         "<a FIFO (named pipe)>", "a regular file"),
    case("params-dev-zero", "check", link("params.yaml", "/dev/zero"), "params.yaml",
         "<a character device>", "a regular file"),
    case("model-a-fifo", "attack", fifo(MODEL), MODEL, "is a FIFO (named pipe)", RERUN_TRAIN),
    case("sweep-dev-zero", "evaluate", link(SWEEP, "/dev/zero"), SWEEP,
         "is a character device, not a regular file", "rerun `dvc repro --force attack@mnist`"),
    case("raw-idx-a-fifo", "prepare", fifo(IDX), IDX,
         "is a FIFO (named pipe), not a regular file", "put torchvision's file there"),
    # harden.max_gain and check -S
    case("max_gain-1", "check", set_param("harden.max_gain", 1.0), "harden.max_gain", "1.0",
         "a gain of at most 1 amplifies no neuron"),
    case("override-a-list-of-10000-values", "check", NOTHING, "-S", "'seed=[0,1,2,",
         "lists and mappings of at most 1000 values", args=("-S", LONG_LIST)),
    # writes that the disk, a limit or the folder refuses
    case("file-size-limit", "harden", NOTHING, HARDENED, "larger than the file-size limit",
         "Lift the limit", file_limit=64 << 10),
    case("file-size-limit-at-train", "train", Mutation(TRAIN_CURVES, lambda _: None), MODEL,
         "larger than the file-size limit", "Lift the limit", file_limit=64 << 10),
    case("no-space-left", "attack", NOTHING, SWEEP, "no space left on the device",
         "Free some space", fault=raising(os, "replace", errno.ENOSPC)),
    case("read-only-file-system", "scan", NOTHING, MEASUREMENTS, "the file system is read-only",
         "Mount it read-write", fault=raising(__import__("tempfile"), "mkstemp", errno.EROFS)),
    case("permission-denied", "correlate", NOTHING, "metrics/mnist/correlate/",
         "permission denied", "Give this user write access",
         fault=raising(__import__("tempfile"), "mkstemp", errno.EACCES)),
    case("immutable-views-folder", "correlate", freeze("data/views/mnist/correlate"),
         "data/views/mnist/correlate/correlate.json", "operation not permitted", "Make it writable",
         marks=FROZEN),
]  # fmt: skip

CASES = PARAMS_CASES + RUN_NAME_CASES + DATA_CASES + HOSTILE_CASES


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture
def project(pristine, tmp_path) -> Path:
    copy_ = tmp_path / "project"
    shutil.copytree(pristine[0], copy_)
    return copy_


@pytest.mark.parametrize("bad", CASES)
def test_a_bad_input_is_one_line_and_exit_status_2(bad: Case, project, pristine):
    bad.mutation.apply(project)
    try:
        status, stderr = run_bounded(
            project, bad.stage, bad.run, bad.args, bad.fault, bad.file_limit
        )
    finally:
        unfreeze(project)
    assert status != 0, f"{bad.stage} accepted it"
    assert status == 2, f"exit status {status}: {stderr}"
    assert stderr.startswith("error: ") and stderr.endswith("\n"), stderr
    assert stderr.count("\n") == 1 and "\r" not in stderr, stderr
    given = bad.given(project) if callable(bad.given) else bad.given
    for what, fragment in (("key or file", bad.key), ("given", given), ("allowed", bad.allowed)):
        assert fragment in stderr, f"the line does not name the {what} {fragment!r}: {stderr}"
    assert "weights_only=False" not in stderr
    assert not (project.parent / MARKER).exists(), "the payload ran"

    changed = set(bad.mutation.paths)
    after = md5s(project, skip=changed)
    before = {p: h for p, h in pristine[1].items() if p not in changed}
    assert after == before, "an output changed, or a new file appeared"


def test_evaluate_without_torchattacks_is_one_line(project, pristine, capsys, monkeypatch):
    """The masking check on and torchattacks not importable (`pip install -e .` without `make
    setup`): evaluate stops with one line naming the key and both remedies, before any work."""
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # any import of it now fails
    capsys.readouterr()
    with chdir(project), pytest.raises(SystemExit) as err:
        run("evaluate")
    stderr = capsys.readouterr().err
    assert err.value.code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: params: evaluate.autoattack.images = 8 is not allowed; ")
    assert "expected 0" in stderr and "`make setup`" in stderr
    assert md5s(project) == pristine[1]  # nothing written


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40
    assert len(HOSTILE_CASES) >= 25


def test_the_payloads_are_live(tmp_path):
    """What the malicious files hold runs under the general unpickler: the marker appears."""
    project = tmp_path / "project"
    project.mkdir()
    pickle.loads(pickle.dumps(payload(project), protocol=2))
    assert (tmp_path / MARKER).exists()
    (tmp_path / MARKER).unlink()

    saved = io.BytesIO()
    torch.save(payload(project), saved)
    with zipfile.ZipFile(saved) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        pickle.loads(archive.read(name))  # no tensors in it: no persistent ids to resolve
    assert (tmp_path / MARKER).exists()


def test_an_untampered_cifar_run_prepares(project, capsys):
    """The CIFAR cases fail for the tampered file alone: with none, `prepare cifar` runs."""
    cifar_run(None).apply(project)
    with chdir(project):
        run("prepare", "cifar")
    assert (project / "data/prepared/cifar/test.pt").is_file()
    assert "error" not in capsys.readouterr().err


def test_no_stage_reads_a_plot_or_a_metrics_file(project, pristine):
    """Plots, metrics and their cached views are written for people: with none of them there,
    scan, label, correlate, harden, baseline and evaluate run from the records alone and write
    theirs again, byte for byte."""
    for folder in ("plots", "metrics", "data/views"):
        shutil.rmtree(project / folder)
    rerun = ("scan", "label", "correlate", "harden", "baseline", "evaluate")
    with chdir(project), redirect_stderr(io.StringIO()):
        for stage in rerun:
            run(stage)
    after = md5s(project)
    assert {p: pristine[1][p] for p in after} == after  # every file as it was
    written = tuple(f"{top}/mnist/{stage}/" for top in ("data/views", "metrics") for stage in rerun)
    people = [p for p in pristine[1] if p.startswith(("plots/", "metrics/", "data/views/"))]
    assert {p for p in pristine[1] if p not in after} == {
        p for p in people if not p.startswith(written)
    }  # the published copies (publish did not run) and the earlier stages' files


# --- signals: a stage stopped mid-run leaves every output whole or as it was --------------------

ROOT = Path(__file__).resolve().parents[1]


def long_training(project: Path) -> None:
    """Train for long enough to be stopped mid-run (the tiny split: a fraction of a second per
    epoch)."""
    set_param("runs.mnist.train.epochs", 500).apply(project)


def wait_for_an_epoch(project: Path, process: subprocess.Popen) -> None:
    """Until train's curves are rewritten (an epoch done: the stage's signal handling is in
    place). DVCLive clears its folder when the first epoch ends: a moment without the file."""
    csv = project / TRAIN_CSV

    def stamp() -> int | None:
        try:
            return csv.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    before = stamp()
    deadline = time.monotonic() + TIME_CAP
    while stamp() in (before, None):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)


def assert_whole_or_as_it_was(project: Path, pristine: dict[str, str]) -> None:
    """No temporary file left; the checkpoint and the metrics as they were; train.csv (rewritten
    after every epoch) whole; nothing else changed."""
    assert not [p for p in project.rglob("*.tmp")], "a temporary file was left"
    after = md5s(project, skip={"params.yaml", *TRAIN_CURVES})
    assert after == {p: h for p, h in pristine.items() if p not in ("params.yaml", *TRAIN_CURVES)}
    header = (project / TRAIN_CSV).read_text().splitlines()[0]
    assert "step" in header


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_stage_says_so_in_one_line_and_leaves_no_partial_output(
    signum, project, pristine
):
    long_training(project)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), RUN],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_an_epoch(project, process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=TIME_CAP)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: train mnist stopped by "), stderr
    assert signal.Signals(signum).name in stderr
    assert_whole_or_as_it_was(project, pristine[1])


PARENT = """
import shlex, subprocess, sys, time
command = [sys.executable, sys.argv[1], "mnist"]
if sys.argv[2] == "shell":  # as DVC runs a stage where $SHELL is dash: `sh -c <cmd>`, sh stays
    command = ["/bin/sh", "-c", shlex.join(command) + "; exit $?"]
child = subprocess.Popen(command, stderr=subprocess.DEVNULL)
pid = child.pid
if sys.argv[2] == "shell":
    children = f"/proc/{pid}/task/{pid}/children"
    while not open(children).read().split():
        time.sleep(0.01)
    pid = int(open(children).read().split()[0])
print(pid, flush=True)
child.wait()
"""


def exited(pid: int) -> bool:
    """Whether process `pid` is gone or a zombie (exited, not yet reaped by its new parent)."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal")
@pytest.mark.parametrize("via", ["exec", "shell"])
def test_a_stage_whose_runner_dies_stops_too(via, project, pristine):
    """As when DVC is killed mid-stage: the stage must not go on to write its outputs outside
    DVC's lock. The runner here is a Python process that runs the stage as DVC does: directly
    (a shell that execs the command, as bash does) or behind `sh -c` that stays (dash)."""
    long_training(project)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(ROOT / "stages" / "train.py"), via],
        cwd=project,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(parent.stdout.readline())
        wait_for_an_epoch(project, parent)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + TIME_CAP
        while not exited(child):
            assert time.monotonic() < deadline, "the stage outlived its parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        if not exited(child):
            os.kill(child, signal.SIGKILL)
    assert_whole_or_as_it_was(project, pristine[1])


def test_a_refused_layer_is_not_listed_among_the_allowed():
    """scan.layer naming a convolution that never runs: the allowed names are those that do."""
    from torch import nn

    from fragile_neurons.network.layers import resolve_layer
    from fragile_neurons.running.errors import ParamError

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.unused = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x).flatten(1)

    with pytest.raises(ParamError) as err:
        resolve_layer(Model(), torch.zeros(1, 1, 8, 8), "unused")
    assert str(err.value).endswith("expected null or the name of an nn.Conv2d the model runs: "
                                   "['conv']")  # fmt: skip


def test_a_few_aliases_are_fine(project):
    """Aliases that expand to a few values (as PyYAML writes a subtree used twice) pass the check,
    and are read as their expansion."""
    params = read_params(project)
    params["runs"]["again"] = params["runs"][RUN]  # the same object: yaml dumps an alias
    write_params(project, params)
    text = (project / "params.yaml").read_text()
    assert "&id001" in text and "*id001" in text
    from fragile_neurons.running.config import load_params

    loaded = load_params(project / "params.yaml")
    assert loaded["runs"]["again"] == loaded["runs"][RUN]


# --- the command line: report, sweep, check and the command itself (issue 23) -----------------
# Each case runs `fragile-neurons <args>` in-process in a copy of the committed params.yaml,
# metrics/ and README.md, after `prepare(folder)`; it must be argparse's usage and one line
# `fragile-neurons[ <command>]: error: ...` holding each fragment on stderr, exit status 2, and
# leave every file as it was.


class CommandCase(NamedTuple):
    id: str
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    prepare: Callable[[Path], None] = lambda folder: None


def _write(path: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / path).write_text(text)


COMMAND_CASES = [
    CommandCase("no-command", (), ("no command", "check, report, sweep")),
    CommandCase("unknown-command", ("chekc",), ("unknown command 'chekc'", "check, report, sweep")),
    CommandCase("unknown-option-as-command", ("--bogus",), ("unknown option '--bogus'",)),
    CommandCase("check-unknown-key", ("check", "-S", "harden.compres=0.25"),
                ("harden.compres = 0.25 is not allowed", "known keys here", "'compress'")),
    CommandCase("check-unknown-section", ("check", "-S", "hardenn.compress=0.25"),
                ("hardenn = ", "is not allowed")),
    CommandCase("sweep-from-missing", ("sweep", "--from", "missing.json"),
                ("--from missing.json: cannot be read", "No such file")),
    CommandCase("sweep-from-empty", ("sweep", "--from", "empty.json"),
                ("--from empty.json: not valid JSON",), _write("empty.json", "")),
    CommandCase("sweep-from-not-a-summary", ("sweep", "--from", "other.json"),
                ("other.json: 'rev' is 'missing'", "a sweep summary"),
                _write("other.json", '{"accuracy": 0.9}')),
    CommandCase("sweep-from-a-list", ("sweep", "--from", "list.json"),
                ("list.json:  is not an object",), _write("list.json", "[1, 2]")),
    CommandCase("sweep-from-a-bad-group", ("sweep", "--from", "group.json"),
                ("groups[0].'members' is 'missing'",),
                _write("group.json", '{"rev": "abc", "by": [], "pooled": {}, "left_out": [], '
                                     '"groups": [{"label": "all", "params": {}, '
                                     '"baseline": true, "runs": {}}]}')),
    CommandCase("sweep-from-a-bad-statistic", ("sweep", "--from", "stat.json"),
                ("runs['mnist']['train.test_accuracy'].'n' is 'missing'",),
                _write("stat.json", '{"rev": "abc", "by": [], "pooled": {}, "left_out": [], '
                                    '"groups": [{"label": "all", "params": {}, '
                                    '"baseline": true, "members": [], '
                                    '"runs": {"mnist": {"train.test_accuracy": {}}}}]}')),
    CommandCase("sweep-outside-git", ("sweep", "--seeds"), ("HEAD is not a commit here",)),
    CommandCase("report-params-missing", ("report", "--params", "missing.yaml"),
                ("--params missing.yaml: no such file",)),
    CommandCase("report-readme-folder-missing", ("report", "--readme", "nowhere/README.md"),
                ("nowhere/README.md: cannot be read",)),
    CommandCase("report-readme-without-markers", ("report", "--readme", "NOTES.md"),
                ("NOTES.md: expected one line",), _write("NOTES.md", "no markers\n")),
    CommandCase("report-check-without-readme", ("report", "--check"),
                ("--check needs --readme",)),
    CommandCase("report-seeds-not-json", ("report",),
                ("metrics/sweeps/seeds.json: not valid JSON",),
                _write("metrics/sweeps/seeds.json", "{")),
    CommandCase("report-models-not-a-summary", ("report",),
                ("metrics/sweeps/models.json: 'rev' is 'missing'",),
                _write("metrics/sweeps/models.json", "{}")),
    CommandCase("report-headline-not-json", ("report",),
                ("metrics/mnist/evaluate/fgsm.json: not valid JSON",),
                _write("metrics/mnist/evaluate/fgsm.json", "nan nan")),
]  # fmt: skip


@pytest.mark.parametrize("bad", COMMAND_CASES, ids=[c.id for c in COMMAND_CASES])
def test_a_bad_command_line_is_one_line_and_exit_status_2(bad, tmp_path, capsys):
    from fragile_neurons.interface import cli

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "params.yaml", folder)
    shutil.copy(ROOT / "README.md", folder)
    shutil.copytree(ROOT / "metrics", folder / "metrics")
    bad.prepare(folder)
    before = md5s(folder)
    capsys.readouterr()
    with chdir(folder), pytest.raises(SystemExit) as err:
        cli.main(list(bad.args))
    stderr = capsys.readouterr().err
    assert err.value.code == 2, stderr
    *usage, line = stderr.splitlines()
    assert usage and usage[0].startswith("usage: fragile-neurons") and stderr.endswith("\n")
    assert line.startswith("fragile-neurons") and ": error: " in line, stderr
    assert not any("error:" in u for u in usage), stderr
    for fragment in bad.fragments:
        assert fragment in stderr, stderr
    assert md5s(folder) == before, "a file changed, or a new one appeared"
