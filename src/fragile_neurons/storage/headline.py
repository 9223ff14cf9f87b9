"""Each stage's headline, declared once: the few numbers a review compares, and the DVC metrics.

A stage's module returns its summary with a `headline` dict; `write` checks that dict against
HEADLINES (every declared key, of its type, and no other) and writes it as the stage's DVC
metrics, and the rest of the summary as the stage's details. `read` turns metrics files back into
`<stage>.<name>` -> value, the names `report` and `sweep` use. A rename or a new number is one
line here; `tests/test_headline.py` fails on a key written that is not declared, or read by
report or sweep that is not.

The layout keeps `dvc metrics show` and `dvc metrics diff` narrow. A headline number is field
`field` of `metrics/<run>/<stage>/<file>.json`, and every file uses the same few fields (FIELDS):
`value`, with `low` and `high` where it has a confidence interval and `p` where it has a
p-value. DVC's tables have a column per distinct field, so they stay four columns wide however
many numbers there are. The details, `metrics/<run>/<stage>.json` (written to the stage's
`data/views/<run>/<stage>/`, published there by the publish stage), are committed outputs but not
DVC metrics (read them with git diff, or report's tables).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..running.config import ARMS, ATTACKS
from . import paths
from .io import write_json

FIELDS = ("value", "low", "high", "p")


@dataclass(frozen=True)
class Key:
    """A headline number: its name in the stage's `headline` dict (in a sweep:
    `<stage>.<name>`), its type (None is allowed: not defined for this run), and where DVC reads
    it: field `field` of metrics/<run>/<stage>/<file>.json."""

    name: str
    kind: type  # float, int or bool
    file: str
    field: str = "value"


def _interval(name: str, file: str) -> tuple[Key, ...]:
    """A value and the bounds of its bootstrap 95% CI, `<name>`, `<name>_low`, `<name>_high`."""
    return (
        Key(name, float, file),
        Key(f"{name}_low", float, file, "low"),
        Key(f"{name}_high", float, file, "high"),
    )


HEADLINES: dict[str, tuple[Key, ...]] = {
    "train": (Key("test_accuracy", float, "test_accuracy"),),
    "reference": (Key("test_accuracy", float, "test_accuracy"),),  # f_ref's; None: no f_ref
    "placebo": (Key("test_accuracy", float, "test_accuracy"),),  # f_ref2's; None: no f_ref2
    "label": (
        Key("resolved", bool, "resolved"),  # false: a cut-off rests on the neuron index
        Key("significant", int, "significant"),  # labelled neurons with McNemar p < ALPHA
        Key("clean_reliability", float, "reliability"),  # split-half, Spearman-Brown, clean phi
        Key("loss_reliability", float, "loss_reliability"),  # the same, psi (secondary)
    ),
    "correlate": (  # Spearman rho of the clean phi against each measure, and its p-value
        Key("reference", bool, "reference"),  # false: no reference network, no X^ref
        Key("reference_excess_spearman_rho", float, "excess_ref"),  # claim 1's primary endpoint
        Key("reference_excess_spearman_p", float, "excess_ref", "p"),
        Key("placebo", bool, "placebo"),  # false: no placebo network, no X^plc
        Key("placebo_excess_spearman_rho", float, "excess_plc"),  # the primary's empirical null
        Key("placebo_excess_spearman_p", float, "excess_plc", "p"),
        Key("reference_excess_reliability", float, "excess_ref_reliability"),  # split-half, S-B
        Key("ceiling", float, "ceiling"),  # sqrt(rel(phi) * rel(X^ref)): the primary's ceiling
        Key("surrogate_excess_spearman_rho", float, "excess_sur"),
        Key("surrogate_excess_spearman_p", float, "excess_sur", "p"),
        Key("excess_spearman_rho", float, "excess"),
        Key("excess_spearman_p", float, "excess", "p"),
        Key("share_spearman_rho", float, "share"),
        Key("share_spearman_p", float, "share", "p"),
        Key("noise_spearman_rho", float, "noise"),
        Key("filter_gain_spearman_rho", float, "filter_gain"),
        Key("reference_share_spearman_rho", float, "share_ref"),
        # psi, the loss fragility (secondary, method.md section 3 v4) against X^ref
        Key("loss_reference_excess_spearman_rho", float, "loss_excess_ref"),
        Key("loss_reference_excess_spearman_p", float, "loss_excess_ref", "p"),
    ),
    "evaluate": (
        *_interval("clean_accuracy_change", "clean"),
        *(k for a in ATTACKS for k in _interval(f"{a}_auc_plus_gain", a)),
        *(Key(f"{a}_margin_over_random", float, f"{a}_margin") for a in ATTACKS),
        *(Key(f"{a}_p_value", float, f"{a}_margin", "p") for a in ATTACKS),
        *(k for arm in ARMS for k in _interval(f"{arm}_pgd_auc_plus_gain", arm)),  # other arms
        # the calibration of the primary's attack: the largest gap over AutoAttack, and whether
        # every gap is within robustness.CALIBRATION_GAP (None: the check off)
        Key("calibration_max_gap", float, "calibration"),
        Key("calibrated", bool, "calibrated"),
        Key("masking", bool, "masking"),
        Key("masking_testable", bool, "masking_testable"),
        # the masking check at the middle epsilon (None: not testable, or the check off)
        Key("masking_mid_flagged", bool, "masking_mid"),
        Key("masking_mid_p", float, "masking_mid", "p"),
    ),
}


def declared() -> dict[str, Key]:
    """`<stage>.<name>` -> its Key, for every stage."""
    return {f"{stage}.{k.name}": k for stage, keys in HEADLINES.items() for k in keys}


def check(stage: str, headline: dict[str, Any]) -> None:
    """ValueError unless `headline` holds exactly the stage's declared keys, each of its type
    (or None; a float may be an int, or NaN)."""
    keys = {k.name: k for k in HEADLINES.get(stage, ())}
    extra = sorted(set(headline) - set(keys))
    missing = sorted(set(keys) - set(headline))
    if extra or missing:
        raise ValueError(
            f"{stage} headline: undeclared {extra}, missing {missing} (declare in headline.py)"
        )
    for name, value in headline.items():
        kind = keys[name].kind
        ok = value is None or (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, kind | int) and not isinstance(value, bool)
        )
        if not ok:
            raise ValueError(f"{stage} headline {name}: {value!r} is not a {kind.__name__}")


def files(stage: str, headline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{file stem: {field: value}} of a checked headline, fields in FIELDS' order; NaN (a
    correlation of a constant) as null, so every file is valid JSON for DVC, VS Code and Studio."""
    out: dict[str, dict[str, Any]] = {}
    for key in HEADLINES.get(stage, ()):
        value = headline[key.name]
        finite = not isinstance(value, float) or math.isfinite(value)
        out.setdefault(key.file, {})[key.field] = value if finite else None
    return {f: {n: v[n] for n in FIELDS if n in v} for f, v in out.items()}


