"""The sweep summary: every headline number of every run, grouped by the params that differ,
mean and a t-based 95% confidence interval over seeds; and real DVC experiments read back."""

import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import metrics_files, run_values, stage_metrics
from scipy import stats

from fragile_neurons.reporting.experiments import collect, flatten, fresh_stages
from fragile_neurons.reporting.seedstats import (
    kind,
    mean_ci,
    resummarise,
    seeds_for_power,
    summarise_values,
)
from fragile_neurons.reporting.sweep import merge, rounded, summarise, to_json
from fragile_neurons.reporting.terminal import render, render_table
from fragile_neurons.storage.headline import declared

BIN = Path(sys.executable).parent
PARAMS = {
    "seed": 0,
    "threads": None,
    "runs": {"mnist": {"offset": 0.0}, "cifar10": {"offset": 1.0}},
    "harden": {"compress": 0.5, "mode": "proportional"},
}
HEADLINE_KEYS = set(declared())  # every stage's headline (headline.py)


def test_mean_ci_is_students_t():
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    mean, low, high = mean_ci(values)
    half = stats.t.ppf(0.975, 4) * stats.tstd(values) / math.sqrt(5)
    assert mean == pytest.approx(0.3)
    assert (low, high) == pytest.approx((0.3 - half, 0.3 + half))


def test_mean_ci_degenerate_cases():
    assert mean_ci([0.2, 0.2]) == (0.2, 0.2, 0.2)
    mean, low, high = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)


def test_a_run_s_values_are_every_declared_headline_read_back_from_its_files():
    values = run_values(seed=2)
    assert set(values) == HEADLINE_KEYS  # and nothing of the details
    assert values["evaluate.masking"] is False and values["label.resolved"] is True
    summaries = stage_metrics(seed=2)
    assert values["train.test_accuracy"] == summaries["train"]["headline"]["test_accuracy"]
    assert (
        values["evaluate.pgd_auc_plus_gain"]
        == (summaries["evaluate"]["headline"]["pgd_auc_plus_gain"])
    )


def member(name, seed, compress=0.5, baseline=False, runs=("mnist", "cifar10"), **params):
    flat = flatten(PARAMS) | {"seed": seed, "harden.compress": compress} | params
    return {
        "name": name,
        "rev": f"{name}-rev"[:7],
        "baseline": baseline,
        "seed": seed,
        "params": flat,
        "runs": {run: run_values(seed, compress, PARAMS["runs"][run]["offset"]) for run in runs},
    }


@pytest.fixture
def members():
    return [
        member("baseline", 0, baseline=True),
        *(member(f"seed{s}", s, threads=1) for s in (1, 2, 3, 4)),
        member("seed0again", 0, threads=1),  # the baseline's seed again: counted once
        *(member(f"c{c}", 0, c, runs=("mnist",)) for c in (1.0, 0.75, 0.25)),
        member("nothing", 5, runs=()),  # no stage ran with its params
    ]


def test_a_seed_sweep_with_its_baseline_summarises_every_headline_per_run(members):
    summary = summarise(members, flatten(PARAMS), by=[], rev="abc")
    assert summary["by"] == [] and len(summary["groups"]) == 1
    group = summary["groups"][0]
    assert group["label"] == "all" and group["baseline"] is True
    assert [m["seed"] for m in group["members"]] == [0, 1, 2, 3, 4]
    assert group["members"][0]["name"] == "baseline"
    assert summary["pooled"] == {"seed": [0, 1, 2, 3, 4], "threads": [1, None]}
    for run, offset in (("mnist", 0.0), ("cifar10", 1.0)):
        values = group["runs"][run]
        assert set(values) == HEADLINE_KEYS
        gains = [stage_metrics(s, 0.5, offset)["evaluate"]["headline"]["fgsm_auc_plus_gain"]
                 for s in range(5)]  # fmt: skip
        mean, low, high = mean_ci(gains)
        sd = statistics.stdev(gains)
        assert values["evaluate.fgsm_auc_plus_gain"] == {
            "kind": "estimate", "n": 5, "mean": pytest.approx(mean), "low": pytest.approx(low),
            "high": pytest.approx(high), "sd": pytest.approx(sd),
            "seeds_for_power": seeds_for_power(mean, sd),
            "median": None, "count": None,
            "values": {str(s): g for s, g in enumerate(gains)},
        }  # fmt: skip
        masking = values["evaluate.masking"]  # a boolean: seeds where it holds, no interval
        assert masking["kind"] == "flag" and masking["count"] == 2 and masking["low"] is None
        assert masking["mean"] == pytest.approx(2 / 5)
        p = values["evaluate.fgsm_p_value"]  # a p-value: never a t-interval
        ps = [1 / 21 + seed / 100 for seed in range(5)]
        assert p["kind"] == "p" and p["low"] is None and p["mean"] is None
        assert p["count"] == sum(v < 0.05 for v in ps) == 1
        assert p["median"] == pytest.approx(statistics.median(ps))
    left = "\n".join(summary["left_out"])
    assert "seed0again (seed0ag): seed 0 already in all (baseline)" in left
    assert "nothing (nothing): no stage ran with its own params" in left
    assert "c0.25 (c0.25-r): params differ in harden.compress" in left


