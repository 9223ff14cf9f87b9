"""The headline declaration (headline.py) is the contract between the stages that write their
headline and report and sweep that read it: a key written that is not declared fails when it is
written, and a key report or sweep reads that no stage writes fails here."""

from __future__ import annotations

import json

import pytest
from conftest import stage_metrics

from fragile_neurons.reporting import report, terminal
from fragile_neurons.running.config import ATTACKS
from fragile_neurons.storage import headline


def test_every_stage_summary_writes_exactly_its_declared_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summaries = stage_metrics(seed=1)
    for stage in headline.HEADLINES:
        headline.write("r", stage, summaries[stage])
        details = json.loads((tmp_path / f"data/views/r/{stage}/{stage}.json").read_text())
        assert "headline" not in details and details  # the rest of the summary
    assert headline.read_folder(tmp_path / "metrics/r").keys() == headline.declared().keys()
    fgsm = json.loads((tmp_path / "metrics/r/evaluate/fgsm.json").read_text())
    assert list(fgsm) == ["value", "low", "high"]  # FIELDS' order


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h | {"fgsm_auc_gain": 0.1}, "undeclared ['fgsm_auc_gain']"),
        (lambda h: {k: v for k, v in h.items() if k != "masking"}, "missing ['masking']"),
        (lambda h: h | {"masking": 1}, "masking: 1 is not a bool"),
        (lambda h: h | {"fgsm_p_value": True}, "fgsm_p_value: True is not a float"),
        (lambda h: h | {"fgsm_p_value": "0.1"}, "fgsm_p_value: '0.1' is not a float"),
    ],
)
def test_a_key_written_that_is_not_declared_or_of_another_type_fails(change, message, tmp_path):
    summary = stage_metrics(seed=0)["evaluate"]
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        headline.write("r", "evaluate", summary | {"headline": change(summary["headline"])})
    assert not (tmp_path / "metrics").exists()


def test_none_and_nan_are_written_but_not_read_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = stage_metrics(seed=0)["evaluate"]
    head = summary["headline"] | {"masking": None, "fgsm_p_value": float("nan")}
    headline.write("r", "evaluate", summary | {"headline": head})
    values = headline.read_folder(tmp_path / "metrics/r")
    assert "evaluate.masking" not in values and "evaluate.fgsm_p_value" not in values
    text = (tmp_path / "metrics/r/evaluate/fgsm_margin.json").read_text()
    assert json.loads(text)["p"] is None and "NaN" not in text  # valid JSON
    assert "evaluate.fgsm_auc_plus_gain" in values


def test_a_renamed_file_leaves_no_stale_metric(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "metrics/r/evaluate/old_name.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"value": 1}')
    headline.write("r", "evaluate", stage_metrics(seed=0)["evaluate"])
    assert not stale.exists()


class Recorder(dict):
    """A headline dict that records every key looked up in it."""

    def __init__(self):
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return default

    def __contains__(self, key):
        self.asked.add(key)
        return False


def test_every_key_report_and_sweep_read_is_declared():
    written = set(headline.declared())
    read = {row.key for row in report.CLAIMS} | {r.p_key for r in report.CLAIMS if r.p_key}
    read |= {key for _, key, _ in report.DOSE_COLUMNS + report.SELECTION_COLUMNS}
    read |= {key for _, key, _ in terminal.TABLE}
    recorder = Recorder()
    for _, show in report.BASELINE_ROWS:
        show(recorder, {})
    assert recorder.asked  # the baseline table reads headlines
    read |= {k for k in recorder.asked if not k.endswith(("_low", "_high"))}
    # an interval's bounds are looked up by name beside the value, where there are any
    bounds = {k for k in recorder.asked if k.endswith(("_low", "_high"))}
    assert bounds <= written
    assert read - written == set(), "read by report or sweep, written by no stage"


def test_every_declared_quantity_file_uses_the_shared_fields():
    for stage, keys in headline.HEADLINES.items():
        names = [k.name for k in keys]
        assert len(names) == len(set(names)), stage
        places = [(k.file, k.field) for k in keys]
        assert len(places) == len(set(places)), stage
        assert {k.field for k in keys} <= set(headline.FIELDS)
    assert {f"evaluate.{a}_auc_plus_gain" for a in ATTACKS} <= set(headline.declared())


def test_dvc_s_views_of_the_committed_headlines_fit_a_review(tmp_path):
    """`dvc metrics show` of the committed baseline fits 100 columns, and `dvc metrics diff` of an
    experiment that changes every number of evaluate (as `harden.compress` does) 60 rows."""
    import subprocess
    import sys
    from pathlib import Path

    root, bin_ = Path(__file__).resolve().parents[1], Path(sys.executable).parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "HEAD", "dvc.yaml", "params.yaml", "metrics"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"{root} is not a git checkout")
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)

    def run(*command: str) -> str:
        return subprocess.run(command, cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout  # fmt: skip

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(*git, "init", "-q")
    run(str(bin_ / "dvc"), "init", "-q")
    run(*git, "add", "-A")
    run(*git, "commit", "-qm", "baseline")
    shown = run(str(bin_ / "dvc"), "metrics", "show").splitlines()
    assert len(shown) > 20 and max(map(len, shown)) <= 100, "\n".join(shown)
    for path in tmp_path.glob("metrics/*/evaluate/*.json"):
        fields = json.loads(path.read_text())
        moved = {  # every number moves; a flag, or an absent arm's null, stays
            k: v if v is None or isinstance(v, bool) else v * 1.1 + 0.001 for k, v in fields.items()
        }
        path.write_text(json.dumps(moved))
    diff = run(str(bin_ / "dvc"), "metrics", "diff").splitlines()
    assert 30 < len(diff) - 1 <= 60 and max(map(len, diff)) <= 100, "\n".join(diff)
