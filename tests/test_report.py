"""The README's findings and docs/results.md's full results: regenerated from the committed
files they equal the committed README and docs/results.md; the findings' primary rows and plain
verdicts, the claims table's cells and verdicts, the dose-response tables, missing sweeps."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, metrics_files, run_values, stage_metrics

from fragile_neurons.reporting import report
from fragile_neurons.reporting.experiments import flatten
from fragile_neurons.reporting.sweep import summarise, to_json

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
OFFSETS = {"mnist": -0.2, "cifar10": 0.3}


def committed(repo: Path, dest: Path) -> Path:
    """HEAD's params.yaml, README.md, docs/results.md and metrics/ of `repo`, extracted under
    `dest`: the committed results, never the workspace's, which `make repro` on another CPU type
    rewrites."""
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode != 0:
        pytest.skip(f"{repo} is not a git checkout: {head.stderr.decode().strip()}")
    files = ["params.yaml", "README.md", "docs/results.md", "metrics"]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "HEAD", *files], capture_output=True
    )
    assert archive.returncode == 0, archive.stderr.decode()  # a file missing from HEAD
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def readme_section(folder: Path, name: str = "README.md") -> str:
    text = (folder / name).read_text()
    return text.split(report.BEGIN + "\n", 1)[1].split("\n" + report.END, 1)[0]


STALE = "stale: run `fragile-neurons report --readme README.md --results docs/results.md`"


def test_the_committed_readme_section_is_what_the_committed_files_give(tmp_path, monkeypatch):
    folder = committed(ROOT, tmp_path / "head")
    monkeypatch.chdir(folder)
    runs = report.committed_runs()
    assert readme_section(folder) == report.findings(runs), f"README.md's findings are {STALE}"
    assert readme_section(folder, "docs/results.md") == report.section(runs), (
        f"docs/results.md is {STALE}"
    )
    command = [sys.executable, "-m", "fragile_neurons.reporting.report", "--readme", "README.md"]
    check = [*command, "--results", "docs/results.md", "--check"]
    assert subprocess.run(check, capture_output=True).returncode == 0


def test_the_committed_results_are_read_from_git_not_the_workspace(tmp_path, monkeypatch):
    """A clone where `make repro` gave other numbers (another CPU type; simulated by perturbing
    the workspace's headlines): the README check still passes, as it reads HEAD."""
    repo = tmp_path / "clone"
    committed(ROOT, repo)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "results"]):
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *command],
            check=True,
        )
    for path in (repo / "metrics").glob("*/evaluate/fgsm.json"):
        fields = json.loads(path.read_text())
        path.write_text(json.dumps({k: v + 0.01 for k, v in fields.items()}))  # a repro elsewhere
    monkeypatch.chdir(repo)
    results = readme_section(repo, "docs/results.md")
    assert results != report.section(report.committed_runs())  # the workspace's
    head = committed(repo, tmp_path / "head")
    monkeypatch.chdir(head)
    assert readme_section(head, "docs/results.md") == report.section(report.committed_runs())
    assert readme_section(head) == report.findings(report.committed_runs())


def stats(low, high, n=5, mean=None, values=None):
    mean = (low + high) / 2 if mean is None else mean
    values = values or {str(s): mean for s in range(n)}
    return {"n": n, "mean": mean, "low": low, "high": high, "values": values}


PRIMARY = report.CLAIMS[0]  # claim 1's primary: a Spearman rho, smallest effect of interest 0.3
SECONDARY = next(r for r in report.CLAIMS if r.key == "correlate.surrogate_excess_spearman_rho")
GAIN = next(r for r in report.CLAIMS if r.key == "evaluate.pgd_auc_plus_gain")  # claim 2's


@pytest.mark.parametrize(
    ("lows_highs", "row", "expected"),
    [
        ([(0.1, 0.3), (0.05, 0.2)], PRIMARY, "supported"),
        ([(-0.3, -0.1), (-0.2, -0.01)], PRIMARY, "contradicted"),
        ([(-0.2, 0.25), (-0.1, 0.29)], PRIMARY, "absent"),  # both inside (-0.3, 0.3)
        ([(0.1, 0.3), (-0.2, 0.1)], PRIMARY, "not shown (mnist supports, cifar10 absent)"),
        ([(0.1, 0.3), (-0.2, -0.1)], PRIMARY, "not shown (mnist supports, cifar10 contradicts)"),
        ([(-0.1, 0.35), (-0.2, 0.1)], PRIMARY, "not shown (mnist inconclusive, cifar10 absent)"),
        ([(-0.4, 0.3), (-0.2, 0.3)], PRIMARY, "not shown (mnist inconclusive, cifar10 "
         "inconclusive)"),  # an interval reaching 0.3 is not inside (-0.3, 0.3)
        ([(0.1, 0.3), (0.1, 0.2)], SECONDARY, ""),  # a secondary row gets no verdict
    ],
)  # fmt: skip
def test_the_verdict_rule(lows_highs, row, expected):
    by_run = {run: stats(*lh) for run, lh in zip(("mnist", "cifar10"), lows_highs, strict=True)}
    assert report.verdict(by_run, row) == expected