def test_experiments_are_grouped_by_the_params_that_differ_other_than_seed(members):
    summary = summarise(members, flatten(PARAMS))  # threads differs too: it is pooled
    assert summary["by"] == ["harden.compress"]
    labels = [g["label"] for g in summary["groups"]]
    assert labels == [f"harden.compress={c}" for c in (0.25, 0.5, 0.75, 1.0)]
    assert [g["baseline"] for g in summary["groups"]] == [False, True, False, False]
    quarter, half = summary["groups"][0], summary["groups"][1]
    assert list(quarter["runs"]) == ["mnist"] and quarter["params"] == {"harden.compress": 0.25}
    assert quarter["runs"]["mnist"]["evaluate.pgd_auc_plus_gain"]["n"] == 1
    assert quarter["runs"]["mnist"]["evaluate.pgd_auc_plus_gain"]["low"] is None
    assert half["runs"]["cifar10"]["train.test_accuracy"]["n"] == 5
    # --by names the grouping param: the same groups here; a member that differs from the
    # baseline in another param is left out rather than pooled
    odd = member("uniform", 0, 0.25, runs=("mnist",), **{"harden.mode": "uniform"})
    by = summarise([*members, odd], flatten(PARAMS), by=["harden.compress"])
    assert [g["label"] for g in by["groups"]] == labels
    assert "uniform (uniform): params differ in harden.mode" in by["left_out"]
    auto = summarise([*members, odd], flatten(PARAMS))
    assert auto["by"] == ["harden.compress", "harden.mode"] and len(auto["groups"]) == 5


def test_each_run_is_grouped_by_the_global_params_and_its_own():
    """`-S '~runs.cifar10' -S runs.mnist.arch=resnet18` is, for its mnist run, an experiment of
    mnist alone; an experiment that changes only the cifar10 run lends its mnist run to the
    baseline's group (as another seed there), and one run's seed counts once per group."""
    small = {"runs.mnist.arch": "cnn", "runs.cifar10.arch": "cnn"}
    reference = flatten(PARAMS) | small

    def resnet(name, seed, run, other=None):
        m = member(name, seed, runs=(run,), threads=1, **(small | {f"runs.{run}.arch": "rn18"}))
        m["params"] = {k: v for k, v in m["params"].items() if not k.startswith(f"runs.{other}.")}
        return m

    cifar_only = small | {"runs.cifar10.arch": "rn18"}
    members = [
        member("baseline", 0, baseline=True, **small),
        *(member(f"seed{s}", s, threads=1, **small) for s in (1, 2)),
        *(resnet(f"mrn{s}", s, "mnist", "cifar10") for s in (0, 1, 2)),
        resnet("crn0", 0, "cifar10", "mnist"),
        member("cifar-only", 3, **cifar_only),  # its mnist run: seed 3 of the baseline's group
        member("x-again", 1, **cifar_only),  # its mnist run: seed 1 again
    ]
    summary = summarise(members, reference)
    assert summary["by"] == ["runs.cifar10.arch", "runs.mnist.arch"]
    groups = {g["label"]: g for g in summary["groups"]}
    assert list(groups) == [  # sorted by the params' values
        "runs.cifar10.arch=cnn, runs.mnist.arch=cnn",
        "runs.mnist.arch=rn18",
        "runs.cifar10.arch=rn18",
    ]
    base = groups["runs.cifar10.arch=cnn, runs.mnist.arch=cnn"]
    assert base["baseline"] is True and list(base["runs"]) == ["cifar10", "mnist"]
    assert base["runs"]["mnist"]["train.test_accuracy"]["n"] == 4  # seeds 0-2 and cifar-only's 3
    assert base["runs"]["cifar10"]["train.test_accuracy"]["n"] == 3
    assert [m["name"] for m in base["members"]] == ["baseline", "seed1", "seed2", "cifar-only"]
    mnist = groups["runs.mnist.arch=rn18"]
    assert list(mnist["runs"]) == ["mnist"] and mnist["baseline"] is False
    assert [m["seed"] for m in mnist["members"]] == [0, 1, 2]
    assert mnist["pooled"] == {"seed": [0, 1, 2]}  # every member one thread: none pooled here
    assert base["pooled"]["threads"] == [1, None] and summary["pooled"]["threads"] == [1, None]
    cifar = groups["runs.cifar10.arch=rn18"]
    assert [m["name"] for m in cifar["members"]] == ["crn0", "x-again", "cifar-only"]
    assert cifar["runs"]["cifar10"]["train.test_accuracy"]["n"] == 3 and list(cifar["runs"]) == [
        "cifar10"
    ]
    assert summary["left_out"] == [
        "x-again (x-again): seed 1 already in runs.cifar10.arch=cnn, runs.mnist.arch=cnn (seed1)"
    ]


