"""Property: whatever params.yaml says, the check accepts it or prints one ParamError line.

Starting from the committed params.yaml, each example changes one thing: a key's value (numbers
huge and negative, nan and inf, YAML-ish strings such as '1e-3', 'yes', 'null', '8/255', lists,
mappings, booleans, null), a deleted key, an unknown key, a renamed run, or the text itself (a
character inserted or deleted, a tab, a duplicated or deleted line), written in one of several
YAML forms. `python -m fragile_neurons.pipeline.check` must then either pass (and `load_params`
returns a dict) or exit with status 2 and exactly one stderr line ``error: params: ...``; never a
traceback.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from fragile_neurons.interface.api import _rule as _api_rule
from fragile_neurons.pipeline import check
from fragile_neurons.running.config import RULES, SCHEMA, load_params, validate
from fragile_neurons.running.errors import ParamError, refusal

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "params.yaml").read_text()
BASE = YAML(typ="safe").load(TEXT)


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of the parsed params: mapping keys and list indices, nested."""
    children = node.items() if isinstance(node, dict) else enumerate(node)
    paths = []
    for key, value in children:
        paths.append((*prefix, key))
        if isinstance(value, dict | list) and value:
            paths += key_paths(value, (*prefix, key))
    return paths


PATHS = key_paths(BASE)


def at(params: Any, path: tuple) -> Any:
    for key in path:
        params = params[key]
    return params


MAPPINGS = [()] + [p for p in PATHS if isinstance(at(BASE, p), dict)]  # where a key can be added

YAMLISH = ["1e-3", "3e-3", "yes", "no", "on", "off", "null", "~", "true", "False", "8/255",
           "1/0", "0x10", "0o17", ".inf", "-.inf", ".nan", "1_000", "0.1.2", "", " ", "auto",
           "cpu", "cuda", "cuda:0", "cuda:-1", "strict", "predicted", "conv1", "mnist",
           "cifar10", "d41d8cd98f00b204e9800998ecf8427e"]  # fmt: skip
# Beyond a float's range, and keys that hold a line break: what the known bugs need (see
# test_bad_inputs.py); drawn only by the `hostile` variant.
HOSTILE_VALUES = [10**400, -(10**400), "1e400", "1" + "0" * 400 + "/3"]
HOSTILE_KEYS = ["a\nb", "\n", "seed\nseed", "x\r"]

printable = st.characters(codec="utf-8", exclude_categories=("C", "Zl", "Zp"))
any_char = st.characters(codec="utf-8", exclude_categories=("Cs",))