def test_the_smallest_effects_of_interest_are_declared_beside_the_primary_endpoints():
    declared = {row.key: row.smallest_effect for row in report.CLAIMS if row.primary}
    assert declared == {
        "correlate.reference_excess_spearman_rho": 0.3,
        "evaluate.pgd_auc_plus_gain": 0.01,
    }
    assert all(row.smallest_effect is None for row in report.CLAIMS if not row.primary)


def test_the_power_is_at_the_smallest_effect_where_the_observed_mean_is_smaller():
    """Below the smallest effect of interest the seeds are those that detect it, labelled so (a
    correlation on Fisher's z scale); at or above it, the summary's own (the observed mean)."""
    from fragile_neurons.stats.power import seeds_for_power

    small = stats(-0.16, 0.2, mean=0.017) | {"kind": "correlation", "sd": 0.2175,
                                              "seeds_for_power": 1334}  # fmt: skip
    at = seeds_for_power(math.atanh(0.3), 0.2175)
    assert report.power_seeds(small, PRIMARY) == f"{at} at rho 0.3"
    large = stats(0.2, 0.6, mean=0.4) | {"kind": "correlation", "sd": 0.2, "seeds_for_power": 5}
    assert report.power_seeds(large, PRIMARY) == "5"
    gain = stats(-0.02, 0.01, mean=-0.004) | {"sd": 0.01, "seeds_for_power": 50}
    assert report.power_seeds(gain, GAIN) == f"{seeds_for_power(0.01, 0.01)} at the effect 0.01"


def test_a_verdict_needs_an_interval_for_every_run_and_gives_the_seeds_for_power():
    one_seed = {"n": 1, "mean": 0.2, "low": None, "high": None, "values": {"0": 0.2}}
    assert report.verdict({"mnist": stats(0.1, 0.3), "cifar10": one_seed}, PRIMARY) == (
        "not shown (mnist supports, cifar10 1 seed)"
    )
    # two seeds that happen to agree give a narrow CI of one degree of freedom: no verdict
    two_seeds = stats(0.06, 0.19, n=2)
    assert report.verdict({"mnist": two_seeds}, PRIMARY) == "not shown (mnist 2 seeds)"
    assert report.verdict({"mnist": stats(0.06, 0.19, n=3)}, PRIMARY) == "supported"
    assert report.verdict({"mnist": None, "cifar10": None}, PRIMARY) == "n/a"
    why = "no reference network (runs.<name>.reference is false)"
    assert report.verdict({"mnist": None}, PRIMARY, why) == f"n/a: {why}"
    powered = stats(0.2, 0.6) | {"seeds_for_power": 7, "sd": 0.3}
    assert report.verdict({"mnist": powered}, PRIMARY) == "supported; seeds for 80% power: mnist 7"


def test_exactly_one_primary_endpoint_per_claim():
    """method.md section 7: each claim's verdict rests on one declared measure."""
    claims, current = {}, None
    for row in report.CLAIMS:
        current = row.claim or current
        claims.setdefault(current, []).append(row)
    primaries = {claim: [r.key for r in rows if r.primary] for claim, rows in claims.items()}
    assert primaries == {
        "the attack targets fragile neurons": ["correlate.reference_excess_spearman_rho"],
        "hardening improves robustness": ["evaluate.pgd_auc_plus_gain"],
        "checks": [],
    }


def test_cells_are_mean_and_interval_or_the_value_or_a_share():
    assert report.cell(stats(-0.2612, -0.0581, mean=-0.16)) == "-0.160 [-0.261, -0.058]"
    assert report.cell(stats(-0.2612, -0.0581, mean=-0.16), digits=4, n=4) == (
        "-0.1600 [-0.2612, -0.0581] (n = 5)"
    )
    assert report.cell({"n": 1, "mean": 0.25, "low": None, "high": None, "values": {}}) == "0.250"
    share = {"n": 5, "mean": 0.4, "low": None, "high": None,
             "values": {"0": False, "1": True, "2": False, "3": True, "4": False}}  # fmt: skip
    assert report.cell(share) == "2/5" and report.cell(None) == "n/a"
    p = {"kind": "p", "n": 5, "median": 0.031, "count": 3, "values": {}}
    assert report.cell(p) == "p < 0.05 in 3/5, median 0.031"
    assert report.cell({"kind": "count", "n": 3, "median": 2, "values": {}}) == "median 2"


def member(name, seed, compress=0.5, runs=("mnist", "cifar10")):
    params = flatten(PARAMS) | {"seed": seed, "harden.compress": compress}
    return {
        "name": name,
        "rev": name[:7],
        "baseline": name == "baseline",
        "seed": seed,
        "params": params,
        "runs": {r: run_values(seed, compress, OFFSETS[r]) for r in runs},
    }


def sweep_summary(members, by):
    return json.loads(to_json(summarise(members, flatten(PARAMS), by, rev="f" * 40)))