def test_the_json_is_rounded_sorted_and_stable(members):
    summary = summarise(members, flatten(PARAMS), rev="abc")
    text = to_json(summary)
    assert text == to_json(summarise(list(reversed(members)), flatten(PARAMS), rev="abc"))
    loaded = json.loads(text)
    assert json.dumps(loaded, indent=1, sort_keys=True) + "\n" == text
    assert rounded(1 / 3) == 0.333333 and rounded([2 / 3, True, 7]) == [0.666667, True, 7]
    assert rounded(float("nan")) is None
    mean = loaded["groups"][1]["runs"]["mnist"]["evaluate.fgsm_auc_plus_gain"]["mean"]
    assert len(repr(mean).lstrip("-0.")) <= 6


def test_the_text_and_the_experiment_table_give_whole_names(members):
    """Keys and names are never cut (a cut name made rows look duplicated); the table fits 80
    columns where the names are short."""
    summary = json.loads(to_json(summarise(members, flatten(PARAMS))))
    text = render(summary)
    keys = {line.split()[0] for line in text.splitlines() if line.startswith("    ")}
    wanted = {key for group in summary["groups"] for run in group["runs"].values() for key in run}
    assert keys == wanted and "correlate.reference_excess_spearman_rho" in keys
    assert "harden.compress=0.5: 5 member(s), seeds 0, 1, 2, 3, 4, the baseline's params" in text
    assert "evaluate.transfer_auc_plus_gain_high" in text and "2/5 seeds true" in text
    assert "median; p<0.05 in 1/5" in text  # evaluate.fgsm_p_value: no interval
    lines = render_table(summary).splitlines()
    assert max(map(len, lines)) <= 80
    rows = [line for line in lines if line.startswith("seed3 ")]
    assert len(rows) == 2 and rows[0].split()[:3] == ["seed3", "cifar10", "3"]
    assert rows[1].split()[3:] == ["0.987", "0.15", "0.45", "0.03", "0.03", "0", "-0.002"]
    assert render({"groups": [], "left_out": []}) == "no finished experiments with metrics found"
    # seeds run as one experiment per run: each member's row is of the run it holds
    apart = [member("baseline", 0, baseline=True), member("m1", 1, runs=("mnist",))]
    apart.append(member("c1", 1, runs=("cifar10",)))
    summary = json.loads(to_json(summarise(apart, flatten(PARAMS), by=[])))
    table = render_table(summary).splitlines()
    assert table[0] == "all: n = 2 seeds"  # the seeds each run rests on
    rows = [line.split()[:3] for line in table[3:]]
    assert rows == [["baseline", "cifar10", "0"], ["baseline", "mnist", "0"],
                    ["c1", "cifar10", "1"], ["m1", "mnist", "1"], ["-" * 80],
                    ["mean", "cifar10", "n=2"], ["mean", "mnist", "n=2"]]  # fmt: skip
    accuracy = summary["groups"][0]["runs"]["mnist"]["train.test_accuracy"]["mean"]
    assert table[-1].split()[3] == f"{accuracy:.4g}"
    del summary["groups"][0]["runs"]["mnist"]["train.test_accuracy"]["values"]["1"]
    table = render_table(resummarise(summary)).splitlines()  # a mean of fewer seeds: marked
    assert table[-2].split()[:4] == ["mean", "mnist", "n=2", "0.99*"]
    assert table[-1] == "* mnist acc: n=1"
    assert "3 member(s), seeds 0, 1, the baseline's params" in render(summary)
    long = [member("baseline", 0, baseline=True), member("seed-cifar10-7", 7)]
    summary = json.loads(to_json(summarise(long, flatten(PARAMS), by=[])))
    rows = [line.split()[:3] for line in render_table(summary).splitlines()[3:]]
    assert ["seed-cifar10-7", "mnist", "7"] in rows


