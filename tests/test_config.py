"""params.yaml is checked before any work: one clear line naming key, value and what is allowed."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fragile_neurons.running.config import (
    ParamError,
    epsilon_labels,
    epsilon_values,
    load_params,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert set(params["runs"]) >= {"mnist", "cifar10"}
    assert epsilon_values(params["runs"]["mnist"]) == pytest.approx(
        [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    )
    assert epsilon_values(params["runs"]["cifar10"]) == pytest.approx(
        [0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
    )
    assert epsilon_labels(params["runs"]["cifar10"]) == ["0", "1/255", "2/255", "4/255", "8/255"]


def set_key(raw, dotted, value):
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("runs.mnist.dataset", "imagenet", "'mnist'"),
        ("runs.mnist.arch", "vgg", "'mnist_cnn'"),
        ("runs.mnist.train.epochs", 0, "integer >= 1"),
        ("runs.mnist.train.batch_size", -8, "integer >= 1"),
        ("runs.mnist.train.epochs", 2.5, "integer"),
        ("runs.mnist.train.lr", 0, "(0.0"),
        ("runs.mnist.attack.epsilons", [0, 1.5], "[0, 1]"),
        ("runs.mnist.attack.epsilons", [0, 0.2, 0.1], "increasing"),
        ("runs.mnist.attack.epsilons", [0], "positive epsilon"),
        ("runs.mnist.attack.epsilons", [0, "a/b"], "fraction"),
        ("runs.mnist.attack.labels", "guess", "'predicted'"),
        ("runs.mnist.attack.surrogate_iterations", 0, "an integer >= 1, at most 1000"),
        ("runs.mnist.attack.surrogate_iterations", 10000, "an integer >= 1, at most 1000"),
        ("runs.mnist.attack.surrogate_iterations", 2.5, "an integer >= 1, at most 1000"),
        ("runs.mnist.selection_size", 0, "an integer >= 1"),
        ("runs.mnist.selection_size", None, "an integer >= 1"),
        ("runs.mnist.selection_size", 2.5, "an integer >= 1"),
        ("scan.samples", 0, "an integer >= 1 or null"),
        ("scan.samples", "all", "an integer >= 1 or null"),
        ("runs.mnist.train.augment", True, "false for digit-like data"),
        ("label.fraction", 0.6, "(0.0, 0.5]"),
        ("label.score", "magic", "'clean'"),
        ("scan.adversarial", "both", "'transfer'"),
        ("correlate.top_fraction", 0, "(0.0, 1.0]"),
        ("harden.compress", 1.5, "[0.0, 1.0]"),
        ("harden.mode", "greedy", "'proportional'"),
        ("harden.max_gain", 0.5, "(1.0"),
        ("harden.random_controls", 0, ">= 1"),
        ("harden.match_tolerance", 0, "(0.0, 1.0]"),
        ("harden.match_tolerance", 1.5, "(0.0, 1.0]"),
        ("evaluate.images", 0, "an integer >= 1 or null"),
        ("evaluate.images", 2.5, "an integer >= 1 or null"),
        ("evaluate.random_samples", 0, "an integer >= 1 or null"),
        ("evaluate.random_samples", 501, "[1, evaluate.samples = 500]"),
        ("evaluate.autoattack.images", -1, "an integer >= 0"),
        ("evaluate.autoattack.images", 0.5, "an integer >= 0"),
        ("evaluate.autoattack.images", None, "an integer >= 0"),
        ("evaluate.autoattack.steps", 0, "an integer >= 1"),
        ("device", "tpu", "'auto'"),
        ("data.accept_checksum_mismatch", ["cifar10"], "{raw file name: md5}"),
        ("data.accept_checksum_mismatch", {"svhn": {"a": "0" * 32}}, "dataset name"),
        ("data.accept_checksum_mismatch.cifar10", {"test_batch": "abc"}, "32 lowercase hex"),
        ("seed", 2**32, "[0, 4294967295]"),
        ("seed", -1, ">= 0"),
        ("device", "cuda:abc", "'cuda:N'"),
        ("deterministic", True, "'strict'"),
        ("threads", 0, "an integer >= 1 or null"),
        ("workers", 0, "or an integer in [1, "),
        ("workers", True, "or an integer in [1, "),
        ("workers", 10**6, "CPU cores this machine lets the stage use"),
        ("runs", {}, "non-empty mapping"),
        ("runs", {"x;touch marker;echo": {}}, "a letter, then letters"),
        ("runs", {"-h": {}}, "a letter, then letters"),
        ("runs", {"a b": {}}, "a letter, then letters"),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw, key, value, allowed):
    with pytest.raises(ParamError) as err:
        validate(set_key(raw, key, value))
    message = str(err.value)
    assert err.value.key.startswith(key)
    given = [repr(value), *map(repr, value if isinstance(value, dict | list) else [])]
    given += [repr(v) for v in (value.values() if isinstance(value, dict) else [])]
    assert any(g in message for g in given) or "epsilons[" in message
    assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "key", ["runs.mnist.train.epoch", "scan.labels_fraction", "harden.compres", "sed"]
)
def test_unknown_keys_are_errors(raw, key):
    with pytest.raises(ParamError, match="no such key"):
        validate(set_key(raw, key, 1))


def test_the_scan_set_is_at_most_the_selection_split(raw):
    """scan.samples: null (all of the selection split) or an int up to every run's
    selection_size; more is refused by the check, before any work."""
    assert raw["scan"]["samples"] is None
    assert validate(raw)["scan"]["samples"] is None
    small = set_key(raw, "runs.cifar10.selection_size", 300)
    assert validate(set_key(small, "scan.samples", 300))["scan"]["samples"] == 300
    with pytest.raises(ParamError) as err:
        validate(set_key(small, "scan.samples", 301))
    assert err.value.key == "scan.samples" and "\n" not in str(err.value)
    assert "at most the selection split's 300 images (runs.cifar10.selection_size)" in str(
        err.value
    )


def test_missing_key_is_an_error(raw):
    del raw["harden"]["mode"]
    with pytest.raises(ParamError, match="harden.mode.*required"):
        validate(raw)


def test_params_are_read_as_dvc_reads_them(tmp_path):
    """YAML 1.2, as DVC's ruamel.yaml: `1e-3` is a number (PyYAML's YAML 1.1 reads a string)."""
    text = (ROOT / "params.yaml").read_text().replace("lr: 0.003 ", "lr: 3e-3  ")
    assert "lr: 3e-3" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml")["runs"]["mnist"]["train"]["lr"] == 0.003


def test_unparsable_params_name_the_place(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\nruns: [\n")
    with pytest.raises(ParamError, match=r"params.yaml.*valid YAML.*line 3") as err:
        load_params(tmp_path / "params.yaml")
    assert "\n" not in str(err.value)


def test_fraction_strings_are_epsilons(raw):
    params = validate(set_key(raw, "runs.mnist.attack.epsilons", [0, "1/255", 0.5]))
    assert epsilon_values(params["runs"]["mnist"]) == [0.0, 1 / 255, 0.5]
    assert epsilon_labels(params["runs"]["mnist"]) == ["0", "1/255", "0.5"]


def test_stage_reports_one_line_and_exits_2(raw, tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(set_key(raw, "runs.mnist.train.epochs", -1)))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "mnist", "--params", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: params: runs.mnist.train.epochs = -1 is not allowed; expected an integer >= 1"
    ]
    assert not (tmp_path / "data").exists()  # nothing was done


def test_unknown_run_is_an_error(raw, tmp_path):
    good = tmp_path / "params.yaml"
    good.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "svhn", "--params", str(good)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "runs = 'svhn'" in result.stderr and "cifar10" in result.stderr


@pytest.mark.parametrize(
    "arch", ["archs.my_models:tiny_cnn", "my_models:tiny_cnn", "pkg.sub.mod:_build2"]
)
def test_an_arch_may_be_a_builder_path(raw, arch):
    """Only the form is checked here (nothing is imported: the check stays fast, torch-free)."""
    assert validate(set_key(raw, "runs.mnist.arch", arch))["runs"]["mnist"]["arch"] == arch


@pytest.mark.parametrize(
    "arch",
    ["my_models", "my_models:", ":tiny_cnn", "my models:f", "mod.:f", "a..b:f", "mod:f:g",
     "mod:f()", "mod/x:f", "import.x:f", "mod:class", "1mod:f", "", 3, None],
)  # fmt: skip
def test_a_malformed_builder_path_is_one_line(raw, arch):
    with pytest.raises(ParamError) as err:
        validate(set_key(raw, "runs.mnist.arch", arch))
    message = str(err.value)
    assert message.startswith(f"params: runs.mnist.arch = {arch!r} is not allowed; expected ")
    assert "'mnist_cnn'" in message and "'package.module:function'" in message
    assert "\n" not in message


def test_the_api_defaults_are_the_shipped_params():
    """config.DEFAULTS (the API's defaults) equal the values params.yaml ships with."""
    from test_params_fuzz import SCHEMA_KEYS

    from fragile_neurons.running.config import DEFAULTS

    params = load_params(ROOT / "params.yaml")
    for name, value in DEFAULTS.items():
        node = params
        for part in SCHEMA_KEYS[name].split("."):
            node = node[part]
        assert node == value, (name, SCHEMA_KEYS[name])


@pytest.mark.parametrize(
    "old, new",
    [("scan.score", "label.score"), ("scan.label_fraction", "label.fraction"),
     ("evaluate.random_controls", "harden.random_controls"),
     ("evaluate.match_tolerance", "harden.match_tolerance")],
)  # fmt: skip
def test_a_moved_key_at_its_old_place_names_the_new_one(old, new):
    params = load_params(ROOT / "params.yaml")
    section, key = old.split(".")
    params[section][key] = 1
    with pytest.raises(
        ParamError, match=f"{old} = 1 is not allowed; expected no key here: it moved to {new}"
    ):
        validate(params)
