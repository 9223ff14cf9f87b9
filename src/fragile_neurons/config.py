"""params.yaml: reading it and checking it before any work starts.

Every stage calls :func:`load_params` first. A bad value or an unknown key raises
:class:`ParamError` with one line that names the key, the value given and what is allowed,
so a typo never passes silently and nothing is computed on a wrong setting.
"""

from __future__ import annotations

import keyword
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import ParamError

# Every allowed value, defined once; the library imports them from here.
DATASETS = ("mnist", "fashion_mnist", "cifar10")
ARCHS = ("mnist_cnn", "cifar_cnn", "resnet18")
DETERMINISTIC = ("warn", "strict")
LABEL_MODES = ("true", "predicted")  # attack.labels: FGSM on the true or the predicted labels
ADVERSARIAL = ("transfer", "adaptive")  # scan.adversarial
SCORES = ("clean", "adversarial", "difference")  # scan.score: the impact that is phi
MODES = ("proportional", "uniform")  # harden.mode
# Not params, but fixed by method.md: the labels of the label stage (fragile first: the order of
# tables and legends) and the attacks of the evaluate stage.
LABELS = ("fragile", "robust", "neutral")
ATTACKS = ("fgsm", "pgd", "transfer")
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


# --- leaf checks: each takes (key, value) and returns the normalised value ---------------------