def test_a_stage_counts_only_where_it_ran_with_the_params_on_fresh_inputs():
    params = {
        "seed": 1,
        "runs": {"mnist": {"train": {"epochs": 3}}, "cifar10": {}},
        "correlate": {"top_fraction": 0.25},
    }

    def stage(params, deps=(), outs=()):
        return {
            "params": {"params.yaml": params},
            "deps": [{"path": p, "md5": m} for p, m in deps],
            "outs": [{"path": p, "md5": m} for p, m in outs],
        }

    lock = {
        "stages": {
            "train@mnist": stage(
                {"seed": 1, "runs.mnist.train": {"epochs": 3}},
                outs=[("models/mnist", "a1.dir")],
            ),
            "scan@mnist": stage(
                {"seed": 1},
                deps=[("models/mnist/model.pt", "m1")],  # a file inside train's output
                outs=[("data/scan/mnist.pt", "s1")],
            ),
            "correlate@mnist": stage(
                {"correlate.top_fraction": 0.25}, deps=[("data/scan/mnist.pt", "s1")]
            ),
            # the baseline's, kept by an experiment that targeted mnist only
            "train@cifar10": stage({"seed": 0}, outs=[("models/cifar10", "b0.dir")]),
            "correlate@cifar10": stage(
                {"correlate.top_fraction": 0.25}, deps=[("models/cifar10", "b0.dir")]
            ),
        }
    }
    assert fresh_stages(lock, params) == {"train@mnist", "scan@mnist", "correlate@mnist"}
    # an experiment of scan@mnist alone: correlate keeps the baseline's input, so it is stale
    lock["stages"]["correlate@mnist"]["deps"][0]["md5"] = "s0"
    assert fresh_stages(lock, params) == {"train@mnist", "scan@mnist"}
    params["runs"]["mnist"]["train"]["epochs"] = 5  # and everything downstream of train
    assert fresh_stages(lock, params) == set()
    params["seed"] = 0
    assert fresh_stages(lock, params) == {"train@cifar10", "correlate@cifar10"}


# --- slices that add up: --merge adds today's seeds to a committed summary --------------------

CODE = {
    "check": {"stages/check.py": "c1", "src/fragile_neurons/running/config.py": "f1"},
    "train@mnist": {"stages/train.py": "t1", "archs": "a1.dir"},
    "train@cifar10": {"stages/train.py": "t1", "archs": "a1.dir"},
}


def traced(m, cpu="AMD EPYC 7B13", threads=2, code=CODE, method="v4"):
    """A member as collect reads it: its stages' code md5s, per run where they ran, and the
    method of its commit."""
    runtime = {run: {"cpu": cpu, "threads": threads, "device": "cpu"} for run in m["runs"]}
    return m | {"code": code, "runtime": runtime, "method": method}


def day(members, rev="day1", reference=None):
    """A seed sweep's summary as `sweep --seeds --json` writes it."""
    reference = reference or flatten(PARAMS)
    return json.loads(to_json(summarise(members, reference, by=[], rev=rev)))


@pytest.fixture
def first_day():
    return day([traced(member("baseline", 0, baseline=True)),
                *(traced(member(f"seed{s}", s, threads=1)) for s in (1, 2))])  # fmt: skip


def test_each_member_records_its_provenance_and_the_summary_the_code(first_day):
    group = first_day["groups"][0]
    assert group["members"][1]["provenance"] == {
        "commit": "seed1-r", "method": "v4", "cpu": "AMD EPYC 7B13", "threads": 2,
        "device": "cpu", "params": {"seed": 1, "threads": 1},
    }  # fmt: skip
    assert group["runtime"] == {"cpu": ["AMD EPYC 7B13"], "device": ["cpu"], "threads": [2]}
    assert first_day["code"] == CODE
    assert group["settings"]["harden.compress"] == 0.5 and "seed" not in group["settings"]
    # a member whose code differs from the baseline's in a stage it shares is left out
    other = CODE | {"train@mnist": {"stages/train.py": "t2", "archs": "a1.dir"}}
    odd = traced(member("edited", 3, runs=("mnist",)), code=other)
    summary = day([traced(member("baseline", 0, baseline=True)), odd])
    assert [m["name"] for m in summary["groups"][0]["members"]] == ["baseline"]
    assert summary["left_out"] == [
        "edited (edited-): its code differs from baseline's in stage train@mnist: stages/train.py"
    ]
    # a cifar10-only member with that mnist code: train@mnist is not a stage of its run
    apart = traced(member("c3", 3, runs=("cifar10",)), code=other)
    summary = day([traced(member("baseline", 0, baseline=True)), apart])
    assert [m["name"] for m in summary["groups"][0]["members"]] == ["baseline", "c3"]


