"""params.yaml: reading it and checking it before any work starts.

Every stage calls :func:`load_params` first. A bad value or an unknown key raises
:class:`ParamError` with one line that names the key, the value given and what is allowed,
so a typo never passes silently and nothing is computed on a wrong setting.
"""

from __future__ import annotations

import keyword
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import ParamError
from .yaml_file import read_yaml

# Every allowed value, defined once; the library imports them from here.
DATASETS = ("mnist", "fashion_mnist", "cifar10")
ARCHS = ("mnist_cnn", "cifar_cnn", "resnet18")
DETERMINISTIC = ("warn", "strict")
LABEL_MODES = ("true", "predicted")  # attack.labels: FGSM on the true or the predicted labels
ADVERSARIAL = ("transfer", "adaptive")  # scan.adversarial
SCORES = ("clean", "adversarial", "difference")  # label.score: the impact that is phi
# psi, the loss fragility (method.md section 3, v4), reported beside SCORES under this name:
# secondary, never label.score
LOSS_SCORE = "loss"
MODES = ("proportional", "uniform")  # harden.mode
# Not params, but fixed by method.md: the labels of the label stage (fragile first: the order of
# tables and legends) and the attacks of the evaluate stage.
LABELS = ("fragile", "robust", "neutral")
ATTACKS = ("fgsm", "pgd", "transfer")
# evaluate.pgd.attack: the primary's attack (its records keep the key "pgd"), fixed-step PGD-Linf
# or APGD-CE (AutoAttack's step-size schedule, cross-entropy loss)
PRIMARY_ATTACKS = ("pgd", "apgd-ce")
# the hardening's arms besides `hardened` (method.md section 5), each attacked as it is
ARMS = ("compress_only", "amplify_only", "recalibrated")
SEED_LIMIT = 2**32  # numpy's seeds are 32-bit
# A run's name becomes a stage name, a path component and a command-line argument: a letter,
# then letters, digits, '_' or '-', so it can never be read as an option, a path or shell syntax.
RUN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
MD5 = re.compile(r"[0-9a-f]{32}")
# runs.<name>.arch, besides a registry name: an importable builder `package.module:function`
# (models.build_model imports it; the check only reads its form, so it stays fast and torch-free).
BUILDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
ARCH_ALLOWED = (
    " or ".join(repr(a) for a in ARCHS)
    + " or a builder 'package.module:function' (e.g. 'archs.my_models:small_cnn')"
)
# The images (channels, height = width) and classes of each dataset: what a run's prepared
# splits and checkpoints must hold.
IMAGE_SHAPES = {"mnist": (1, 28), "fashion_mnist": (1, 28), "cifar10": (3, 32)}
CLASSES = 10
# The images of each raw split: a prepared split's index names positions in one of them (the
# selection and train splits in the training split, the test split in the test split).
RAW_SIZES = {
    "mnist": {"train": 60_000, "test": 10_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
    "cifar10": {"train": 50_000, "test": 10_000},
}
# The raw files of each dataset in torchvision's layout (data.py reads exactly these).
_IDX = [
    f"{split}-{kind}-idx{dims}-ubyte"
    for split in ("train", "t10k")
    for kind, dims in (("images", 3), ("labels", 1))
]
RAW_FILES = {
    "mnist": _IDX,
    "fashion_mnist": _IDX,
    "cifar10": [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"],
}


# --- declared constraints: each is called as rule(key, value) and returns the normalised value
# or raises ParamError. The params check (the schema below) and the API (api.py, as ValueError
# with the same message) apply the same objects, so a rule and its message live here once.

# Upper bounds of the cost knobs, each with why: a value beyond them is a typo or hours of work.
TEST_IMAGES = 10_000  # the test split of every dataset (MNIST, Fashion-MNIST, CIFAR-10)
MAX_THREADS = 1024
MAX_BATCH = 60_000  # the largest split (MNIST's training images)
MAX_DRAWS = 1000
MAX_STEPS = 1000
MAX_RESTARTS = 100
MAX_SURROGATE_ITERATIONS = 1000
MAX_EPSILONS = 64
MAX_RUNS = 100
# The smallest positive epsilon: one step of an 8-bit pixel, 1/255 of the images' range [0, 1].
MIN_EPSILON = 1 / 255


@dataclass(frozen=True)
class Integer:
    """An integer in [lo, hi] (hi None: no upper bound), or None where `optional`; `why` says
    why the upper bound is where it is."""

    lo: int
    hi: int | None = None
    optional: bool = False
    why: str = ""

    @property
    def allowed(self) -> str:
        text = f"an integer >= {self.lo}" + (" or null" if self.optional else "")
        text += f", at most {self.hi}" if self.hi is not None else ""
        return text + (f" ({self.why})" if self.why else "")

    def __call__(self, key, v):
        if v is None and self.optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < self.lo:
            raise ParamError(key, v, self.allowed)
        if self.hi is not None and v > self.hi:
            raise ParamError(key, v, self.allowed)
        return v


@dataclass(frozen=True)
class Number:
    """A finite number in [lo, hi] ((lo, hi] where `lo_open`; hi None: no upper bound)."""

    lo: float
    hi: float | None = None
    lo_open: bool = False
    why: str = ""

    @property
    def allowed(self) -> str:
        left = "(" if self.lo_open else "["
        right = f"{self.hi}]" if self.hi is not None else "inf)"
        return f"a number in {left}{self.lo}, {right}" + (f" ({self.why})" if self.why else "")

    def __call__(self, key, v):
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        try:
            ok = ok and math.isfinite(float(v))
        except OverflowError:  # an integer beyond float's range
            ok = False
        ok = ok and (v > self.lo if self.lo_open else v >= self.lo)
        if not ok or (self.hi is not None and v > self.hi):
            raise ParamError(key, v, self.allowed)
        return float(v)


@dataclass(frozen=True)
class Choice:
    """One of `options` (or None where `optional`)."""

    options: tuple
    optional: bool = False

    @property
    def allowed(self) -> str:
        return " or ".join(repr(o) for o in self.options) + (" or null" if self.optional else "")

    def __call__(self, key, v):
        if (v is None and self.optional) or (isinstance(v, str) and v in self.options):
            return v
        raise ParamError(key, v, self.allowed)


def _bool(key, v):
    if not isinstance(v, bool):
        raise ParamError(key, v, "true or false")
    return v


def _str(key, v):
    if not isinstance(v, str) or not v:
        raise ParamError(key, v, "a non-empty string")
    return v


def _optional_str(key, v):
    return None if v is None else _str(key, v)


def _device(key, v):
    if isinstance(v, str) and (v in ("auto", "cpu") or re.fullmatch(r"cuda(:[0-9]+)?", v)):
        return v
    raise ParamError(key, v, "'auto', 'cpu', 'cuda' or 'cuda:N' (N a device index)")


def _pins(key, v):
    """data.accept_checksum_mismatch: dataset -> {raw file name: md5 of the accepted copy}."""
    if v is None:
        return {}
    allowed = (
        "a mapping of dataset names to {raw file name: md5}, e.g. {cifar10: {data_batch_1: <md5>}}"
    )
    if not isinstance(v, dict):
        raise ParamError(key, v, allowed)
    for dataset, files in v.items():
        where = f"{key}.{dataset}"
        if dataset not in DATASETS:
            raise ParamError(where, files, f"a dataset name from {list(DATASETS)}")
        if not isinstance(files, dict) or not files:
            raise ParamError(where, files, "a non-empty mapping of raw file names to md5s")
        for name, md5 in files.items():
            if name not in RAW_FILES[dataset]:
                raise ParamError(f"{where}.{name}", md5, f"a file name from {RAW_FILES[dataset]}")
            if not isinstance(md5, str) or not MD5.fullmatch(md5):
                raise ParamError(f"{where}.{name}", md5, "an md5: 32 lowercase hex digits")
    return v


def parse_epsilon(key: str, v: Any) -> float:
    """An epsilon given as a number (0.1) or as a fraction string ('8/255'), in pixel units."""
    try:
        if isinstance(v, bool):
            raise ValueError
        value = float(Fraction(v)) if isinstance(v, str) else float(v)
    except OverflowError:  # a number beyond float's range: out of [0, 1] below
        value = math.inf
    except (TypeError, ValueError, ZeroDivisionError):
        raise ParamError(key, v, "a number or a fraction such as '8/255'") from None
    if not 0.0 <= value <= 1.0:
        raise ParamError(key, v, "an epsilon in [0, 1] (pixel units)")
    return value


def epsilon_label(v: Any) -> str:
    """How an epsilon is named in metrics and plots: as the user wrote it ('8/255', '0.1')."""
    return v.replace(" ", "") if isinstance(v, str) else f"{float(v):g}"


def epsilon_grid(key, v):
    """An epsilon grid: a non-empty list of at most MAX_EPSILONS epsilons, strictly increasing,
    one of them positive, no two of the same name (metric keys and plot columns are the names).
    Returned as written; stages use epsilon_values() and epsilon_labels()."""
    if not isinstance(v, list) or not v:
        raise ParamError(key, v, "a non-empty list of epsilons")
    if len(v) > MAX_EPSILONS:
        raise ParamError(
            key,
            v,
            f"at most {MAX_EPSILONS} epsilons (each is an FGSM pass of every image in attack, "
            "of every neuron in scan and of every variant in evaluate)",
        )
    values = [parse_epsilon(f"{key}[{i}]", e) for i, e in enumerate(v)]
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ParamError(key, v, "epsilons in strictly increasing order")
    if values[-1] == 0:
        raise ParamError(key, v, "at least one positive epsilon (E+ is what is attacked)")
    small = next((e for e, x in zip(v, values, strict=True) if 0 < x < MIN_EPSILON), None)
    if small is not None:
        raise ParamError(
            key,
            v,
            f"epsilons of 0 or at least 1/255 ({small!r} is below: pixels lie in [0, 1], and a "
            "smaller step changes no pixel of an 8-bit image, so its attack share is 0/0)",
        )
    names = [epsilon_label(e) for e in v]
    clash = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if clash is not None:
        same = [e for e, n in zip(v, names, strict=True) if n == clash]
        raise ParamError(
            key,
            v,
            f"epsilons of distinct names: {' and '.join(repr(e) for e in same)} are both named "
            f"{clash!r} in metrics and plots (write them further apart, or as fractions)",
        )
    return v


def is_builder(arch: str) -> bool:
    """Whether `arch` has the form of a builder path, `package.module:function` (dotted
    identifiers, a colon, an identifier; no Python keyword), rather than a registry name."""
    if not isinstance(arch, str) or not BUILDER.fullmatch(arch):
        return False
    return not any(keyword.iskeyword(part) for part in re.split(r"[.:]", arch))


def _arch(key, v):
    if v in ARCHS or is_builder(v):
        return v
    raise ParamError(key, v, ARCH_ALLOWED)


def label_mode(key, v):
    """FGSM on the true labels or the predicted ones. YAML reads `true` as a boolean; method.md
    calls the two modes `true` and `predicted`: both spellings of the first are 'true'."""
    if v is True:
        return "true"
    if isinstance(v, str) and v in LABEL_MODES:
        return v
    raise ParamError(key, v, "true or 'predicted'")


def _seed(key, v):
    Integer(0)(key, v)
    if v >= SEED_LIMIT:
        raise ParamError(key, v, f"an integer in [0, {SEED_LIMIT - 1}]")
    return v


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _threads(key, v):
    """torch's CPU threads, or null for torch's default: at most MAX_THREADS, and at most the
    cores this machine lets the process use (more only wait, and a thread pool of hundreds can
    abort under a memory cap)."""
    Integer(1, MAX_THREADS, optional=True, why="more threads than a machine's cores only wait")(
        key, v
    )
    if v is not None and v > cores():
        raise ParamError(
            key, v, f"null or at most the {cores()} CPU cores this machine lets the stage use"
        )
    return v


def _workers(key, v):
    """The processes a stage's independent units run in (running/workers.py), or null for the
    cores this machine lets the process use: at most those (more only wait)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= cores():
        raise ParamError(
            key,
            v,
            f"null (the {cores()} CPU cores this machine lets the stage use) or an integer in "
            f"[1, {cores()}]: processes for a stage's independent units, each at one thread",
        )
    return v


TEST_SUBSET = Integer(1, TEST_IMAGES, optional=True, why=f"a test split has {TEST_IMAGES} images")

# The settings that the API's functions take too, by the API's argument name (as scikit-learn's
# `_parameter_constraints`): the schema below applies these same rules to its keys, and api.py
# applies them to its arguments, raising ValueError with the same message.
RULES = {
    "seed": _seed,  # seed (and the API's noise seed)
    "batch_size": Integer(1, MAX_BATCH, why=f"the largest split holds {MAX_BATCH} images"),
    "epsilons": epsilon_grid,  # runs.<name>.attack.epsilons
    "label_mode": label_mode,  # runs.<name>.attack.labels
    "adversarial": Choice(ADVERSARIAL),  # scan.adversarial
    "score": Choice(SCORES),  # label.score
    "label_fraction": Number(0.0, 0.5, lo_open=True),  # label.fraction
    "compress": Number(0.0, 1.0),  # harden.compress
    "mode": Choice(MODES),  # harden.mode
    # harden.max_gain: > 1, since a cap of 1 amplifies nothing and leaves a compress-only arm
    "max_gain": Number(
        1.0,
        lo_open=True,
        why="a gain of at most 1 amplifies no neuron: the hardening would be the compress_only "
        "arm under another name",
    ),
    # runs.<name>.attack.surrogate_iterations: the IAAFT rounds of the surrogate (method.md 2)
    "surrogate_iterations": Integer(
        1,
        MAX_SURROGATE_ITERATIONS,
        why="each round is two FFTs and a sort of every image of the scan set",
    ),
}

# The API's defaults for the settings of RULES it takes: the values params.yaml ships with
# (tests/test_config.py keeps the two equal).
DEFAULTS = {
    "seed": 0,
    "batch_size": 250,
    "label_mode": "true",
    "adversarial": "transfer",
    "score": "clean",
    "label_fraction": 0.25,
    "compress": 0.5,
    "mode": "proportional",
    "max_gain": 4.0,
    "surrogate_iterations": 20,
}

RUN_SCHEMA = {
    "dataset": Choice(DATASETS),
    "arch": _arch,
    "selection_size": Integer(1),  # the selection split, carved out of the training split
    "reference": _bool,  # train the reference network f_ref (seed + 1000), claim 1 control
    "placebo": _bool,  # train the placebo network f_ref2 (seed + 2000), the primary's null
    "train_size": Integer(1, optional=True),
    "test_size": Integer(1, optional=True),
    "train": {
        "epochs": Integer(1),
        "batch_size": Integer(1, MAX_BATCH, why=f"the largest split holds {MAX_BATCH} images"),
        "lr": Number(0.0, lo_open=True),
        "weight_decay": Number(0.0),
        "augment": _bool,
    },
    "attack": {
        "epsilons": RULES["epsilons"],
        "labels": RULES["label_mode"],
        "surrogate_iterations": RULES["surrogate_iterations"],
    },
}

SCHEMA = {
    "seed": RULES["seed"],
    "device": _device,
    "deterministic": Choice(DETERMINISTIC),
    "threads": _threads,
    "workers": _workers,
    "batch_size": RULES["batch_size"],
    "data": {
        "root": _str,
        "download": _bool,
        "accept_checksum_mismatch": _pins,
    },
    "runs": ("mapping", RUN_SCHEMA),
    "scan": {
        "layer": _optional_str,
        "samples": Integer(1, optional=True),  # null: all of the selection split
        "adversarial": RULES["adversarial"],
    },
    "label": {
        "score": RULES["score"],
        "fraction": RULES["label_fraction"],
    },
    "correlate": {
        "top_fraction": Number(0.0, 1.0, lo_open=True),
    },
    "harden": {
        "compress": RULES["compress"],
        "mode": RULES["mode"],
        "max_gain": RULES["max_gain"],
        "random_controls": Integer(
            1,
            MAX_DRAWS,
            why=f"the permutation p-value's floor 1/(1 + draws) is 1/{MAX_DRAWS + 1} there, and "
            "each draw is attacked like a network of its own",
        ),
        "match_tolerance": Number(0.0, 1.0, lo_open=True),
    },
    "evaluate": {
        "images": TEST_SUBSET,
        "samples": Integer(1, TEST_IMAGES, why=f"a test split has {TEST_IMAGES} images"),
        "random_samples": TEST_SUBSET,
        "pgd": {
            "attack": Choice(PRIMARY_ATTACKS),
            "steps": Integer(1, MAX_STEPS, why="each step is a forward and backward pass"),
            "restarts": Integer(
                1, MAX_RESTARTS, why="each restart is the whole attack again, on every variant"
            ),
        },
        "autoattack": {
            "images": Integer(0, TEST_IMAGES, why=f"a test split has {TEST_IMAGES} images"),
            "steps": Integer(1, MAX_STEPS, why="AutoAttack's standard is 100"),
        },
    },
}

# Keys that moved to the section of the stage that reads them: the old place is refused with a
# message naming the new one.
MOVED = {
    "scan.score": "label.score",
    "scan.label_fraction": "label.fraction",
    "evaluate.random_controls": "harden.random_controls",
    "evaluate.match_tolerance": "harden.match_tolerance",
}

RUN_NAME_ALLOWED = (
    "run names of a letter, then letters, digits, '_' or '-' (ASCII only: a-z, A-Z, 0-9)"
)


def _check(schema: Any, value: Any, key: str) -> Any:
    if callable(schema):
        return schema(key, value)
    if isinstance(schema, tuple):  # ("mapping", item schema): user-named entries
        if not isinstance(value, dict) or not value:
            raise ParamError(key, value, "a non-empty mapping of names to settings")
        if len(value) > MAX_RUNS:
            raise ParamError(
                key, value, f"at most {MAX_RUNS} runs (each is a whole pipeline of its own)"
            )
        for name in value:
            if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
                raise ParamError(key, name, RUN_NAME_ALLOWED)
        return {name: _check(schema[1], item, f"{key}.{name}") for name, item in value.items()}
    if not isinstance(value, dict):
        raise ParamError(key or "params.yaml", value, f"a mapping with keys {sorted(schema)}")
    for name in value:
        if name not in schema:
            where = f"{key}.{name}" if key else name
            if where in MOVED:
                raise ParamError(where, value[name], f"no key here: it moved to {MOVED[where]}")
            raise ParamError(where, value[name], f"no such key; known keys here: {sorted(schema)}")
    out = {}
    for name, sub in schema.items():
        where = f"{key}.{name}" if key else name
        if name not in value:
            raise ParamError(where, "<missing>", "a value: this key is required")
        out[name] = _check(sub, value[name], where)
    return out


def check_scan_samples(samples: int | None, selection: int, where: str = "") -> None:
    """The scan set S is the first `scan.samples` images of the selection split: at most the
    `selection` images it holds (`where` says where that number comes from), or null for all.
    The params check applies it to runs.<name>.selection_size, the stages to the split itself."""
    if samples is not None and samples > selection:
        raise ParamError(
            "scan.samples",
            samples,
            f"at most the selection split's {selection} images{where}, or null for all of them",
        )


def validate(raw: Any) -> dict:
    """Check a parsed params mapping against the schema; return it with values normalised."""
    params = _check(SCHEMA, raw, "")
    for name, run in params["runs"].items():
        if run["dataset"] in ("mnist", "fashion_mnist") and run["train"]["augment"]:
            raise ParamError(
                f"runs.{name}.train.augment",
                True,
                "false for digit-like data (flips change labels)",
            )
        check_scan_samples(
            params["scan"]["samples"], run["selection_size"], f" (runs.{name}.selection_size)"
        )
        if run["placebo"] and not run["reference"]:
            raise ParamError(
                f"runs.{name}.placebo",
                True,
                f"false where runs.{name}.reference is false (X^plc compares the reference "
                "network's attack with the placebo network's)",
            )
    evaluate = params["evaluate"]
    if evaluate["random_samples"] is not None and evaluate["random_samples"] > evaluate["samples"]:
        raise ParamError(
            "evaluate.random_samples",
            evaluate["random_samples"],
            f"null or an integer in [1, evaluate.samples = {evaluate['samples']}] (the random "
            "draws' PGD images are the first of PGD's)",
        )
    if evaluate["autoattack"]["images"] > evaluate["samples"]:
        raise ParamError(
            "evaluate.autoattack.images",
            evaluate["autoattack"]["images"],
            f"an integer in [0, evaluate.samples = {evaluate['samples']}] (the calibration and "
            "the masking check compare with the primary's attack on its own images)",
        )
    return params


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml. Raises ParamError (one line) on any bad setting."""
    return validate(read_yaml(path))


def get_run(params: dict, name: str) -> dict:
    """The settings of one entry of `runs`, or a clear error naming the known runs."""
    if name not in params["runs"]:
        raise ParamError("runs", name, f"one of the configured runs {sorted(params['runs'])}")
    return params["runs"][name]


def epsilon_values(run: dict) -> list[float]:
    return [parse_epsilon("epsilons", e) for e in run["attack"]["epsilons"]]


def epsilon_labels(run: dict) -> list[str]:
    return [epsilon_label(e) for e in run["attack"]["epsilons"]]


def fgsm_settings(params: dict, name: str) -> dict:
    """How run `name` makes and names its FGSM images, as the attack, scan and evaluate stages
    read it: the epsilon grid and its names, the labels attacked, images per pass."""
    run = params["runs"][name]
    return {
        "epsilons": epsilon_values(run),
        "epsilon_labels": epsilon_labels(run),
        "label_mode": run["attack"]["labels"],
        "batch_size": params["batch_size"],
    }


def fit_settings(params: dict, name: str) -> dict:
    """How run `name` fits a network, as the train and reference stages read it (both train the
    same way, method.md, Notation): the architecture, the run's train section, and batch_size
    (images per pass when measuring the test split), with the keys that messages name."""
    run = params["runs"][name]
    cfg = run["train"]
    return {
        "arch": run["arch"],
        "epochs": cfg["epochs"],
        "batch_size": cfg["batch_size"],
        "lr": cfg["lr"],
        "weight_decay": cfg["weight_decay"],
        "augment": cfg["augment"],
        "eval_batch_size": params["batch_size"],
        "lr_key": f"runs.{name}.train.lr",
        "arch_key": f"runs.{name}.arch",
        "batch_key": f"runs.{name}.train.batch_size",
    }
