"""Bad inputs, one at a time, against a tiny project whose every stage has run once.

Each case copies that project, spoils one input (a param, a raw data file, a checkpoint, a record,
a run name) and runs one stage in-process. It must stop with exit status 2 and exactly one line on
stderr, ``error: ...``, that names the key or file, what was given and what is allowed (for a file:
what to do about it), and it must leave every other file of the project as it was, with no new
file. The malicious files would create a marker file if anything unpickled them with the general
unpickler (`test_the_payloads_are_live` proves it); the marker must never appear.
"""

from __future__ import annotations

import copy
import hashlib
import io
import pickle
import random
import shutil
import sys
import zipfile
from collections.abc import Callable
from contextlib import chdir, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import yaml
from conftest import run_script

from fragile_neurons import check, data

RUN = "mnist"
STAGES = (
    "prepare", "train", "attack", "scan", "label", "correlate", "harden", "baseline", "evaluate"
)  # fmt: skip
MARKER = "MARKER"  # beside the project: what a payload creates when it runs

PARAMS = {
    "seed": 0,
    "device": "cpu",
    "deterministic": "warn",
    "threads": None,
    "batch_size": 64,
    "data": {"root": "data/raw", "download": False, "accept_checksum_mismatch": None},
    "runs": {
        RUN: {
            "dataset": "mnist", "arch": "mnist_cnn", "selection_size": 50, "train_size": 200,
            "test_size": 80,
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0,
                      "augment": False},
            "attack": {"epsilons": [0, 0.1, 0.2], "labels": True},
        },
    },
    "scan": {"layer": None, "samples": 40, "adversarial": "transfer", "score": "clean",
             "label_fraction": 0.25},
    "correlate": {"top_fraction": 0.25},
    "harden": {"compress": 0.5, "mode": "proportional", "max_gain": 4.0},
    "evaluate": {"random_controls": 2, "match_tolerance": 0.1, "images": None, "samples": 20,
                 "random_samples": None,
                 "pgd": {"steps": 2},
                 "autoattack": {"images": 8, "steps": 2}},
}  # fmt: skip
CIFAR_RUN = {
    "dataset": "cifar10", "arch": "cifar_cnn", "selection_size": 50, "train_size": 100,
    "test_size": 60,
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0, "augment": True},
    "attack": {"epsilons": [0, "2/255", "8/255"], "labels": True},
}  # fmt: skip

MNIST_RAW = "data/raw/MNIST/raw"
CIFAR_RAW = "data/raw/cifar-10-batches-py"
TEST_SPLIT = "data/prepared/mnist/test.pt"
TRAIN_SPLIT = "data/prepared/mnist/train.pt"
SELECTION_SPLIT = "data/prepared/mnist/selection.pt"
MODEL = "models/mnist/model.pt"
HARDENED = "models/mnist/hardened.pt"
SWEEP = "data/attack/mnist/sweep.pt"
SCAN_SWEEP = "data/attack/mnist/scan_sweep.pt"
LAYER = "data/attack/mnist/layer.pt"
TARGETING = "data/attack/mnist/targeting.pt"
MEASUREMENTS = "data/scan/mnist/measurements.pt"
LABELS = "data/label/mnist/labels.pt"
GAINS = "data/harden/mnist/gains.pt"


# --- the stages, run in-process as `python stages/<stage>.py <run>` runs them ----------------


def run(stage: str, run_name: str = RUN) -> None:
    """One stage in the current directory; `check` validates params.yaml as dvc.yaml runs it."""
    if stage == "check":
        check.main([])
    else:
        run_script(stage, run_name)