def test_merging_adds_the_new_seeds_and_resummarises_every_key(first_day):
    """The next day's baseline is the commit of the first day's summary: its seed 0 is the
    same, so it is kept from the file; seeds 3 and 4 ran on another CPU type."""
    second = day([traced(member("baseline", 0, baseline=True)),
                  *(traced(member(f"seed{s}", s), cpu="Intel Xeon 8480") for s in (3, 4))],
                 rev="day2")  # fmt: skip
    merged, refused = merge(first_day, second, "seeds.json")
    assert refused == []
    group = merged["groups"][0]
    assert [m["seed"] for m in group["members"]] == [0, 1, 2, 3, 4]
    assert [m["provenance"]["commit"] for m in group["members"]][-2:] == ["seed3-r", "seed4-r"]
    assert merged["rev"] == "day2" and merged["baselines"] == ["day1", "day2"]
    assert group["runtime"]["cpu"] == ["AMD EPYC 7B13", "Intel Xeon 8480"]
    assert merged["pooled"] == {"seed": [0, 1, 2, 3, 4], "threads": [1, None]}
    for run, offset in (("mnist", 0.0), ("cifar10", 1.0)):
        gains = [stage_metrics(s, 0.5, offset)["evaluate"]["headline"]["pgd_auc_plus_gain"]
                 for s in range(5)]  # fmt: skip
        stats = group["runs"][run]["evaluate.pgd_auc_plus_gain"]
        mean, low, high = mean_ci(gains)
        assert stats["n"] == 5 and stats["mean"] == pytest.approx(mean, rel=1e-5)
        assert (stats["low"], stats["high"]) == pytest.approx((low, high), rel=1e-5)
        assert group["runs"][run]["evaluate.masking"]["count"] == 2  # seeds 1 and 3
    all_five = day([traced(member("baseline", 0, baseline=True)),
                    *(traced(member(f"seed{s}", s)) for s in (1, 2, 3, 4))])  # fmt: skip
    written = json.loads(to_json(merged))["groups"][0]["runs"]  # as --json writes it
    for run, values in all_five["groups"][0]["runs"].items():  # as if collected at once
        assert set(written[run]) == set(values)
        for key, stats in values.items():  # (from 6-digit values: float noise near 0 aside)
            got = written[run][key]
            assert {f: got[f] for f in ("kind", "n", "values", "count")} == {
                f: stats[f] for f in ("kind", "n", "values", "count")
            }
            for f in ("mean", "low", "high", "sd", "median"):
                want = stats[f]
                assert got[f] == (want if want is None else pytest.approx(want, 1e-5, 1e-12))
    text = render(merged)
    assert "all: 5 member(s), seeds 0, 1, 2, 3, 4, 2 CPU types, the baseline's params" in text
    assert render_table(merged).splitlines()[0] == "all: n = 5 seeds, 2 CPU types"
    again, refused = merge(merged, second, "seeds.json")  # the same day merged twice
    assert refused == [] and again["groups"] == merged["groups"]


def test_a_seed_already_in_the_file_with_other_values_is_refused(first_day):
    rerun = traced(member("seed2b", 2, runs=("mnist",)), cpu="Intel Xeon 8480")
    rerun["runs"]["mnist"]["train.test_accuracy"] += 0.001  # another CPU type, other numbers
    merged, refused = merge(first_day, day([rerun], "day2"), "seeds.json")
    assert merged is first_day
    assert refused == [
        "seed2b (seed2b-): mnist seed 2 is in seeds.json with other values: "
        "train.test_accuracy 0.988 there, 0.989 now (remove one of them)"
    ]


def test_another_method_is_refused(first_day):
    newer = day([traced(member(f"seed{s}", s), method="v5") for s in (3, 4, 5, 6)], "day2")
    assert merge(first_day, newer, "seeds.json")[1] == [
        "seed3 (seed3-r), seed4 (seed4-r), seed5 (seed5-r) and 1 more: method v5, seeds.json is "
        "method v4: seeds of one method only (write a new summary: --json without --merge)"
    ]
    v3 = {k: v for k, v in first_day.items() if k != "method"}  # written before the field
    current = day([traced(member("seed3", 3))], "day2")
    assert merge(v3, current, "old.json")[1] == [
        "seed3 (seed3-r): method v4, old.json is method v3: seeds of one method only (write a "
        "new summary: --json without --merge)"
    ]


def test_other_code_is_refused_naming_the_stage_and_file(first_day):
    other = CODE | {"train@cifar10": {"stages/train.py": "t2", "archs": "a1.dir"}}
    newer = day([traced(member("seed3", 3), code=other)], "day2")
    assert merge(first_day, newer, "seeds.json")[1] == [
        "code differs from seeds.json's in stage train@cifar10: stages/train.py (md5 t1 there, "
        "t2 now): seeds of one code only"
    ]
    older = {k: v for k, v in first_day.items() if k != "code"}
    assert merge(older, day([traced(member("seed3", 3))]), "old.json")[1] == [
        "old.json records no code md5s or params (written before sweep --merge): merge only "
        "into a summary written by this version"
    ]