def _int(lo: int | None = None, optional: bool = False):
    def check(key, v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
            bound = f" >= {lo}" if lo is not None else ""
            raise ParamError(key, v, f"an integer{bound}" + (" or null" if optional else ""))
        return v

    return check


def _float(lo: float, hi: float | None = None, lo_open: bool = False):
    def check(key, v):
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        try:
            ok = ok and math.isfinite(float(v))
        except OverflowError:  # an integer beyond float's range
            ok = False
        ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
        if not ok:
            left = "(" if lo_open else "["
            right = f"{hi}]" if hi is not None else "inf)"
            raise ParamError(key, v, f"a number in {left}{lo}, {right}")
        return float(v)

    return check


def _bool(key, v):
    if not isinstance(v, bool):
        raise ParamError(key, v, "true or false")
    return v


def _str(key, v):
    if not isinstance(v, str) or not v:
        raise ParamError(key, v, "a non-empty string")
    return v


def _choice(*options, optional: bool = False):
    def check(key, v):
        if (v is None and optional) or v in options:
            return v
        allowed = " or ".join(repr(o) for o in options) + (" or null" if optional else "")
        raise ParamError(key, v, allowed)

    return check


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


def _epsilons(key, v):
    if not isinstance(v, list) or not v:
        raise ParamError(key, v, "a non-empty list of epsilons")
    values = [parse_epsilon(f"{key}[{i}]", e) for i, e in enumerate(v)]
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ParamError(key, v, "epsilons in strictly increasing order")
    if values[-1] == 0:
        raise ParamError(key, v, "at least one positive epsilon (E+ is what is attacked)")
    return v  # kept as written; stages use epsilon_values() and epsilon_labels()


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


def _labels(key, v):
    # YAML reads `true` as a boolean; method.md calls the two modes `true` and `predicted`.
    if v is True:
        return "true"
    if isinstance(v, str) and v in LABEL_MODES:
        return v
    raise ParamError(key, v, "true or 'predicted'")


RUN_SCHEMA = {
    "dataset": _choice(*DATASETS),
    "arch": _arch,
    "selection_size": _int(1),  # the selection split, carved out of the training split
    "reference": _bool,  # train the reference network f_ref (seed + 1000), claim 1 control
    "train_size": _int(1, optional=True),
    "test_size": _int(1, optional=True),
    "train": {
        "epochs": _int(1),
        "batch_size": _int(1),
        "lr": _float(0.0, lo_open=True),
        "weight_decay": _float(0.0),
        "augment": _bool,
    },
    "attack": {
        "epsilons": _epsilons,
        "labels": _labels,
    },
}


def _seed(key, v):
    _int(0)(key, v)
    if v >= SEED_LIMIT:
        raise ParamError(key, v, f"an integer in [0, {SEED_LIMIT - 1}]")
    return v


SCHEMA = {
    "seed": _seed,
    "device": _device,
    "deterministic": _choice(*DETERMINISTIC),
    "threads": _int(1, optional=True),
    "batch_size": _int(1),
    "data": {
        "root": _str,
        "download": _bool,
        "accept_checksum_mismatch": _pins,
    },
    "runs": ("mapping", RUN_SCHEMA),
    "scan": {
        "layer": _optional_str,
        "samples": _int(1, optional=True),  # null: all of the selection split
        "adversarial": _choice(*ADVERSARIAL),
        "score": _choice(*SCORES),
        "label_fraction": _float(0.0, 0.5, lo_open=True),
    },
    "correlate": {
        "top_fraction": _float(0.0, 1.0, lo_open=True),
    },
    "harden": {
        "compress": _float(0.0, 1.0),
        "mode": _choice(*MODES),
        "max_gain": _float(1.0),
    },
    "evaluate": {
        "random_controls": _int(1),
        "images": _int(1, optional=True),
        "samples": _int(1),
        "random_samples": _int(1, optional=True),
        "pgd": {"steps": _int(1)},
        "autoattack": {"images": _int(0), "steps": _int(1)},
    },
}


def _check(schema: Any, value: Any, key: str) -> Any:
    if callable(schema):
        return schema(key, value)
    if isinstance(schema, tuple):  # ("mapping", item schema): user-named entries
        if not isinstance(value, dict) or not value:
            raise ParamError(key, value, "a non-empty mapping of names to settings")
        for name in value:
            if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
                raise ParamError(
                    key, name, "run names of a letter, then letters, digits, '_' or '-'"
                )
        return {name: _check(schema[1], item, f"{key}.{name}") for name, item in value.items()}
    if not isinstance(value, dict):
        raise ParamError(key or "params.yaml", value, f"a mapping with keys {sorted(schema)}")
    for name in value:
        if name not in schema:
            where = f"{key}.{name}" if key else name
            raise ParamError(where, value[name], f"no such key; known keys here: {sorted(schema)}")
    out = {}
    for name, sub in schema.items():
        where = f"{key}.{name}" if key else name
        if name not in value:
            raise ParamError(where, "<missing>", "a value: this key is required")
        out[name] = _check(sub, value[name], where)
    return out


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
        samples = params["scan"]["samples"]
        if samples is not None and samples > run["selection_size"]:
            raise ParamError(
                "scan.samples",
                samples,
                f"at most the selection split's {run['selection_size']} images "
                f"(runs.{name}.selection_size), or null for all of them",
            )
    evaluate = params["evaluate"]
    if evaluate["random_samples"] is not None and evaluate["random_samples"] > evaluate["samples"]:
        raise ParamError(
            "evaluate.random_samples",
            evaluate["random_samples"],
            f"null or an integer in [1, evaluate.samples = {evaluate['samples']}] (the random "
            "draws' PGD images are the first of PGD's)",
        )
    return params


def parse_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parse YAML exactly as DVC does (ruamel.yaml's safe loader, YAML 1.2), so the stages and
    `dvc exp run -S` agree on every value: `1e-3` is a number, `yes` a string. Unparsable text is
    a ParamError naming `source` and the place."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return YAML(typ="safe").load(text)
    except ValueError as err:  # a scalar ruamel cannot convert, e.g. an int of 5000 digits
        raise ParamError(source, "<not valid YAML>", f"valid YAML; {err}") from None
    except YAMLError as err:
        where = ""
        if isinstance(err, MarkedYAMLError) and err.problem_mark is not None:
            mark = err.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ParamError(source, "<not valid YAML>", f"valid YAML; {problem}{where}") from None


def read_yaml(path: str | Path) -> Any:
    """:func:`parse_yaml` of a file; a missing or unreadable file is a ParamError naming it."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ParamError(str(path), "<unreadable>", f"a readable YAML file ({err})") from None
    return parse_yaml(text, str(path))


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