def md5s(project: Path) -> dict[str, str]:
    return {
        p.relative_to(project).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(project.rglob("*"))
        if p.is_file()
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
        "mnist": data.file_md5s("mnist", project / "data/raw")
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
        md5 = data.file_md5s("cifar10", project / "data/raw")
        params["data"]["accept_checksum_mismatch"]["cifar10"] = md5

    return both(*([tamper] if tamper else []), params_edit(pin))


def pin_mnist() -> Mutation:
    """Pin the md5s of MNIST's raw files as they are now."""

    def pin(params, project):
        md5 = data.file_md5s("mnist", project / "data/raw")
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
    case("scan.layr", "check", set_param("scan.layr", "conv1"), "scan.layr", "'conv1'",
         "known keys here: ['adversarial', 'label_fraction', 'layer', 'samples', 'score']"),
    case("top-level-sed", "check", set_param("sed", 0), "sed", "0", "known keys here"),
    case("label_fraction-0.75", "check", set_param("scan.label_fraction", 0.75),
         "scan.label_fraction", "0.75", "(0.0, 0.5]"),
    case("score-fragility", "check", set_param("scan.score", "fragility"), "scan.score",
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
         "[1.0, inf)"),
    case("random_controls-0", "check", set_param("evaluate.random_controls", 0),
         "evaluate.random_controls", "0", ">= 1"),
    case("match_tolerance-0", "check", set_param("evaluate.match_tolerance", 0),
         "evaluate.match_tolerance", "0", "(0.0, 1.0]"),
    case("random_samples-over-samples", "check", set_param("evaluate.random_samples", 21),
         "evaluate.random_samples", "21", "[1, evaluate.samples = 20]"),
    case("pgd.stepz", "check", set_param("evaluate.pgd", {"stepz": 2, "steps": 2}),
         "evaluate.pgd.stepz", "2", "known keys here: ['steps']"),
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
         both(set_param("runs.mnist.selection_size", 450), set_param("runs.mnist.train_size", 60)),
         "runs.mnist.train_size", "60", "at most the 50 images of the raw training split left"),
    case("selection_size-too-big", "prepare", set_param("runs.mnist.selection_size", 501),
         "runs.mnist.selection_size", "501", "at most the 500 images of the raw training split"),
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
    case("model-spec-not-a-dict", "harden", edit_record(MODEL, lambda blob: blob.update(spec=[1])),
         MODEL, "spec is not", "rerun `dvc repro --force train@mnist`"),
    case("hardened-holds-the-original", "evaluate",
         Mutation((HARDENED,), lambda p: shutil.copy(p / MODEL, p / HARDENED)), HARDENED,
         "does not hold the gains", "rerun `dvc repro --force harden@mnist`"),
    case("hardened-missing", "evaluate", remove(HARDENED), HARDENED, "is missing",
         "rerun `dvc repro --force harden@mnist`"),
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
    case("targeting-other-neurons", "harden",
         edit_record(TARGETING, lambda b: b.update(
             {k: b[k][..., :5] for k in ("effect", "relative_effect", "share", "magnitude",
                                         "noise_share", "excess_share", "null_excess",
                                         "filter_gain")})),
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
]  # fmt: skip

CASES = PARAMS_CASES + RUN_NAME_CASES + DATA_CASES


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture
def project(pristine, tmp_path) -> Path:
    copy_ = tmp_path / "project"
    shutil.copytree(pristine[0], copy_)
    return copy_


@pytest.mark.parametrize("bad", CASES)
def test_a_bad_input_is_one_line_and_exit_status_2(bad: Case, project, pristine, capsys):
    bad.mutation.apply(project)
    capsys.readouterr()
    with chdir(project):
        try:
            run(bad.stage, bad.run)
        except SystemExit as err:
            status = err.code
        except Exception as err:  # a traceback instead of one line
            pytest.fail(f"{bad.stage} raised {type(err).__name__}: {err}")
        else:
            pytest.fail(f"{bad.stage} accepted it")
    stderr = capsys.readouterr().err

    assert status == 2
    assert stderr.startswith("error: ") and stderr.endswith("\n"), stderr
    assert stderr.count("\n") == 1 and "\r" not in stderr, stderr
    given = bad.given(project) if callable(bad.given) else bad.given
    for what, fragment in (("key or file", bad.key), ("given", given), ("allowed", bad.allowed)):
        assert fragment in stderr, f"the line does not name the {what} {fragment!r}: {stderr}"
    assert "weights_only=False" not in stderr
    assert not (project.parent / MARKER).exists(), "the payload ran"

    changed = set(bad.mutation.paths)
    after = {p: h for p, h in md5s(project).items() if p not in changed}
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
    """Plots and metrics are written for people: with none of them there, scan, label, correlate,
    harden, baseline and evaluate run from the records alone and write theirs again, byte for
    byte."""
    shutil.rmtree(project / "plots")
    shutil.rmtree(project / "metrics")
    with chdir(project), redirect_stderr(io.StringIO()):
        for stage in ("scan", "label", "correlate", "harden", "baseline", "evaluate"):
            run(stage)
    after = md5s(project)
    assert {p: pristine[1][p] for p in after} == after  # every file as it was
    earlier = ["data.json", "train.json", "attack.json"]  # what the stages before scan write
    earlier = [f"metrics/mnist/{name}" for name in earlier] + [
        f"plots/mnist/{name}"
        for name in ("train.csv", "attack.csv", "targeting.csv", "examples.png")
    ]
    assert {p for p in pristine[1] if p not in after} == set(earlier)