def test_other_params_are_refused(first_day):
    uniform = {"harden.mode": "uniform"}
    reference = flatten(PARAMS) | uniform
    newer = day([traced(member("seed3", 3, **uniform))], "day2", reference)
    assert merge(first_day, newer, "seeds.json")[1] == [
        "seed3 (seed3-r): params differ from seeds.json's group all in harden.mode "
        "('proportional' there, 'uniform' now)"
    ]
    compress = json.loads(to_json(summarise([traced(member("seed3", 3))], flatten(PARAMS))))
    compress["by"] = ["harden.compress"]
    assert merge(first_day, compress, "seeds.json")[1] == [
        "seeds.json groups by nothing (--seeds), this sweep by ['harden.compress']: merge the "
        "same kind of sweep"
    ]


# --- real DVC experiments: stages that write the metrics of stage_metrics from params.yaml ----

STAGE_SCRIPT = f"""
import json, pathlib, sys
import yaml
{inspect.getsource(stage_metrics)}
{inspect.getsource(metrics_files)}
stage, run = sys.argv[1:]
params = yaml.safe_load(open("params.yaml"))
seed, compress = params["seed"], params["harden"]["compress"]
files = metrics_files(seed, compress, params["runs"][run]["offset"])
for path, content in files.items():
    if path.split("/")[0] in (stage, f"{{stage}}.json"):
        out = pathlib.Path(f"metrics/{{run}}/{{path}}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(content))
"""
DVC_YAML = textwrap.dedent("""
    stages:
      train:
        foreach: ${runs}
        do:
          cmd: python stage.py train ${key}
          deps: [stage.py]
          params: [seed, threads, "runs.${key}"]
          outs: [{"metrics/${key}/train.json": {cache: false}}]
          metrics: [{"metrics/${key}/train": {cache: false}}]
      label:
        foreach: ${runs}
        do:
          cmd: python stage.py label ${key} && python stage.py correlate ${key}
          deps: [stage.py, "metrics/${key}/train.json"]
          params: [seed]
          outs: [{"metrics/${key}/label.json": {cache: false}},
                 {"metrics/${key}/correlate.json": {cache: false}}]
          metrics: [{"metrics/${key}/label": {cache: false}},
                    {"metrics/${key}/correlate": {cache: false}}]
      harden:
        foreach: ${runs}
        do:
          cmd: python stage.py harden ${key} && python stage.py evaluate ${key}
          deps: [stage.py, "metrics/${key}/label.json"]
          params: [seed, harden.compress]
          outs: [{"metrics/${key}/harden.json": {cache: false}},
                 {"metrics/${key}/evaluate.json": {cache: false}}]
          metrics: [{"metrics/${key}/evaluate": {cache: false}}]
""")


def sh(repo: Path, *command: str) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """A baseline commit and five experiments derived from it."""
    import yaml

    repo = tmp_path_factory.mktemp("sweep")
    (repo / "stage.py").write_text(STAGE_SCRIPT)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "sweep@example.org")
    sh(repo, "git", "config", "user.name", "sweep")
    sh(repo, str(BIN / "dvc"), "init", "-q")
    sh(repo, str(BIN / "dvc"), "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    for args in (
        ["-S", "seed=1", "-S", "threads=1"],
        ["-S", "seed=2", "-S", "threads=1"],
        ["-S", "seed=3", "-S", "threads=1", "harden@mnist"],  # cifar10 stays the baseline's
        ["-S", "threads=1"],  # the baseline's seed again
        ["-S", "harden.compress=0.25", "harden@mnist"],
    ):
        sh(repo, str(BIN / "dvc"), "exp", "run", "-q", *args)
        sh(repo, "git", "reset", "-q", "--hard")
    return repo