SEEDS = [member("baseline", 0), *(member(f"seed-{s}", s) for s in (1, 2, 3, 4))]
DOSES = [*SEEDS, *(member(f"c{c}", 0, c, runs=("mnist",)) for c in (1.0, 0.75, 0.25))]


def table_rows(table: str) -> list[list[str]]:
    """The claims table's cells, header first."""
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines]


def test_the_claims_table_has_a_row_per_measure_and_a_verdict_by_the_rule():
    summary = sweep_summary(SEEDS, [])
    table = report.claims_table(report.claim_blocks(summary), PARAMS["runs"])
    assert (
        "- mnist (mnist_cnn), cifar10 (cifar_cnn): `metrics/sweeps/seeds.json`: 5 members "
        "(seeds 0, 1, 2, 3, 4), the baseline commit `fffffff`" in table
    )
    assert (
        "Regenerate: `dvc repro` (seed 0); `dvc exp run --queue -S 'seed=range(1,5)' -S threads=1 "
        "-S workers=1 -C data/raw`; `fragile-neurons sweep --rev fffffff --seeds --json "
        "metrics/sweeps/seeds.json`." in table
    )
    head, *rows = table_rows(table)
    assert head == [
        "claim", "measure", "mnist, mnist_cnn (5 seeds)", "cifar10, cifar_cnn (5 seeds)",
        "verdict, mnist_cnn and cifar_cnn",
    ]  # fmt: skip
    assert len(rows) == len(report.CLAIMS)
    group = summary["groups"][0]
    for row, cells in zip(report.CLAIMS, rows, strict=True):
        by_run = {run: group["runs"][run].get(row.key) for run in ("mnist", "cifar10")}
        assert cells == [
            row.claim,
            row.measure,
            report.cell(by_run["mnist"], row.digits, 5),
            report.cell(by_run["cifar10"], row.digits, 5),
            report.verdict(by_run, row, report.why_absent(row, group["runs"])),
        ]
    # the fixture's reference-excess rho: mnist's CI holds 0, cifar10's lies above it
    assert rows[0][-1].startswith("not shown (mnist ")
    assert "cifar10 supports); seeds for 80% power: mnist " in rows[0][-1]
    assert [r[-1] != "" for r in rows] == [row.primary for row in report.CLAIMS]
    assert rows[-1][3] == "2/5"  # masking flagged in seeds 1 and 3
    assert report.VERDICT_RULE in table


def resnet(name, seed, run):
    """A member of `dvc exp run -S '~runs.<other>' -S runs.<run>.arch=resnet18 -S seed=<seed>`."""
    m = member(name, seed, runs=(run,))
    m["params"] = {
        k: v for k, v in m["params"].items() if not k.startswith("runs.") or f"runs.{run}." in k
    } | {f"runs.{run}.arch": "resnet18", "threads": 1}
    return m


def test_other_models_are_a_block_of_columns_with_their_own_verdict_and_commands():
    models = sweep_summary(
        [member("baseline", 0), *(resnet(f"m{s}", s, "mnist") for s in (0, 1, 2)),
         resnet("c0", 0, "cifar10")],
        None,
    )  # fmt: skip
    assert [g["label"] for g in models["groups"]] == [  # sorted by cifar10's arch, then mnist's
        "runs.cifar10.arch=cifar_cnn, runs.mnist.arch=mnist_cnn",
        "runs.mnist.arch=resnet18",
        "runs.cifar10.arch=resnet18",
    ]
    blocks = report.claim_blocks(sweep_summary(SEEDS, []), models)
    assert [b.source for b in blocks] == [report.SEEDS, report.MODELS, report.MODELS]
    table = report.claims_table(blocks, PARAMS["runs"])
    head, *rows = table_rows(table)
    assert head[5:] == [
        "mnist, resnet18 (3 seeds)", "verdict, resnet18",
        "cifar10, resnet18 (1 seed)", "verdict, resnet18",
    ]  # fmt: skip
    assert "(n = " not in "".join(rows[0])  # each column's own seed count
    mnist = models["groups"][1]["runs"]["mnist"]["correlate.reference_excess_spearman_rho"]
    assert rows[0][5:7] == [
        report.cell(mnist, 3, 3),
        report.verdict({"mnist": mnist}, report.CLAIMS[0]),
    ]
    # one seed has no CI: its block's verdict says so instead of judging; the cell gives that
    # seed's own p-value (correlations, margins) or its bootstrap CI (gains)
    assert rows[0][8] == "not shown (cifar10 1 seed)"
    cifar = models["groups"][2]["runs"]["cifar10"]
    rho = cifar["correlate.reference_excess_spearman_rho"]["mean"]
    p = cifar["correlate.reference_excess_spearman_p"]["median"]
    assert rows[0][7] == f"{rho:.3f} (p = {p:.2g})"
    at = {row.key: i for i, row in enumerate(report.CLAIMS)}
    gain = [cifar[f"evaluate.fgsm_auc_plus_gain{k}"]["mean"] for k in ("", "_low", "_high")]
    assert rows[at["evaluate.fgsm_auc_plus_gain"]][7] == (
        "{:.3f} (the seed's CI [{:.3f}, {:.3f}])".format(*gain)
    )
    assert rows[-1][7] == "0/1"
    noise = cifar["correlate.noise_spearman_rho"]["mean"]
    assert rows[at["correlate.noise_spearman_rho"]][7] == f"{noise:.3f}"
    assert (
        "- mnist (resnet18): `metrics/sweeps/models.json`, group `runs.mnist.arch=resnet18`: 3 "
        "members (seeds 0, 1, 2), the baseline commit `fffffff` and its experiments. " in table
    )  # its members all ran one thread: nothing pooled beside the seed
    assert (
        "`dvc exp run --queue -S '~runs.cifar10' -S runs.mnist.arch=resnet18 -S 'seed=range(0,3)' "
        "-S threads=1 -S workers=1 -C data/raw`; `fragile-neurons sweep --rev fffffff "
        "--by runs.cifar10.arch --by runs.mnist.arch --json metrics/sweeps/models.json`" in table
    )
    assert "-S '~runs.mnist' -S runs.cifar10.arch=resnet18 -S seed=0 -S threads" in table