def scalars(hostile: bool) -> st.SearchStrategy:
    base = [
        st.integers(min_value=-(2**64), max_value=2**64),
        st.sampled_from([0, 1, -1, 2**31, 2**32 - 1, 2**32, 2**63]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(YAMLISH),
        st.text(printable, max_size=12),
        st.booleans(),
        st.none(),
    ]
    if hostile:  # half of the draws
        return st.one_of(st.sampled_from(HOSTILE_VALUES), st.one_of(*base))
    return st.one_of(*base)


def values(hostile: bool) -> st.SearchStrategy:
    scalar = scalars(hostile)
    return st.one_of(
        scalar,
        st.lists(scalar, max_size=4),
        st.dictionaries(st.text(printable, max_size=8), scalar, max_size=3),
    )


def key_names(hostile: bool) -> st.SearchStrategy:
    names = st.one_of(st.text(printable, min_size=1, max_size=12), st.sampled_from(YAMLISH))
    return st.one_of(st.sampled_from(HOSTILE_KEYS), names) if hostile else names


def dump(params: Any, form: str) -> str:
    if form == "ruamel":
        out = io.StringIO()
        YAML(typ="safe").dump(params, out)
        return out.getvalue()
    styles = {"block": {}, "flow": {"default_flow_style": True}, "quoted": {"default_style": '"'}}
    return yaml.safe_dump(params, sort_keys=False, allow_unicode=True, **styles[form])


@st.composite
def mutated_text(draw) -> str:
    """The committed file's text with one edit: a character in or out, a tab, a line twice or
    not at all."""
    edit = draw(st.sampled_from(["insert", "delete", "tab", "duplicate", "drop"]))
    where = draw(st.integers(min_value=0, max_value=len(TEXT) - 1))
    if edit == "insert":
        return TEXT[:where] + draw(any_char) + TEXT[where:]
    if edit == "delete":
        return TEXT[:where] + TEXT[where + 1 :]
    if edit == "tab":
        return TEXT[:where] + "\t" + TEXT[where:]
    lines = TEXT.splitlines(keepends=True)
    line = draw(st.integers(min_value=0, max_value=len(lines) - 1))
    kept = lines[line : line + 1] * (2 if edit == "duplicate" else 0)
    return "".join(lines[:line] + kept + lines[line + 1 :])


@st.composite
def mutated_params(draw, hostile: bool) -> str:
    """params.yaml with one key's value replaced, one key deleted or added, or a run renamed,
    in a drawn YAML form; or the committed text edited by hand."""
    kind = draw(st.sampled_from(["replace", "delete", "add", "rename", "text"]))
    if kind == "text":
        return draw(mutated_text())
    params = copy.deepcopy(BASE)
    if kind in ("replace", "delete"):
        *parent, last = draw(st.sampled_from(PATHS))
        node = at(params, tuple(parent))
        if kind == "delete":
            del node[last]
        else:
            node[last] = draw(values(hostile))
    elif kind == "add":
        node = at(params, draw(st.sampled_from(MAPPINGS)))
        node[draw(key_names(hostile))] = draw(values(hostile))
    else:
        old = draw(st.sampled_from(sorted(params["runs"])))
        new = draw(st.one_of(key_names(hostile), st.integers(), st.none()))
        params["runs"][new] = params["runs"].pop(old)
    return dump(params, draw(st.sampled_from(["block", "flow", "quoted", "ruamel"])))


@st.composite
def hostile_structure(draw) -> str:
    """The committed text with a hostile size or structure added: aliases (a few, or a bomb of
    drawn depth and width), nesting of drawn depth, a long scalar, a wide mapping or list, a
    long epsilon grid, or padding past the size limit; placed at the top level or as a value."""
    kind = draw(st.sampled_from(["alias", "bomb", "nesting", "scalar", "wide", "epsilons", "pad"]))
    n = draw(st.integers(min_value=1, max_value=12))
    if kind == "alias":
        extra = f"x: &a {draw(scalars(False))!r}\nseed: *a\n"
        text = TEXT.replace("seed: 0", "seed: *a", 1) if n % 2 else TEXT + extra
        return ("s: &a 0\n" if n % 2 else "") + text
    if kind == "bomb":
        width = draw(st.integers(min_value=2, max_value=20))
        lines = [f"l0: &a0 [{', '.join(['x'] * width)}]"]
        lines += [f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, n + 1)]
        return "\n".join(lines) + "\n" + TEXT
    if kind == "nesting":
        depth = draw(st.integers(min_value=1, max_value=100_000))
        opener = draw(st.sampled_from(["[", "{a: "]))
        closer = "]" if opener == "[" else "}"
        return TEXT + "deep: " + opener * depth + "0" + closer * depth + "\n"
    if kind == "scalar":
        size = draw(st.integers(min_value=1, max_value=2_000_000))
        key = draw(st.sampled_from(["seed", "device", "  root", "    dataset"]))
        return TEXT.replace(f"{key}:", f"{key}: {'9' * size} #", 1)
    if kind == "wide":
        count = draw(st.integers(min_value=1, max_value=50_000))
        entries = ", ".join(f"k{i}: {i}" for i in range(count))
        return TEXT + f"wide: {{{entries}}}\n"
    if kind == "epsilons":
        count = draw(st.integers(min_value=1, max_value=5_000))
        grid = ", ".join(f"{i / (count + 1):.9f}" for i in range(count))
        return TEXT.replace("epsilons: [0, 0.05", f"epsilons: [{grid}, 0.99999", 1)
    return TEXT + "#" * draw(st.integers(min_value=1, max_value=3 << 20)) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_says_yes_or_one_line(workdir: Path, text: str) -> None:
    path = workdir / "params.yaml"
    path.write_text(text)
    stderr = io.StringIO()
    with contextlib.chdir(workdir), contextlib.redirect_stderr(stderr):
        try:
            check.main(["--params", path.name])
        except SystemExit as err:
            assert err.code == 2, f"exit status {err.code}"
            line = stderr.getvalue()
            assert line.startswith("error: params: "), line
            assert line.endswith("\n") and line.count("\n") == 1 and "\r" not in line, line
            key = line.removeprefix("error: params: ").split(" = ")[0]
            event("refused: " + key.split(".")[0].split("[")[0][:20])  # by section
            return
    assert stderr.getvalue() == ""
    assert isinstance(load_params(path), dict)
    event("accepted")


FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is repeatable
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=st.data())
def test_check_accepts_or_prints_one_param_error_line(data, workdir):
    check_says_yes_or_one_line(workdir, data.draw(mutated_params(False), label="params.yaml"))


@settings(FUZZ, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False)
@given(data=st.data())
def test_hostile_values_and_keys_too(data, workdir):
    """Numbers beyond a float's range and keys with line breaks (no shrinking: the known bugs
    are listed in the reason, and each has its own case in test_bad_inputs.py)."""
    check_says_yes_or_one_line(workdir, data.draw(mutated_params(True), label="params.yaml"))


@contextlib.contextmanager
def memory_cap(headroom: int = 1 << 30):
    """Within the block, this process may map at most `headroom` bytes beyond what it maps now
    (the soft RLIMIT_AS; restored after)."""
    import resource

    vm = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize:")
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_hostile_sizes_and_structures_are_refused_in_one_line_with_bounded_cost(data, workdir):
    """Aliases, bombs, deep nesting, huge scalars, wide mappings, long grids, padding: accepted
    or one line, within a memory cap of 1 GiB beyond the process and a few seconds each."""
    text = data.draw(hostile_structure(), label="params.yaml")
    start = time.monotonic()
    with memory_cap():
        check_says_yes_or_one_line(workdir, text)
    assert time.monotonic() - start < 20, "the check took too long"


# --- the API and the check apply the same declared rules (config.RULES) ------------------------

SCHEMA_KEYS = {  # the API's argument -> the params key the schema checks with the same rule
    "seed": "seed",
    "batch_size": "batch_size",
    "epsilons": "runs.mnist.attack.epsilons",
    "label_mode": "runs.mnist.attack.labels",
    "adversarial": "scan.adversarial",
    "score": "label.score",
    "label_fraction": "label.fraction",
    "compress": "harden.compress",
    "mode": "harden.mode",
    "max_gain": "harden.max_gain",
    "surrogate_iterations": "runs.mnist.attack.surrogate_iterations",
}


def test_every_shared_rule_is_the_schemas_own():
    """Declared once: the schema holds the very objects of config.RULES at these keys."""
    assert set(SCHEMA_KEYS) == set(RULES)
    for name, key in SCHEMA_KEYS.items():
        node = SCHEMA
        for part in key.split("."):
            node = node[1] if isinstance(node, tuple) else node
            node = node[part] if part != "mnist" else node
        assert node is RULES[name], name


@FUZZ
@given(name=st.sampled_from(sorted(RULES)), data=st.data())
def test_the_api_and_the_check_refuse_alike(name, data, workdir):
    """For any value: the API's ValueError and the check's ParamError, or neither, with the same
    allowed values and the same message (but for the key's name and the `params: ` prefix)."""
    value = data.draw(st.one_of(values(False), st.lists(scalars(False), max_size=4)), label=name)
    try:
        api_value, api_error = _api_rule(name, value), None
    except ValueError as err:
        api_value, api_error = None, str(err)
    params = copy.deepcopy(BASE)
    *parents, last = SCHEMA_KEYS[name].split(".")
    at(params, tuple(parents))[last] = copy.deepcopy(value)
    try:
        checked = validate(params)
    except ParamError as err:
        if err.key != SCHEMA_KEYS[name] and not err.key.startswith(SCHEMA_KEYS[name] + "["):
            return  # refused for another reason (e.g. scan.samples against the selection)
        assert api_error is not None, f"the API accepts {value!r}; the check: {err}"
        api_key = name + err.key.removeprefix(SCHEMA_KEYS[name])
        assert api_error == refusal(api_key, err.value, err.allowed)
        return
    assert api_error is None, f"the check accepts {value!r}; the API: {api_error}"
    assert api_value == at(checked, tuple(SCHEMA_KEYS[name].split(".")))