def test_real_experiments_are_read_back_with_the_baseline_as_a_member(experiments, monkeypatch):
    monkeypatch.chdir(experiments)
    members, left_out = collect()
    assert left_out == [] and len(members) == 6
    baseline = next(m for m in members if m["baseline"])
    assert baseline["seed"] == 0 and set(baseline["runs"]) == {"mnist", "cifar10"}
    # every declared headline of the stages this small pipeline runs (no reference, no placebo)
    ran = {k for k in HEADLINE_KEYS if not k.startswith(("reference.", "placebo."))}
    assert set(baseline["runs"]["mnist"]) == ran
    seed3 = next(m for m in members if m["seed"] == 3)
    assert list(seed3["runs"]) == ["mnist"]  # its cifar10 files are the baseline's: not counted
    # provenance: the code md5s of the fresh stages (stage.py), where the counted stages ran
    stages = {f"{s}@{r}" for s in ("train", "label", "harden") for r in ("mnist", "cifar10")}
    assert set(baseline["code"]) == stages and set(seed3["code"]) == {
        "train@mnist", "label@mnist", "harden@mnist"
    }  # fmt: skip
    assert {json.dumps(m["code"]["train@mnist"]) for m in members} == {
        json.dumps(baseline["code"]["train@mnist"])
    } and list(baseline["code"]["train@mnist"]) == ["stage.py"]
    assert baseline["runtime"]["mnist"] == {"cpu": None, "threads": None, "device": "cpu"}
    summary = summarise(members, flatten(PARAMS))
    assert summary["by"] == ["harden.compress"] and summary["pooled"]["threads"] == [1, None]
    quarter, half = summary["groups"]
    assert [m["seed"] for m in half["members"]] == [0, 1, 2, 3]
    assert half["members"][0]["name"] == "baseline" and half["baseline"]
    mnist, cifar10 = half["runs"]["mnist"], half["runs"]["cifar10"]
    assert mnist["correlate.excess_spearman_rho"]["n"] == 4
    assert cifar10["correlate.excess_spearman_rho"]["n"] == 3
    expected = [stage_metrics(s, 0.5, 1.0)["evaluate"]["headline"]["pgd_auc_plus_gain"]
                for s in (0, 1, 2)]  # fmt: skip
    assert cifar10["evaluate.pgd_auc_plus_gain"]["values"] == {
        str(s): pytest.approx(v) for s, v in enumerate(expected)
    }
    assert quarter["label"] == "harden.compress=0.25"
    # harden@mnist's experiment counts cifar10's stages up to label (they ran with its params),
    # not the baseline's hardening of cifar10 that it carries
    assert "evaluate.pgd_auc_plus_gain" in quarter["runs"]["mnist"]
    assert "train.test_accuracy" in quarter["runs"]["cifar10"]
    assert not any(k.startswith("evaluate.") for k in quarter["runs"]["cifar10"])
    assert any("seed 0 already in harden.compress=0.5 (baseline)" in x for x in summary["left_out"])


def test_the_sweep_command_writes_the_same_json_twice(experiments, tmp_path):
    out = tmp_path / "compress.json"
    command = [str(BIN / "fragile-neurons"), "sweep", "--by", "harden.compress", "--json", str(out)]
    text = sh(experiments, *command)
    assert "harden.compress=0.25: 1 member(s), seeds 0" in text
    first = out.read_bytes()
    sh(experiments, *command)
    assert out.read_bytes() == first
    summary = json.loads(first)
    head = sh(experiments, "git", "rev-parse", "HEAD").strip()
    assert summary["rev"] == head and summary["by"] == ["harden.compress"]
    seeds = sh(experiments, *command[:2], "--seeds", "--json", str(tmp_path / "seeds.json"))
    assert "all: 4 member(s), seeds cifar10 0, 1, 2; mnist 0, 1, 2, 3, the baseline's" in seeds
    bad = subprocess.run([*command[:2], "--by", "harden.compres"], cwd=experiments, text=True,
                         capture_output=True)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("usage: fragile-neurons sweep ")
    assert bad.stderr.endswith(
        "\nfragile-neurons sweep: error: --by harden.compres: no such param in params.yaml\n"
    )
    # --merge: the same experiments add nothing; a seed in the file with other values refuses
    seeds_file = tmp_path / "seeds.json"
    merged = tmp_path / "merged.json"
    sh(experiments, *command[:2], "--seeds", "--merge", str(seeds_file), "--json", str(merged))
    written, again = json.loads(seeds_file.read_text()), json.loads(merged.read_text())
    assert again["groups"] == written["groups"] and again["baselines"] == [head]
    edited = json.loads(seeds_file.read_text())
    accuracy = edited["groups"][0]["runs"]["mnist"]["train.test_accuracy"]["values"]
    accuracy["1"] += 0.5
    seeds_file.write_text(json.dumps(edited))
    refused = subprocess.run([*command[:2], "--seeds", "--merge", str(seeds_file), "--json",
                              str(tmp_path / "not.json")], cwd=experiments, text=True,
                             capture_output=True)  # fmt: skip
    assert refused.returncode == 1 and not (tmp_path / "not.json").exists()
    assert refused.stderr.startswith("fragile-neurons sweep: --merge refused: ")
    assert (
        refused.stderr.count("\n") == 1
        and (
            f"mnist seed 1 is in {seeds_file} with other values: train.test_accuracy "
            f"{accuracy['1']} there, {accuracy['1'] - 0.5:.6g} now"
        )
        in refused.stderr
    )
    shown = sh(experiments, *command[:2], "--from", str(out), "--table")
    table = [line for line in shown.splitlines() if not line.startswith((" ", "left out"))]
    assert max(map(len, table)) <= 80 and "seed 0 already in" in shown  # short names: 80