def test_the_dose_response_table_has_a_row_per_setting_for_each_run_with_several():
    summary = sweep_summary(DOSES, ["harden.compress"])
    (table,) = report.dose_tables(summary, Path("metrics/sweeps/compress.json"))  # not cifar10
    lines = table.splitlines()
    assert lines[0].startswith("`metrics/sweeps/compress.json`, run mnist, on the seeds every row")
    assert "has (0; mean" in lines[0]  # the settings compared on their common seed
    assert lines[2].startswith("| harden.compress | seeds | FGSM AUC+ gain | PGD AUC+ gain |")
    rows = lines[4:]
    assert [r.split("|")[1].strip() for r in rows] == ["0.25", "0.5 (baseline)", "0.75", "1.0"]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "1", "1", "1"]
    quarter = stage_metrics(0, 0.25, OFFSETS["mnist"])["evaluate"]["headline"]
    assert rows[0].split("|")[3].strip() == f"{quarter['fgsm_auc_plus_gain']:.3f}"
    half = stage_metrics(0, 0.5, OFFSETS["mnist"])["evaluate"]["headline"]
    assert rows[1].split("|")[3].strip() == f"{half['fgsm_auc_plus_gain']:.3f}"  # seed 0 alone
    # two seeds in every setting: each row an interval over seeds 0 and 1
    more = [*DOSES, *(member(f"c{c}-1", 1, c, runs=("mnist",)) for c in (1.0, 0.75, 0.25))]
    (table,) = report.dose_tables(sweep_summary(more, ["harden.compress"]), Path("c.json"))
    assert "has (0, 1; mean" in table.splitlines()[0]
    assert [r.split("|")[2].strip() for r in table.splitlines()[4:]] == ["2"] * 4


def test_seeds_run_as_one_experiment_per_run_are_counted_and_regenerated_per_run():
    """Seed experiments that each hold one run (`-S '~runs.cifar10'`): the block counts each
    run's own seeds, and its commands queue each run's seeds apart."""
    members = [member("baseline", 0)]
    members += [member(f"seed-mnist-{s}", s, runs=("mnist",)) for s in (1, 2, 3)]
    members += [member(f"seed-cifar10-{s}", s, runs=("cifar10",)) for s in (1, 2)]
    summary = sweep_summary(members, [])
    table = report.claims_table(report.claim_blocks(summary), PARAMS["runs"])
    assert "6 members (seeds cifar10 0, 1, 2; mnist 0, 1, 2, 3)" in table
    assert (
        "`dvc exp run --queue -S '~runs.mnist' -S 'seed=range(1,3)' -S threads=1 -S workers=1 "
        "-C data/raw`; `dvc exp run --queue -S '~runs.cifar10' -S 'seed=range(1,4)' -S threads=1 "
        "-S workers=1 -C data/raw`"
    ) in table
    head = table_rows(table)[0]
    assert head[2:4] == ["mnist, mnist_cnn (4 seeds)", "cifar10, cifar_cnn (3 seeds)"]