def write(run: str, stage: str, summary: dict) -> None:
    """The stage's summary: its `headline` checked and written as metrics/<run>/<stage>/*.json
    (stale files of the folder removed), and the rest to the details, `paths.details` (which the
    publish stage copies to metrics/<run>/<stage>.json)."""
    summary = dict(summary)
    headline = summary.pop("headline", {})
    check(stage, headline)
    target = paths.headline(run, stage)
    written = files(stage, headline)
    if target.is_dir():
        for old in target.glob("*.json"):
            if old.stem not in written:
                old.unlink()
    for stem, fields in written.items():
        write_json(target / f"{stem}.json", fields)
    write_json(paths.details(run, stage), summary)


def read(stage_files: dict[str, dict[str, dict]]) -> dict[str, float | bool]:
    """`<stage>.<name>` -> value of one run, from {stage: {file stem: that file's JSON}}: the
    declared keys found, NaN and None left out (not defined)."""
    values: dict[str, float | bool] = {}
    for stage, found in sorted(stage_files.items()):
        for key in HEADLINES.get(stage, ()):
            value = (found.get(key.file) or {}).get(key.field)
            if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
                values[f"{stage}.{key.name}"] = value
    return values


def read_files(files: dict[str, Any]) -> dict[str, float | bool]:
    """`read` of {path under metrics/<run>/ (`evaluate/fgsm.json`): its JSON}; other paths
    (the details, `evaluate.json`) are left out."""
    stage_files: dict[str, dict[str, dict]] = {}
    for path, data in files.items():
        parts = Path(path).parts
        if len(parts) == 2 and parts[1].endswith(".json") and isinstance(data, dict):
            stage_files.setdefault(parts[0], {})[Path(parts[1]).stem] = data
    return read(stage_files)


def read_folder(folder: str | Path) -> dict[str, float | bool]:
    """`read_files` of a run's folder, metrics/<run>."""
    import json

    folder = Path(folder)
    return read_files(
        {str(p.relative_to(folder)): json.loads(p.read_text()) for p in folder.glob("*/*.json")}
    )