def test_correlations_are_averaged_on_fishers_z():
    """method.md section 7: the mean z = atanh(rho) and its t-interval, transformed back."""
    rhos = [0.1, 0.5, 0.7, 0.3]
    got = summarise_values(list(enumerate(rhos)), "correlate.reference_excess_spearman_rho")
    z = [math.atanh(r) for r in rhos]
    mean, low, high = mean_ci(z)
    assert got["kind"] == "correlation"
    assert got["mean"] == pytest.approx(math.tanh(mean)) != pytest.approx(sum(rhos) / 4)
    assert (got["low"], got["high"]) == (
        pytest.approx(math.tanh(low)),
        pytest.approx(math.tanh(high)),
    )
    assert got["sd"] == pytest.approx(statistics.stdev(z))
    perfect = summarise_values([(0, 1.0), (1, 1.0)], "x.spearman_rho")
    assert math.isfinite(perfect["mean"]) and perfect["mean"] == pytest.approx(1.0)


def test_reliabilities_are_averaged_as_their_split_half_correlations():
    """A Spearman-Brown R = 2r / (1 + r) is at most 1: its summary goes back to the split-half r,
    averages it on Fisher's z and returns through Spearman-Brown, so no bound exceeds 1 (the
    plain t-interval of these values reached past 1)."""
    values = [0.76, -0.6, 0.9, 0.3]
    got = summarise_values(list(enumerate(values)), "label.clean_reliability")
    z = [math.atanh(v / (2 - v)) for v in values]
    mean, low, high = mean_ci(z)
    brown = [2 * math.tanh(v) / (1 + math.tanh(v)) for v in (mean, low, high)]
    assert got["kind"] == "reliability"
    assert [got["mean"], got["low"], got["high"]] == pytest.approx(brown)
    assert got["high"] < 1 < mean_ci(values)[2]
    assert got["sd"] == pytest.approx(statistics.stdev(z))
    one = summarise_values([(0, 0.762340845167557)], "label.clean_reliability")
    assert one["mean"] == pytest.approx(0.762340845167557) and one["low"] is None
    assert summarise_values([(0, 1.0), (1, 1.0)], "label.clean_reliability")["mean"] == (
        pytest.approx(1.0)
    )


def test_power_counts_and_the_kinds():
    assert seeds_for_power(0.5, 1.0) == 34  # the normal approximation said 32
    assert seeds_for_power(1.0, 0.1) == 3 and seeds_for_power(0.0, 1.0) is None  # df = 1 at 2
    assert seeds_for_power(0.3, math.nan) is None
    assert kind("label.significant", [1, 4, 0]) == "count"
    assert kind("evaluate.pgd_p_value", [0.1, 0.2]) == "p"
    assert kind("correlate.share_spearman_p", [0.1]) == "p"
    assert kind("label.resolved", [True, False]) == "flag"
    assert kind("train.test_accuracy", [0.99, 0.98]) == "estimate"
    assert kind("label.clean_reliability", [0.7, 0.9]) == "reliability"
    counts = summarise_values([(0, 1), (1, 4), (2, 0)], "label.significant")
    assert counts["median"] == 1 and counts["low"] is None and counts["mean"] is None
    one = summarise_values([(0, 0.2)], "evaluate.pgd_auc_plus_gain")
    assert one["low"] is None and one["sd"] is None and one["seeds_for_power"] is None


def test_an_older_summary_reads_by_todays_rules():
    """--from re-summarises a committed file's per-seed values: an old file's t-interval of a
    p-value or of raw rho is replaced by the count and median, and the Fisher-z interval."""
    old = {
        "by": [], "rev": "abc", "pooled": {}, "confidence": 0.95, "left_out": [],
        "groups": [{"label": "all", "params": {}, "baseline": True, "members": [], "pooled": {},
                    "runs": {"mnist": {
                        "evaluate.pgd_p_value": {"n": 3, "mean": 0.2, "low": -0.1, "high": 0.5,
                                                 "values": {"0": 0.01, "1": 0.3, "2": 0.29}},
                        "correlate.share_spearman_rho": {"n": 3, "mean": 0.4, "low": 0.1,
                                                         "high": 0.7,
                                                         "values": {"0": 0.2, "1": 0.4, "2": 0.6}},
                    }}}],
    }  # fmt: skip
    new = resummarise(old)["groups"][0]["runs"]["mnist"]
    assert new["evaluate.pgd_p_value"]["low"] is None and new["evaluate.pgd_p_value"]["count"] == 1
    rho = new["correlate.share_spearman_rho"]
    assert rho["kind"] == "correlation" and rho["low"] != 0.1
    assert old["groups"][0]["runs"]["mnist"]["evaluate.pgd_p_value"]["low"] == -0.1  # a copy