def test_the_selection_study_has_its_own_columns_and_counts_what_its_experiments_ran():
    """An experiment of `label@mnist` at another selection size holds train and label numbers
    only; the table shows reliability, significant labels and accuracy, and the compress
    experiments (evaluate numbers only in their groups' columns) add no row."""
    sizes = []
    for size in (10000, 20000):
        m = member(f"sel-{size}", 0, runs=("mnist",))
        m["params"] = m["params"] | {"runs.mnist.selection_size": size}
        values = m["runs"]["mnist"].items()
        m["runs"]["mnist"] = {k: v for k, v in values if k.split(".")[0] in ("train", "label")}
        m["runs"]["mnist"]["label.clean_reliability"] = size / 25000
        sizes.append(m)
    by = ["runs.cifar10.selection_size", "runs.mnist.selection_size"]
    summary = sweep_summary([*SEEDS, *sizes], by)  # a row shows the params of its own run
    (table,) = report.dose_tables(summary, Path("metrics/sweeps/selection.json"))
    lines = table.splitlines()
    assert lines[2] == (
        "| runs.mnist.selection_size | seeds | reliability of clean phi | labelled neurons with "
        "McNemar p < 0.05 | test accuracy of f |"
    )
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in lines[4:]]
    assert [r[:2] for r in rows] == [["5000 (baseline)", "1"], ["10000", "1"], ["20000", "1"]]
    assert rows[1][2] == "0.40" and rows[2][2] == "0.80"
    assert rows[0][3].startswith("median ")
    assert report.table_columns(["harden.compress"]) == report.DOSE_COLUMNS


def write_run(folder: Path, run: str) -> None:
    metrics = folder / "metrics" / run
    metrics.mkdir(parents=True)
    for path, content in metrics_files(0, 0.5, OFFSETS[run]).items():
        (metrics / path).parent.mkdir(exist_ok=True)
        (metrics / path).write_text(json.dumps(content))
    (metrics / "data.json").write_text(json.dumps({"dataset": run, "checksums_verified": True}))
    attack = {"fgsm_accuracy": {"0": 0.99, "0.1": 0.5}, "success_rate": {"0": 0, "0.1": 0.5}}
    (metrics / "attack.json").write_text(json.dumps(attack))


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for run in PARAMS["runs"]:
        write_run(tmp_path, run)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_sweeps_are_said_and_present_ones_tabulated(project):
    text = report.section(report.committed_runs())
    assert "No seed sweep is committed yet (`metrics/sweeps/seeds.json`)" in text
    assert "No dose-response sweep is committed yet" in text
    assert "| Spearman rho of clean phi and X (p) | -0.350 (p = 0.01) | 0.150 (p = 0.01) |" in text
    assert "| Spearman rho of clean phi and X^ref (p), primary | -0.350 (p = 0.02) |" in text
    assert "| gradient masking flagged | no | no |" in text
    (project / "metrics" / "sweeps").mkdir()
    (project / "metrics/sweeps/seeds.json").write_text(to_json(sweep_summary(SEEDS, [])))
    dose = to_json(sweep_summary(DOSES, ["harden.compress"]))
    (project / "metrics/sweeps/compress.json").write_text(dose)
    text = report.section(report.committed_runs())
    assert "No seed" not in text and "No dose" not in text
    assert "| the attack targets fragile neurons |" in text and "| 0.25 | 1 |" in text
    # other models: columns of the claims table, never a dose-response table
    models = sweep_summary([member("baseline", 0), resnet("m0", 0, "mnist")], None)
    (project / "metrics/sweeps/models.json").write_text(to_json(models))
    text = report.section(report.committed_runs())
    assert "| verdict, resnet18 |" in text and "`metrics/sweeps/models.json`, run" not in text
    # a seed summary without the baseline's params has no claims table, and says so
    elsewhere = dose.replace('"baseline": true', '"baseline": false')
    (project / "metrics/sweeps/seeds.json").write_text(elsewhere)
    assert "holds no group with the baseline's params" in report.section(report.committed_runs())


def test_the_command_rewrites_only_between_the_markers_and_checks(project):
    readme, results = project / "README.md", project / "docs" / "results.md"
    readme.write_text(f"# title\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
    results.parent.mkdir()
    results.write_text(f"# results\n\n{report.BEGIN}\n{report.END}\n")
    command = [sys.executable, "-m", "fragile_neurons.reporting.report", "--readme", "README.md"]
    command += ["--results", "docs/results.md"]
    check = subprocess.run([*command, "--check"], cwd=project, capture_output=True, text=True)
    assert check.returncode == 1
    assert check.stderr.splitlines() == [
        f"{path}: the generated section differs; run `fragile-neurons report --readme README.md "
        "--results docs/results.md`"
        for path in ("README.md", "docs/results.md")
    ]
    subprocess.run(command, cwd=project, check=True)
    text = readme.read_text()
    assert text == (  # no seed sweep in this project: the findings say so
        f"# title\n\n{report.BEGIN}\nNo seed sweep is committed yet (`metrics/sweeps/seeds.json`): "
        f"the findings need one.\n{report.END}\n\nafter\n"
    )
    text = results.read_text()
    assert text.startswith(f"# results\n\n{report.BEGIN}\n### Claims, over seeds\n")
    end = [
        "| FGSM accuracy | 0.9900 | 0.5000 |",
        "| success rate | 0.000 | 0.500 |",
        "",
        "| cifar10: AUC | FGSM | PGD | FGSM transferred |",
        "| --- | --- | --- | --- |",
        "| original | n/a | n/a | n/a |",
        "",
        "### The primary's attack, calibrated",
        "",
        report.calibration_section(report.committed_runs()),  # none in this project: a sentence
        report.END,
        "",
    ]
    assert "predates the calibration" in end[-3]
    assert text.endswith("\n".join(end))
    assert subprocess.run([*command, "--check"], cwd=project).returncode == 0
    # only the file that differs is named, and nothing is written
    readme.write_text(readme.read_text().replace("No seed", "Some seed"))
    check = subprocess.run([*command, "--check"], cwd=project, capture_output=True, text=True)
    assert check.returncode == 1 and check.stderr.startswith("README.md: the generated section")
    assert "Some seed" in readme.read_text() and len(check.stderr.splitlines()) == 1
    readme.write_text("no markers\n")
    stale = f"# results\n\n{report.BEGIN}\nold\n{report.END}\n"
    results.write_text(stale)
    bad = subprocess.run(command, cwd=project, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("usage: fragile-neurons report ")
    assert bad.stderr.splitlines()[-1].startswith(
        "fragile-neurons report: error: README.md: expected one line"
    )
    assert results.read_text() == stale  # one file refused: neither is written


def test_the_findings_give_each_primary_row_and_its_verdict_in_a_plain_sentence(project):
    (project / "metrics" / "sweeps").mkdir()
    (project / "metrics/sweeps/seeds.json").write_text(to_json(sweep_summary(SEEDS, [])))
    models = sweep_summary([member("baseline", 0), resnet("c0", 0, "cifar10")], None)
    (project / "metrics/sweeps/models.json").write_text(to_json(models))
    text = report.findings(report.committed_runs())
    head, *rows = table_rows(text)
    assert head == ["claim", "model", "primary endpoint", "mnist", "cifar10", "verdict"]
    assert [r[:2] for r in rows] == [  # the v4 sweep holds seed 0: no block of its own
        ["the attack targets fragile neurons", "mnist_cnn, cifar_cnn"],
        ["hardening improves robustness", "mnist_cnn, cifar_cnn"],
        ["the attack targets fragile neurons", "resnet18"],
        ["hardening improves robustness", "resnet18"],
    ]
    group = sweep_summary(SEEDS, [])["groups"][0]["runs"]
    rho = group["mnist"]["correlate.reference_excess_spearman_rho"]
    assert rows[0][3] == f"{report.cell(rho)} (5 seeds)"
    assert rows[2][3] == "" and rows[2][4].endswith("(1 seed)")  # resnet18 ran on cifar10 only
    # the fixture: rho's interval holds 0 on mnist and lies above it on cifar10 (as the claims
    # table's verdict says), and each row's verdict is the first word of its sentence
    sentences = text.split("\n\n")[-1].replace("\n  ", " ").splitlines()  # items, unwrapped
    assert sentences[0] == (
        "- The attack targets fragile neurons (mnist_cnn on mnist and cifar_cnn on cifar10): "
        "**not shown**: on mnist the 95% interval holds 0 and reaches beyond (-0.3, 0.3); on "
        "cifar10 the 95% interval lies above 0."
    )
    assert sentences[3].endswith(
        "**not shown**: cifar10 has 1 seed, fewer than the 3 a verdict needs."
    )
    assert [r[-1] for r in rows] == [s.split("**")[1] for s in sentences]


@pytest.mark.parametrize(
    ("lows_highs", "expected"),
    [
        ([(0.1, 0.3), (0.05, 0.2)], "**supported**: the 95% interval lies above 0 in every run."),
        ([(-0.3, -0.1), (-0.2, -0.01)], "**contradicted**: the 95% interval lies below 0 in every "
         "run, against the claim."),
        ([(-0.2, 0.25), (-0.1, 0.29)], "**absent**: the 95% interval lies inside (-0.3, 0.3) in "
         "every run: no effect as large as the smallest of interest."),
        ([(0.1, 0.3), (-0.2, 0.4)], "**not shown**: on mnist the 95% interval lies above 0; on "
         "cifar10 the 95% interval holds 0 and reaches beyond (-0.3, 0.3)."),
        ([(0.1, 0.3), (-0.2, 0.1)], "**not shown**: on mnist the 95% interval lies above 0; on "
         "cifar10 the 95% interval lies inside (-0.3, 0.3) (absent: no effect as large as the "
         "smallest of interest)."),
        ([(-0.3, -0.1), None], "**not shown**: on mnist the 95% interval lies below 0; cifar10 "
         "has no value."),
        ([None, None], "**not measured**: no run has a value."),
    ],
)  # fmt: skip
def test_a_plain_verdict_says_the_rule_s_verdict_and_why(lows_highs, expected):
    by_run = {
        run: lh and stats(*lh) for run, lh in zip(("mnist", "cifar10"), lows_highs, strict=True)
    }
    assert report.plain_verdict(by_run, PRIMARY) == expected
    rule = report.verdict(by_run, PRIMARY)
    assert expected.split("**")[1] == ("not measured" if rule == "n/a" else rule.split(" (")[0])


# --- method versions, the baseline's own block, the calibration ---------------------------------


def test_a_summary_without_a_method_is_method_v3_and_its_block_says_so(project):
    from fragile_neurons.reporting.sweep import METHOD, method_of

    summary = sweep_summary(SEEDS, [])
    assert summary["method"] == METHOD == "v4"  # the sweep records the current method
    older = {k: v for k, v in summary.items() if k != "method"}  # written before the field
    assert method_of(older) == "v3" and method_of(summary) == "v4"
    head, *rows = table_rows(report.claims_table(report.claim_blocks(older), PARAMS["runs"]))
    assert head[2:] == [
        "mnist, mnist_cnn (5 seeds, method v3)", "cifar10, cifar_cnn (5 seeds, method v3)",
        "verdict, mnist_cnn and cifar_cnn (method v3)",
    ]  # fmt: skip
    group = older["groups"][0]["runs"]
    by_run = {run: group[run][PRIMARY.key] for run in ("mnist", "cifar10")}
    assert rows[0][-1] == f"method v3's verdict: {report.verdict(by_run, PRIMARY)}"
    assert [r[-1] == "" for r in rows] == [not row.primary for row in report.CLAIMS]
    current = table_rows(report.claims_table(report.claim_blocks(summary), PARAMS["runs"]))
    assert "method" not in " ".join(current[0]) and "method" not in current[1][-1]
    # the findings: the v3 block's rows and each of its sentences say method v3
    (project / "metrics" / "sweeps").mkdir()
    (project / "metrics/sweeps/seeds.json").write_text(to_json(older))
    text = report.findings(report.committed_runs())
    assert [r[1] for r in table_rows(text)[1:]] == [
        *["mnist_cnn, cifar_cnn (seed 0, method v4)"] * 2,
        *["mnist_cnn, cifar_cnn (method v3)"] * 2,
    ]
    sentences = text.split("\n\n")[-1].replace("\n  ", " ").splitlines()
    assert len(sentences) == 3 and all("method v3)" in s for s in sentences[1:])


def test_an_earlier_method_s_seed_sweep_stays_beside_the_current_one_being_collected(project):
    """While the current method's seeds are collected in slices (seeds.json, few seeds), the
    earlier method's sweep (seeds-v3.json) keeps its block after it, marked with its method, in
    the findings and the claims table; it is no dose-response table."""
    summary = sweep_summary(SEEDS[:2], [])  # v4: seeds 0 and 1
    older = {k: v for k, v in sweep_summary(SEEDS, []).items() if k != "method"}  # v3: 5 seeds
    sweeps = project / "metrics" / "sweeps"
    sweeps.mkdir()
    (sweeps / "seeds.json").write_text(to_json(summary))
    (sweeps / "seeds-v3.json").write_text(to_json(older))
    text = report.findings(report.committed_runs())
    assert [r[1] for r in table_rows(text)[1:]] == [  # seed 0 is in the current sweep
        *["mnist_cnn, cifar_cnn"] * 2,
        *["mnist_cnn, cifar_cnn (method v3)"] * 2,
    ]
    assert [r[3] for r in table_rows(text)[1:3]] == [
        f"{report.cell(summary['groups'][0]['runs']['mnist'][row.key], row.digits)} (2 seeds)"
        for _, row in report.primary_rows()
    ]
    sentences = text.split("\n\n")[-1].replace("\n  ", " ").splitlines()
    assert len(sentences) == 4
    assert all("fewer than the 3 a verdict needs" in s for s in sentences[:2])
    assert all("method v3)" in s for s in sentences[2:])
    section = report.section(report.committed_runs())
    assert "--seeds --json metrics/sweeps/seeds-v3.json`" in section  # its regenerate command
    assert "No dose-response sweep is committed yet" in section  # seeds-v3.json is none
    (sweeps / "seeds-vnext.json").write_text("not a summary")  # no method version: not read
    assert report.findings(report.committed_runs()) == text
    # seed 0 has its own block while no current-method seed sweep holds it, even beside a
    # current-method models summary
    (sweeps / "seeds.json").write_text(to_json(older))
    (sweeps / "models.json").write_text(to_json(sweep_summary([resnet("c0", 0, "cifar10")], None)))
    rows = table_rows(report.findings(report.committed_runs()))[1:]
    assert rows[0][1] == "mnist_cnn, cifar_cnn (seed 0, method v4)"


def test_the_sweep_records_the_method_of_its_baseline_commit(monkeypatch):
    from fragile_neurons.reporting import sweep

    titles = {"a": "# The method, defined (v3)\n\ntext", "b": None}
    monkeypatch.setattr(sweep, "git_show", lambda rev, path: titles[rev])
    assert sweep.method_at("a") == "v3"
    assert sweep.method_at("b") == sweep.METHOD  # no docs/method.md title: the current one
    assert (
        (ROOT / "docs/method.md").read_text().startswith(f"# The method, defined ({sweep.METHOD})")
    )  # METHOD is docs/method.md's version


def test_the_baseline_block_has_one_seed_cells_and_no_verdict():
    values = {run: run_values(0, 0.5, OFFSETS[run]) for run in ("mnist", "cifar10")}
    block = report.seed0_block(values)
    assert block.seed0 and block.method == "v4"
    head, *rows = table_rows(report.claims_table([block], PARAMS["runs"], missing=""))
    assert head[2:] == [
        "mnist, mnist_cnn (seed 0, method v4)", "cifar10, cifar_cnn (seed 0, method v4)",
        "verdict, mnist_cnn and cifar_cnn (seed 0)",
    ]  # fmt: skip
    at = {row.key: cells for row, cells in zip(report.CLAIMS, rows, strict=True)}
    mnist = values["mnist"]
    rho = mnist["correlate.reference_excess_spearman_rho"]
    p = mnist["correlate.reference_excess_spearman_p"]
    assert at[PRIMARY.key][2:] == [
        f"{rho:.3f} (p = {p:.2g})", at[PRIMARY.key][3], report.ONE_SEED
    ]  # fmt: skip
    assert report.ONE_SEED == "n/a: 1 seed (the v4 sweeps will give the verdict)"
    assert at[GAIN.key][-1] == report.ONE_SEED
    placebo = mnist["correlate.placebo_excess_spearman_rho"]
    assert at["correlate.placebo_excess_spearman_rho"][2] == f"{placebo:.3f} (p = 0.5)"
    gain = [mnist[f"evaluate.pgd_auc_plus_gain{k}"] for k in ("", "_low", "_high")]
    assert at[GAIN.key][2] == "{:.3f} (the seed's CI [{:.3f}, {:.3f}])".format(*gain)
    assert at["evaluate.calibrated"][2:4] == ["1/1", "1/1"]  # seed 0 is calibrated
    assert at["placebo.test_accuracy"][2] == f"{mnist['placebo.test_accuracy']:.4f}"
    assert all(cells[-1] == "" for key, cells in at.items() if key not in (PRIMARY.key, GAIN.key))
    # metrics that predate v4 (none of its keys): the block says method v3 and shows n/a
    old = {run: {k: v for k, v in h.items() if k not in report.V4_KEYS and "placebo" not in k
                 and "ceiling" not in k and "loss" not in k and "reliability" not in k}
           for run, h in values.items()}  # fmt: skip
    head, *rows = table_rows(report.claims_table([report.seed0_block(old)], PARAMS["runs"], ""))
    assert head[2] == "mnist, mnist_cnn (seed 0, method v3)"
    at = {row.key: cells for row, cells in zip(report.CLAIMS, rows, strict=True)}
    assert at["correlate.ceiling"][2:4] == ["n/a", "n/a"]
    assert at["evaluate.calibrated"][2:4] == ["n/a", "n/a"]
    assert report.seed0_block({}) is None


def test_the_calibration_section_tabulates_each_run_s_rows(project):
    evaluate = project / "metrics" / "mnist" / "evaluate.json"
    details = json.loads(evaluate.read_text())
    rows = [
        {"epsilon": "0.1", "attack": "apgd-ce 50x1", "accuracy": 0.91, "autoattack": 0.9,
         "gap": 0.01},
        {"epsilon": "0.3", "attack": "apgd-ce 50x1", "accuracy": 0.425, "autoattack": 0.4,
         "gap": 0.025},
    ]  # fmt: skip
    evaluate.write_text(json.dumps(details | {"calibration": rows, "calibrated": False}))
    text = report.calibration_section(report.committed_runs())
    lines = text.splitlines()
    assert "at most 0.02" in text.replace("\n", " ")
    assert lines[
        lines.index("| run | epsilon | attack | its accuracy | AutoAttack's | gap | calibrated |")
        + 2 :
    ][:2] == [  # fmt: skip
        "| mnist | 0.1 | apgd-ce 50x1 | 0.9100 | 0.9000 | 0.0100 | no |",
        "| mnist | 0.3 | apgd-ce 50x1 | 0.4250 | 0.4000 | 0.0250 | no |",
    ]
    assert lines[-1] == "cifar10: its evaluate.json predates the calibration."
    assert "### The primary's attack, calibrated\n\n" + text in report.section(
        report.committed_runs()
    )
    evaluate.write_text(json.dumps(details | {"calibration": [], "calibrated": None}))
    assert "mnist: the check is off (no rows)." in report.calibration_section(
        report.committed_runs()
    )
    evaluate.write_text(json.dumps(details))
    assert report.calibration_section(report.committed_runs()).startswith(
        "The committed baseline predates the calibration"
    )


def test_a_run_without_a_placebo_network_says_so_in_the_placebo_row():
    row = next(r for r in report.CLAIMS if r.key == "correlate.placebo_excess_spearman_rho")
    absent = {"correlate.placebo": {"kind": "flag", "n": 2, "count": 0, "values": {0: False}}}
    assert report.claim_cell(absent, row, 2) == "no placebo network (runs.<name>.placebo is false)"
    assert report.claim_cell({}, row, 2) == "n/a"  # a summary that predates the placebo
