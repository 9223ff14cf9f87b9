"""The results, from committed files only: metrics/<run>/ (the baseline, seed 0: its headlines,
read through headline.py, and evaluate.json, attack.json and data.json) and metrics/sweeps/*.json
(summaries written by `fragile-neurons sweep --json`).

    fragile-neurons report                      # print the full results (Markdown)
    fragile-neurons report --readme README.md --results docs/results.md
                                                # rewrite both between their markers
    fragile-neurons report --readme README.md --results docs/results.md --check
                                                # exit 1 if either differs, write nothing

--readme FILE: the findings (`findings`), the claims table's primary rows and each verdict in one
plain sentence, between FILE's markers. --results FILE: the full results (`section`) between FILE's
markers: (a) the claims table: one row per claim and measure; first a block of the baseline's own
seed 0 (its metrics/<run>/ headlines: one-seed cells, no verdict), then a block of columns for the
baseline's group of metrics/sweeps/seeds.json, one for that of each earlier method's seed sweep
(metrics/sweeps/seeds-v3.json: kept while the current method's seeds are collected), and one for
each other group of metrics/sweeps/models.json (other models, e.g. ResNet-18: experiments that
change a run's `arch`), each column a run's mean [95% CI] over seeds, each block with its verdict
by VERDICT_RULE and the commands that regenerate it; (b) a dose-response table for each other
summary in metrics/sweeps/ (compress.json: harden.compress; selection.json: the selection-size
study, with its own columns) and each run with at least two settings; (c) the baseline's tables;
(d) the calibration of the primary's attack against AutoAttack (evaluate.json's `calibration`). A
missing summary is a sentence saying so and how to make it. A block of a summary of an older method
version than sweep.METHOD (one without `method`: v3) says so in its headers and verdicts.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from ..figures.formats import fixed, p_value, with_interval
from ..running.config import ATTACKS, load_params
from ..running.errors import ParamError
from ..stats.power import seeds_for_power
from ..stats.significance import ALPHA
from ..storage import headline, paths
from ..storage.io import write_with
from .experiments import flatten
from .seedstats import kind, resummarise, resummarise_run, summarise_values
from .sweep import METHOD, OLDEST_METHOD, SummaryError, load_summary, method_of
from .sweep import load_json as read_json
from .terminal import run_seeds, seeds_text

BEGIN = "<!-- begin: fragile-neurons report (generated from metrics/; edit report.py, not this) -->"
END = "<!-- end: fragile-neurons report -->"
SWEEPS = Path("metrics/sweeps")
SEEDS = SWEEPS / "seeds.json"
MODELS = SWEEPS / "models.json"  # experiments of other models: its non-baseline groups are columns
# seed sweeps of earlier method versions (seeds-v3.json), kept beside seeds.json while the current
# method's seeds are collected in slices: each a block after the current one, marked with its method
EARLIER = re.compile(r"seeds-v(\d+)\.json")
BASELINE = Path("metrics/<run>")  # the baseline's own headlines (seed 0): the first block
# headline keys that method v4 added: a baseline whose metrics hold none of them predates v4
V4_KEYS = ("correlate.placebo", "label.loss_reliability", "placebo.test_accuracy",
           "evaluate.calibrated", "evaluate.calibration_max_gap")  # fmt: skip
ONE_SEED = f"n/a: 1 seed (the {METHOD} sweeps will give the verdict)"
ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD", "transfer": "transferred FGSM"}


@dataclass(frozen=True)
class Row:
    """A row of the claims table: the claim (empty: the row above's), the measure, its key in
    the sweep summary, whether it is the claim's declared primary endpoint (the only row with a
    verdict: method.md section 7), decimals, and the key of the seed's own p-value (shown beside
    a one-seed value; a gain's own bootstrap CI, `<key>_low` and `<key>_high`, is found by
    name). Every claim is that its measure lies above 0."""

    claim: str
    measure: str
    key: str
    primary: bool = False
    digits: int = 3
    p_key: str = ""
    # the smallest effect of interest of a primary endpoint (method.md section 7, declared in v4
    # before the v4 sweeps): an interval wholly inside (-e, e) is the verdict "absent"
    smallest_effect: float | None = None


def _secondary(measure: str, key: str, **options) -> Row:
    return Row("", f"{measure} (secondary)", key, **options)


CLAIMS = (
    Row(
        "the attack targets fragile neurons",
        "Spearman rho of clean phi and X^ref, f's attack over another trained network's "
        "(**primary**)",
        "correlate.reference_excess_spearman_rho",
        primary=True,
        p_key="correlate.reference_excess_spearman_p",
        smallest_effect=0.3,  # Spearman rho: a "moderate" association (the paper claims strong)
    ),
    Row("", "its p-value in single seeds", "correlate.reference_excess_spearman_p"),
    Row(
        "",
        "Spearman rho of clean phi and X^plc (placebo: the primary's empirical null, two networks "
        "that are not f)",
        "correlate.placebo_excess_spearman_rho",
        p_key="correlate.placebo_excess_spearman_p",
    ),
    Row(
        "",
        "reliability of clean phi (split-half, Spearman-Brown; a correlation with phi can "
        "hardly exceed its square root)",
        "label.clean_reliability",
    ),
    Row(
        "",
        "reliability of X^ref (split-half, Spearman-Brown)",
        "correlate.reference_excess_reliability",
    ),
    Row("", "ceiling of the primary, sqrt(rel(phi) * rel(X^ref))", "correlate.ceiling"),
    _secondary(
        "Spearman rho of psi (loss fragility) and X^ref",
        "correlate.loss_reference_excess_spearman_rho",
        p_key="correlate.loss_reference_excess_spearman_p",
    ),
    Row("", "reliability of psi (split-half, Spearman-Brown)", "label.loss_reliability"),
    _secondary(
        "Spearman rho of clean phi and X^sur (over a spectrum-matched surrogate)",
        "correlate.surrogate_excess_spearman_rho",
        p_key="correlate.surrogate_excess_spearman_p",
    ),
    _secondary(
        "Spearman rho of clean phi and X (over white noise)",
        "correlate.excess_spearman_rho",
        p_key="correlate.excess_spearman_p",
    ),
    _secondary(
        "Spearman rho of clean phi and D (the paper's measure)",
        "correlate.share_spearman_rho",
        p_key="correlate.share_spearman_p",
    ),
    _secondary(
        "Spearman rho of clean phi and D^ref (control)", "correlate.reference_share_spearman_rho"
    ),
    _secondary("Spearman rho of clean phi and N (control)", "correlate.noise_spearman_rho"),
    _secondary("Spearman rho of clean phi and G (control)", "correlate.filter_gain_spearman_rho"),
    Row(
        "hardening improves robustness",
        "PGD AUC+ gain of the hardened arm (**primary**)",
        "evaluate.pgd_auc_plus_gain",
        primary=True,
        smallest_effect=0.01,  # AUC+: one accuracy point averaged over the epsilons
    ),
    Row(
        "",
        "primary's attack within 0.02 of AutoAttack on the baseline (calibrated)",
        "evaluate.calibrated",
    ),
    Row("", "largest gap to AutoAttack", "evaluate.calibration_max_gap", digits=4),
    *(
        _secondary(f"PGD AUC+ gain of the {name} arm", f"evaluate.{arm}_pgd_auc_plus_gain")
        for arm, name in (
            ("compress_only", "compress-only"),
            ("amplify_only", "amplify-only"),
            ("recalibrated", "hardened+recalibrated (against the recalibrated original)"),
        )
    ),
    _secondary("FGSM AUC+ gain", "evaluate.fgsm_auc_plus_gain"),
    *(
        _secondary(
            f"{a} margin over random of the hardened arm",
            f"evaluate.{a.lower()}_margin_over_random",
            p_key=f"evaluate.{a.lower()}_p_value",
        )
        for a in ("FGSM", "PGD")
    ),
    *(
        _secondary(f"{a} permutation p of the margin", f"evaluate.{a.lower()}_p_value")
        for a in ("FGSM", "PGD")
    ),
    Row("", "clean-accuracy change (its cost)", "evaluate.clean_accuracy_change", digits=4),
    Row("", "gradient masking flagged at the mid epsilon (seeds)", "evaluate.masking_mid_flagged"),
    Row("checks", "test accuracy of f", "train.test_accuracy", digits=4),
    Row("", "test accuracy of the reference network f_ref", "reference.test_accuracy", digits=4),
    Row("", "test accuracy of the placebo network f_ref2", "placebo.test_accuracy", digits=4),
    Row("", "labels resolved (seeds)", "label.resolved"),
    Row("", "gradient masking flagged (seeds)", "evaluate.masking"),
)
MIN_SEEDS = 3  # a verdict needs an interval over at least this many seeds in every run
VERDICT_RULE = (
    "Verdict, per claim and block of columns, from the claim's **primary** row alone (declared "
    "before it was measured, so no correction for the secondary rows is needed), over at least "
    f"{MIN_SEEDS} seeds in every run: **supported** when the 95% interval of every run lies wholly "
    "above 0, **contradicted** when every run's lies wholly below 0, **absent** when every run's "
    "lies wholly inside the smallest effect of interest (Spearman rho (-0.3, 0.3) for claim 1, "
    "AUC+ (-0.01, 0.01) for claim 2: no effect as large as the smallest that would matter), "
    "otherwise **not shown**, naming each run's own (supports, contradicts, absent, inconclusive, "
    "or too few seeds). Beside it: the seeds each run needs for 80% power, by the exact power of "
    "the two-sided one-sample t-test at 5% (noncentral t), at the observed mean, or at the "
    "smallest effect of interest where the observed mean is smaller (labelled so). Correlations "
    "are averaged on Fisher's z scale, the Student-t interval of the mean z transformed back; "
    f"gains and margins as they are. p-values are never averaged: a cell gives the seeds with "
    f"p < {ALPHA:g} and the median; flags, the seeds where they hold."
)
DOSE_COLUMNS = (
    ("FGSM AUC+ gain", "evaluate.fgsm_auc_plus_gain", 3),
    ("PGD AUC+ gain", "evaluate.pgd_auc_plus_gain", 3),
    ("clean-accuracy change", "evaluate.clean_accuracy_change", 4),
    ("FGSM margin over random", "evaluate.fgsm_margin_over_random", 3),
    ("PGD margin over random", "evaluate.pgd_margin_over_random", 3),
    ("compress-only PGD AUC+ gain", "evaluate.compress_only_pgd_auc_plus_gain", 3),
    ("amplify-only PGD AUC+ gain", "evaluate.amplify_only_pgd_auc_plus_gain", 3),
    ("hardened+recalibrated PGD AUC+ gain", "evaluate.recalibrated_pgd_auc_plus_gain", 3),
)

# The selection-size study (issue: phi's reliability against the images S holds): its own columns
SELECTION_COLUMNS = (
    ("reliability of clean phi", "label.clean_reliability", 2),
    (f"labelled neurons with McNemar p < {ALPHA:g}", "label.significant", 0),
    ("test accuracy of f", "train.test_accuracy", 4),
)


def table_columns(by: list[str]) -> tuple[tuple[str, str, int], ...]:
    """A summary's columns: the selection study's where it groups by a `selection_size`, the
    hardening's dose-response otherwise."""
    return SELECTION_COLUMNS if any(k.endswith(".selection_size") for k in by) else DOSE_COLUMNS


# --- cells and verdicts ------------------------------------------------------------------------


def cell(stats: dict | None, digits: int = 3, n: int | None = None) -> str:
    """A summary by its kind (seedstats.summarise_values): `mean [low, high]` (the value alone for
    one seed), `k/n` for a flag, `p < ALPHA in k/n, median m` for p-values, `median m` for a
    count; `(n = k)` appended where k differs from the column's `n`."""
    if not stats:
        return "n/a"
    how = stats.get("kind") or kind("", list(stats["values"].values()))
    if how == "flag":
        count = stats.get("count")
        text = f"{sum(stats['values'].values()) if count is None else count}/{stats['n']}"
    elif how == "p":
        text = f"p < {ALPHA:g} in {stats['count']}/{stats['n']}, median {p_value(stats['median'])}"
    elif how == "count":
        text = f"median {stats['median']:g}"
    else:
        text = with_interval(stats["mean"], stats["low"], stats["high"], digits)
    return text if n is None or stats["n"] == n else f"{text} (n = {stats['n']})"


def claim_cell(values: dict[str, dict], row: Row, n: int) -> str:
    """`cell` of the row's key in one column ({key: summary}); a one-seed value also gets, in
    brackets, that seed's own uncertainty: its bootstrap 95% CI or its p-value. A placebo row of
    a run without a placebo network says so (method.md section 2)."""
    stats = values.get(row.key)
    flag = values.get("correlate.placebo")
    if not stats and row.key.startswith("correlate.placebo_") and flag and flag.get("count") == 0:
        return "no placebo network (runs.<name>.placebo is false)"
    text = cell(stats, row.digits, n)
    if not stats or stats["n"] != 1 or stats.get("kind") not in ("estimate", "correlation"):
        return text
    low, high = values.get(f"{row.key}_low"), values.get(f"{row.key}_high")
    if low and high:
        bounds = ", ".join(fixed(b["mean"], row.digits) for b in (low, high))
        return f"{text} (the seed's CI [{bounds}])"
    if row.p_key in values:
        return f"{text} (p = {p_value(values[row.p_key]['median'])})"
    return text


def side(stats: dict | None) -> int:
    """+1 when the interval lies above 0, -1 below, 0 when it holds 0, there is none, or it
    rests on fewer than MIN_SEEDS seeds."""
    if not stats or stats.get("low") is None or stats.get("high") is None:
        return 0
    if stats["n"] < MIN_SEEDS:
        return 0
    return 1 if stats["low"] > 0 else -1 if stats["high"] < 0 else 0


def inside(stats: dict | None, row: Row) -> bool:
    """Whether the interval lies wholly inside the row's smallest effect of interest, over at
    least MIN_SEEDS seeds (the verdict "absent" for that run)."""
    e = row.smallest_effect
    if e is None or not stats or stats.get("low") is None or stats["n"] < MIN_SEEDS:
        return False
    return -e < stats["low"] and stats["high"] < e


def run_verdict(stats: dict | None, row: Row) -> str:
    """One run's own verdict: supports, contradicts (the interval excludes 0), absent (inside the
    smallest effect of interest), inconclusive, or its seeds where they are fewer than MIN_SEEDS."""
    if not stats or stats["n"] < MIN_SEEDS:
        n = stats["n"] if stats else 0
        return f"{n} seed{'s' * (n != 1)}"
    s = side(stats)
    if s:
        return "supports" if s == 1 else "contradicts"
    return "absent" if inside(stats, row) else "inconclusive"


def power_seeds(stats: dict | None, row: Row) -> str:
    """The seeds for 80% power of one run: at the observed mean (the summary's), or, for a
    primary row whose observed mean is smaller than its smallest effect of interest, at that
    effect (on Fisher's z scale for a correlation), labelled so; "" where unknown."""
    if not stats or not stats.get("sd") or stats.get("mean") is None:
        return ""
    e = row.smallest_effect
    if e is not None and abs(stats["mean"]) < e:
        z = stats.get("kind") == "correlation"
        needed = seeds_for_power(math.atanh(e) if z else e, stats["sd"])
        return f"{needed} at {'rho' if z else 'the effect'} {e:g}" if needed else ""
    return str(stats["seeds_for_power"]) if stats.get("seeds_for_power") else ""


def _power(by_run: dict[str, dict | None], row: Row) -> str:
    needed = [f"{run} {text}" for run, stats in by_run.items() if (text := power_seeds(stats, row))]
    return f"; seeds for 80% power: {', '.join(needed)}" if needed else ""


VERDICTS = {"supports": "supported", "contradicts": "contradicted", "absent": "absent"}


def block_verdict(own: dict[str, str]) -> str:
    """A block's verdict from its runs' own (`run_verdict`): the one they all share, else
    "not shown"."""
    shared = set(own.values())
    if len(shared) == 1 and (word := shared.pop()) in VERDICTS:
        return VERDICTS[word]
    return "not shown"


def verdict(by_run: dict[str, dict | None], row: Row, absent: str = "") -> str:
    """VERDICT_RULE for one row: {run: its summary of the row's key}; `absent` says why a
    primary row has no values (e.g. the runs have no reference network)."""
    if not row.primary:
        return ""
    if not by_run or all(stats is None for stats in by_run.values()):
        return f"n/a: {absent}" if absent else "n/a"
    own = {run: run_verdict(stats, row) for run, stats in by_run.items()}
    block = block_verdict(own)
    named = "" if block != "not shown" else f" ({', '.join(f'{r} {v}' for r, v in own.items())})"
    return block + named + _power(by_run, row)


def _seeds(run: str, n: int) -> str:
    return f"{run}: {n} seed{'s' * (n != 1)}"


def why_absent(row: Row, by_run: dict[str, dict]) -> str:
    """Why a primary row has no values in a column block: {run: {key: summary}}."""
    if row.key.startswith("correlate.reference"):
        flags = [values.get("correlate.reference") for values in by_run.values()]
        if any(f and f.get("count") == 0 for f in flags):
            return "no reference network (runs.<name>.reference is false)"
        if all(f is None for f in flags):
            return "this sweep predates the reference network (method v3): rerun its seeds"
    return ""


# --- (a) the claims table ----------------------------------------------------------------------


def baseline_group(summary: dict) -> dict | None:
    """The group of a sweep summary with the baseline's params."""
    return next((g for g in summary["groups"] if g["baseline"]), None)


@dataclass(frozen=True)
class Block:
    """Columns of the claims table: one group of a sweep summary (`source`), a column per run,
    with a verdict of its own."""

    source: Path
    summary: dict
    group: dict

    def arch(self, run: str, runs: dict[str, dict]) -> str:
        return self.group["params"].get(f"runs.{run}.arch") or runs.get(run, {}).get("arch", "?")

    @property
    def method(self) -> str:
        """The method version of its numbers (a summary without one: OLDEST_METHOD)."""
        return method_of(self.summary)

    @property
    def older(self) -> bool:
        """Whether its method predates the current one (METHOD): its headers say so."""
        return self.method != METHOD

    @property
    def seed0(self) -> bool:
        """Whether it is the baseline's own block (seed 0, its committed headlines)."""
        return self.source == BASELINE

    def seeds(self) -> list:
        return sorted({s for seeds in run_seeds(self.group).values() for s in seeds})


def run_method(found: dict) -> str:
    """The method version of a run's headlines ({key: value}): METHOD where they hold a key of
    V4_KEYS, else OLDEST_METHOD (metrics that predate v4)."""
    return METHOD if any(key in found for key in V4_KEYS) else OLDEST_METHOD


def seed0_block(found: dict[str, dict]) -> Block | None:
    """The baseline's own block from its runs' committed headlines ({run: {key: value}}, as
    `run_headlines` reads them): one seed, each key summarised as a sweep summarises one seed;
    its method METHOD where every run's headlines are of it (`run_method`)."""
    if not found:
        return None
    values = {
        run: {key: summarise_values([("0", value)], key) for key, value in h.items()}
        for run, h in found.items()
    }
    methods = {run_method(h) for h in found.values()}
    method = METHOD if methods == {METHOD} else OLDEST_METHOD
    group = {
        "label": "seed 0",
        "params": {},
        "baseline": True,
        "members": [{"name": "baseline", "rev": "", "seed": 0, "runs": sorted(values)}],
        "pooled": {},
        "runs": values,
    }
    summary = {"method": method, "rev": "", "by": [], "pooled": {}, "groups": [group]}
    return Block(BASELINE, summary, group)


def baseline_block(runs: dict[str, dict]) -> Block | None:
    """`seed0_block` of the committed metrics of `runs`."""
    return seed0_block({run: run_headlines(run) for run in runs})


def earlier_version(path: Path) -> int | None:
    """The method version of an earlier method's seed sweep file (EARLIER: seeds-v3.json, 3);
    None for any other file."""
    found = EARLIER.fullmatch(path.name)
    return int(found.group(1)) if found else None


def earlier_sweeps() -> list[tuple[Path, dict]]:
    """The committed seed sweeps of earlier method versions (EARLIER), the latest method first."""
    found = [p for p in SWEEPS.glob("seeds-v*.json") if earlier_version(p) is not None]
    found.sort(key=earlier_version, reverse=True)
    return [(path, resummarise(load_summary(path))) for path in found]


def claim_blocks(
    seeds: dict, models: dict | None = None, earlier: list[tuple[Path, dict]] = ()
) -> list[Block]:
    """The baseline's group of the seed sweep, then that of each earlier method's seed sweep
    (`earlier`: (file, summary), as `earlier_sweeps` reads them), then each other group of the
    models summary."""
    blocks = [Block(SEEDS, seeds, g) for g in [baseline_group(seeds)] if g]
    blocks += [Block(path, old, g) for path, old in earlier for g in [baseline_group(old)] if g]
    if models:
        blocks += [Block(MODELS, models, g) for g in models["groups"] if not g["baseline"]]
    return blocks


def sweep_blocks() -> list[Block]:
    """`claim_blocks` of the committed sweeps: seeds.json's, each earlier method's seed sweep's,
    and models.json's (when committed)."""
    models = resummarise(load_summary(MODELS)) if MODELS.is_file() else None
    return claim_blocks(resummarise(load_summary(SEEDS)), models, earlier_sweeps())


def _seed_values(seeds: list) -> str:
    """Hydra's sweep of these seeds: `seed=3`, `seed=range(0,3)` or `seed=choice(0,2)`."""
    numbers = sorted(seeds)
    if len(numbers) == 1:
        return f"seed={numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"'seed=range({numbers[0]},{numbers[-1] + 1})'"
    return f"'seed=choice({','.join(map(str, numbers))})'"


def commands(block: Block, runs: dict[str, dict]) -> str:
    """The commands that regenerate a block: its experiments, then its sweep summary."""
    summary, group = block.summary, block.group
    seeds_only = block.source == SEEDS or earlier_version(block.source) is not None
    grouping = ["--seeds"] if seeds_only else [f"--by {k}" for k in summary["by"]]
    rev = f"--rev {summary['rev'][:7]}"
    summarise = " ".join(["fragile-neurons sweep", rev, *grouping, f"--json {block.source}"])
    if seeds_only:
        by_run = {run: [s for s in seeds if s != 0] for run, seeds in run_seeds(group).items()}
        if len({tuple(seeds) for seeds in by_run.values()}) == 1:  # both runs in each experiment
            by_run = {"": next(iter(by_run.values()))}
        queues = [
            " ".join(
                ["dvc exp run --queue"]
                + [f"-S '~runs.{other}'" for other in by_run if run and other != run]
                + [f"-S {_seed_values(seeds)} -S threads=1 -S workers=1 -C data/raw"]
            )
            for run, seeds in by_run.items()
            if seeds
        ]
        return "; ".join(["`dvc repro` (seed 0)", *(f"`{q}`" for q in queues), f"`{summarise}`"])
    reference = flatten({"runs": runs})
    mine = [run for run in runs if run in group["runs"]]
    overrides = [f"'~runs.{run}'" for run in runs if run not in mine] + [
        f"{key}={value}" for key, value in group["params"].items() if reference.get(key) != value
    ]
    queue = " ".join(
        ["dvc exp run --queue", *(f"-S {o}" for o in overrides)]
        + [f"-S {_seed_values(block.seeds())}", "-S threads=1 -S workers=1 -C data/raw"]
    )
    return f"`{queue}`; `{summarise}`"


def _provenance(block: Block) -> str:
    summary, group = block.summary, block.group
    seeds = seeds_text(group)
    pooled = "".join(
        f"; {key} pooled ({', '.join('null' if v is None else str(v) for v in values)})"
        for key, values in group.get("pooled", summary["pooled"]).items()  # older files: none
        if key != "seed"
    )
    which = "" if block.source == SEEDS else f", group `{group['label']}`"
    return (
        f"`{block.source}`{which}: {len(group['members'])} member"
        f"{'s' * (len(group['members']) != 1)} (seed{'s' * (len(group['members']) != 1)} "
        f"{seeds}), the baseline "
        f"commit `{summary['rev'][:7]}` and its experiments{pooled}"
    )


def block_columns(block: Block, runs: dict[str, dict]) -> list[tuple[str, dict, int]]:
    """A block's columns, in params.yaml's order of runs: (run, summary by key, seeds)."""
    found = block.group["runs"]
    order = [r for r in runs if r in found] + sorted(set(found) - set(runs))
    return [(r, found[r], max((s["n"] for s in found[r].values()), default=0)) for r in order]


def block_verdict_cell(block: Block, by_run: dict[str, dict | None], row: Row, absent: str) -> str:
    """A block's verdict cell of a row: ONE_SEED for a primary row of the seed-0 block; an older
    method's verdict says whose it is."""
    if block.seed0:
        return ONE_SEED if row.primary else ""
    text = verdict(by_run, row, absent)
    return f"method {block.method}'s verdict: {text}" if text and block.older else text


def _heads(block: Block, cols: list, runs: dict[str, dict]) -> list[str]:
    """A block's column headers: a column per run, then its verdict's."""
    archs = " and ".join(dict.fromkeys(block.arch(run, runs) for run, _, _ in cols))
    if block.seed0:
        heads = [f"{r}, {block.arch(r, runs)} (seed 0, method {block.method})" for r, _, _ in cols]
        return [*heads, f"verdict, {archs} (seed 0)"]
    mark = f", method {block.method}" if block.older else ""
    heads = [f"{r}, {block.arch(r, runs)} ({n} seed{'s' * (n != 1)}{mark})" for r, _, n in cols]
    return [*heads, f"verdict, {archs}" + (f" (method {block.method})" if block.older else "")]


def claims_table(blocks: list[Block], runs: dict[str, dict], missing: str | None = None) -> str:
    """The claims table: a row per claim and measure, per block a column per run and a verdict;
    `runs` are params.yaml's (their order, and each run's `arch` where a group sets none).
    `missing`: said where no block is the seed sweep's (default: that seeds.json holds no group
    with the baseline's params)."""
    if missing is None:
        missing = f"`{SEEDS}` holds no group with the baseline's params."
    if not blocks:
        return missing
    columns = [block_columns(block, runs) for block in blocks]
    heads, lines = [], ["Columns and the commands that regenerate them:", ""]
    if missing and not any(block.source == SEEDS for block in blocks):
        lines[:0] = [missing, ""]
    for block, cols in zip(blocks, columns, strict=True):
        heads += _heads(block, cols, runs)
        named = ", ".join(f"{run} ({block.arch(run, runs)})" for run, _, _ in cols)
        if block.seed0:
            lines.append(
                f"- {named}, seed 0 (method {block.method}): the baseline's committed headlines, "
                f"`{BASELINE}/`, as the baseline's tables below read them; one seed, so no "
                f"verdict. Regenerate: `dvc repro`."
            )
        else:
            older = f" Method {block.method}: its numbers predate method {METHOD}." * block.older
            lines.append(
                f"- {named}: {_provenance(block)}.{older} Regenerate: {commands(block, runs)}."
            )
    lines += [
        "",
        "Each cell: mean [95% interval] over seeds (correlations on Fisher's z), or for "
        f"p-values the seeds with p < {ALPHA:g} and the median. A one-seed cell: its value, and in "
        "brackets that seed's own uncertainty, the bootstrap 95% CI over test images (gains, "
        "clean-accuracy change) or the p-value (correlations: of the rank correlation; margins: "
        "of the permutation test against the random draws); no verdict rests on one seed.",
        "",
    ]
    lines += ["| claim | measure | " + " | ".join(heads) + " |"]
    lines += ["| --- | --- |" + " --- |" * len(heads)]
    for row in CLAIMS:
        cells = []
        for block, cols in zip(blocks, columns, strict=True):
            by_run = {run: values.get(row.key) for run, values, _ in cols}
            cells += [claim_cell(values, row, n) for _, values, n in cols]
            absent = why_absent(row, {run: values for run, values, _ in cols})
            cells.append(block_verdict_cell(block, by_run, row, absent))
        lines.append(f"| {row.claim} | {row.measure} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", VERDICT_RULE])


# --- the findings: the claims table's primary rows, for the README --------------------------

# The primary endpoints' names in the findings (the claims table's measure, shortened)
PRIMARY_NAMES = {
    "correlate.reference_excess_spearman_rho": "Spearman rho of clean phi and X^ref",
    "evaluate.pgd_auc_plus_gain": "PGD AUC+ gain of the hardened network",
}


def plain_verdict(by_run: dict[str, dict | None], row: Row, absent: str = "") -> str:
    """VERDICT_RULE's verdict of a primary row ({run: its summary}) as one plain sentence."""
    if not by_run or all(stats is None for stats in by_run.values()):
        return f"**not measured**: {absent or 'no run has a value'}."
    band = f"(-{row.smallest_effect:g}, {row.smallest_effect:g})" if row.smallest_effect else ""
    own = {run: run_verdict(stats, row) for run, stats in by_run.items()}
    block = block_verdict(own)
    if block == "supported":
        return "**supported**: the 95% interval lies above 0 in every run."
    if block == "contradicted":
        return "**contradicted**: the 95% interval lies below 0 in every run, against the claim."
    if block == "absent":
        return (f"**absent**: the 95% interval lies inside {band} in every run: no effect as "
                "large as the smallest of interest.")  # fmt: skip
    parts = []
    for run, word in own.items():
        if by_run[run] is None:
            parts.append(f"{run} has no value")
        elif word in ("supports", "contradicts"):
            where = "above" if word == "supports" else "below"
            parts.append(f"on {run} the 95% interval lies {where} 0")
        elif word == "absent":
            parts.append(f"on {run} the 95% interval lies inside {band} (absent: no effect as "
                         "large as the smallest of interest)")  # fmt: skip
        elif word == "inconclusive":
            beyond = f" and reaches beyond {band}" if band else ""
            parts.append(f"on {run} the 95% interval holds 0{beyond}")
        else:
            parts.append(f"{run} has {word}, fewer than the {MIN_SEEDS} a verdict needs")
    return "**not shown**: " + "; ".join(parts) + "."


def primary_rows() -> list[tuple[str, Row]]:
    """(claim, row) of each primary row of CLAIMS."""
    found, claim = [], ""
    for row in CLAIMS:
        claim = row.claim or claim
        if row.primary:
            found.append((claim, row))
    return found


def findings(runs: dict[str, dict]) -> str:
    """The README's findings (between its markers, without them): for each claim and block of
    columns of the claims table (the baseline's seed 0 first where no sweep of the current method
    is committed yet, which would hold it), the primary row's values and
    verdict, then each verdict in one plain sentence, an older method's block marked so; from
    the committed files, as `section`."""
    if not SEEDS.is_file():
        return f"No seed sweep is committed yet (`{SEEDS}`): the findings need one."
    blocks = sweep_blocks()
    if not blocks:
        return f"`{SEEDS}` holds no group with the baseline's params."
    if not any(b.source == SEEDS and not b.older for b in blocks):  # seed 0 is in no such sweep
        blocks = [b for b in [baseline_block(runs)] if b] + blocks
    names = list(dict.fromkeys([r for r in runs] + [r for b in blocks for r in b.group["runs"]]))
    lines = [
        "| claim | model | primary endpoint | " + " | ".join(names) + " | verdict |",
        "| --- | --- | --- |" + " --- |" * len(names) + " --- |",
    ]
    sentences = []
    for block in blocks:
        cols = block_columns(block, runs)
        models_text = ", ".join(dict.fromkeys(block.arch(run, runs) for run, _, _ in cols))
        on_runs = " and ".join(f"{block.arch(run, runs)} on {run}" for run, _, _ in cols)
        mark = (
            f"seed 0, method {block.method}"
            if block.seed0
            else f"method {block.method}" * block.older
        )
        for claim, row in primary_rows():
            by_run = {run: values.get(row.key) for run, values, _ in cols}
            if block.seed0:
                cells = {run: claim_cell(values, row, 1) for run, values, _ in cols}
                sentence = "**n/a**"
            else:
                cells = {
                    run: f"{cell(values.get(row.key), row.digits)} ({n} seed{'s' * (n != 1)})"
                    for run, values, n in cols
                }
                absent = why_absent(row, {run: values for run, values, _ in cols})
                sentence = plain_verdict(by_run, row, absent)
            word = sentence.split("**")[1]
            lines.append(
                f"| {claim} | {models_text}{f' ({mark})' if mark else ''} | "
                f"{PRIMARY_NAMES.get(row.key, row.measure)} | "
                + " | ".join(cells.get(run, "") for run in names)
                + f" | {word} |"
            )
            where = f"{on_runs}, {mark}" if mark else on_runs
            if not block.seed0:
                sentences.append(_wrap(f"- {claim[0].upper()}{claim[1:]} ({where}): {sentence}"))
        if block.seed0:  # one sentence for both claims
            seed0 = f"- Seed 0 ({on_runs}, method {block.method}): **n/a** for every claim"
            sentences.append(_wrap(f"{seed0}: 1 seed; the {METHOD} sweeps will give the verdicts."))
    intro = _wrap(
        "Each claim's primary endpoint, declared before it was measured: the baseline's seed 0, "
        "then the mean [95% interval] over seeds; a claim is supported when the interval lies "
        f"above 0 in every run (at least {MIN_SEEDS} seeds), contradicted when below 0, absent "
        "when inside the smallest effect of interest (rho 0.3, AUC+ 0.01, declared with method "
        f"v4 after the method-v3 sweeps were seen) in every run."
    )
    return "\n".join([intro, "", *lines, "", *sentences])


def _wrap(text: str) -> str:
    """A paragraph or list item in lines of at most 100 characters (a list item's indented)."""
    indent = "  " if text.startswith("- ") else ""
    return textwrap.fill(
        text, 100, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


# --- (b) dose-response tables ------------------------------------------------------------------


def _seeds_of(values: dict[str, dict], columns) -> set[str]:
    """The seeds of a group's run that hold a number of the table's columns."""
    return {seed for _, key, _ in columns for seed in values.get(key, {}).get("values", {})}


def dose_tables(summary: dict, source: Path) -> list[str]:
    """One table per run with at least two settings that hold a number of the table's columns
    (table_columns): a row per such setting of the summary's params."""
    columns = table_columns(summary["by"])
    tables = []
    runs = sorted({run for g in summary["groups"] for run in g["runs"]})
    for run in runs:
        # the params that can move this run: global ones and its own (sweep.per_run)
        by = [k for k in summary["by"] if not k.startswith("runs.") or k.startswith(f"runs.{run}.")]
        heading = ", ".join(by) if by else "group"
        groups = [
            g
            for g in summary["groups"]
            if any(key in g["runs"].get(run, {}) for _, key, _ in columns)
        ]
        if len(groups) < 2:
            continue
        # settings compared on the same seeds: those every row has (a row of more seeds, e.g.
        # the baseline's, would otherwise differ by its seeds as much as by its setting)
        seeds = set.intersection(*(_seeds_of(g["runs"][run], columns) for g in groups))
        shown = ", ".join(sorted(seeds, key=lambda seed: (len(seed), seed)))  # 2 before 10
        lines = [
            f"`{source}`, run {run}, on the seeds every row has ({shown}; mean [95% CI] over "
            "them, the value alone for one seed):",
            "",
            f"| {heading} | seeds | " + " | ".join(h for h, _, _ in columns) + " |",
            "| --- | --- |" + " --- |" * len(columns),
        ]
        for g in groups:
            values = resummarise_run(g["runs"][run], seeds)
            setting = ", ".join(str(g["params"][k]) for k in by) if by else g["label"]
            n = max((values[key]["n"] for _, key, _ in columns if key in values), default=0)
            mark = " (baseline)" if g["baseline"] else ""
            cells = [cell(values.get(key), digits, n) for _, key, digits in columns]
            lines.append(f"| {setting}{mark} | {n} | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return tables


# --- (c) the baseline: seed 0, the committed metrics of each run -------------------------------


def run_headlines(run: str) -> dict:
    """`<stage>.<key>` -> value of the run's committed headlines (as the sweep reads them)."""
    folder = paths.metrics(run, "train").parent
    files = {str(p.relative_to(folder)): read_json(p) for p in sorted(folder.glob("*/*.json"))}
    return headline.read_files(files)


def _value(h: dict, key: str, digits: int = 3) -> str:
    value = h.get(key)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fixed(value, digits)


def _with_p(h: dict, key: str, p_key: str) -> str:
    if key not in h:
        return "n/a"
    return fixed(h[key], 3) + (f" (p = {p_value(h[p_key])})" if p_key in h else "")


def _gains(details: dict, measure: str) -> str:
    """evaluate.json's gain of each attack in `measure` (auc, relative_auc)."""
    gain = details.get("gain") or {}
    return " / ".join(fixed((gain.get(a) or {}).get(measure, {}).get("value"), 3) for a in ATTACKS)


def _with_ci(h: dict, key: str, digits: int = 3) -> str:
    return with_interval(h.get(key), h.get(f"{key}_low"), h.get(f"{key}_high"), digits)


def _masking(h: dict) -> str:
    if "evaluate.masking" not in h:
        return "n/a"
    if h.get("evaluate.masking_testable") is False:
        return "not testable"
    return _value(h, "evaluate.masking")


def _rho(measure: str):
    key = f"correlate.{measure}_spearman"
    return lambda h, _: _with_p(h, f"{key}_rho", f"{key}_p")


BASELINE_ROWS = (
    ("test accuracy (f / f_ref)", lambda h, _: " / ".join(
        _value(h, f"{stage}.test_accuracy", 4) for stage in ("train", "reference")
    )),
    ("Spearman rho of clean phi and X^ref (p), primary", _rho("reference_excess")),
    ("reliability of clean phi (Spearman-Brown)", lambda h, _: _value(
        h, "label.clean_reliability"
    )),
    ("Spearman rho of clean phi and X^sur (p)", _rho("surrogate_excess")),
    ("Spearman rho of clean phi and X (p)", _rho("excess")),
    ("Spearman rho of clean phi and D (p)", _rho("share")),
    (
        "Spearman rho of clean phi and D^ref / N / G (controls)",
        lambda h, _: " / ".join(
            _value(h, f"correlate.{m}_spearman_rho")
            for m in ("reference_share", "noise", "filter_gain")
        ),
    ),
    ("labels resolved", lambda h, _: _value(h, "label.resolved")),
    *(
        (
            f"{ATTACK_NAMES[a]} AUC+ gain [bootstrap 95% CI]",
            lambda h, _, a=a: _with_ci(h, f"evaluate.{a}_auc_plus_gain"),
        )
        for a in ATTACKS
    ),
    *(
        (
            f"{ATTACK_NAMES[a]} margin over random (permutation p)",
            lambda h, _, a=a: _with_p(
                h, f"evaluate.{a}_margin_over_random", f"evaluate.{a}_p_value"
            ),
        )
        for a in ATTACKS
    ),
    ("AUC gain (over all of E) FGSM / PGD / transferred", lambda _, d: _gains(d, "auc")),
    ("relative AUC gain FGSM / PGD / transferred", lambda _, d: _gains(d, "relative_auc")),
    (
        "clean-accuracy change [bootstrap 95% CI]",
        lambda h, _: _with_ci(h, "evaluate.clean_accuracy_change", 4),
    ),
    *(
        (
            f"PGD AUC+ gain of the {name} arm [bootstrap 95% CI]",
            lambda h, _, arm=arm: _with_ci(h, f"evaluate.{arm}_pgd_auc_plus_gain"),
        )
        for arm, name in (
            ("compress_only", "compress-only"),
            ("amplify_only", "amplify-only"),
            ("recalibrated", "hardened+recalibrated"),
        )
    ),
    ("gradient masking flagged", lambda h, _: _masking(h)),
)  # fmt: skip


def baseline_table(runs: dict[str, dict]) -> str:
    """One column per run, one row per headline measure of the committed metrics (a row is
    shown by `show(headlines, evaluate.json)`)."""
    names = list(runs)
    found = {run: run_headlines(run) for run in names}
    details = {run: read_json(paths.metrics(run, "evaluate")) for run in names}
    data = {run: read_json(paths.metrics(run, "data")) for run in names}
    checked = {
        r: f"{data[r]['dataset']} ({'' if data[r]['checksums_verified'] else 'NOT '}verified)"
        for r in names
    }
    lines = [
        "| seed 0 | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
        "| data (checksums) | " + " | ".join(checked[r] for r in names) + " |",
        "| model | " + " | ".join(runs[r]["arch"] for r in names) + " |",
    ]
    for label, show in BASELINE_ROWS:
        cells = [show(found[r], details[r]) for r in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attack_table(run: str) -> str:
    attack = read_json(paths.metrics(run, "attack"))
    labels = list(attack["fgsm_accuracy"])
    return "\n".join(
        [
            f"| {run}: epsilon | " + " | ".join(labels) + " |",
            "| --- |" + " --- |" * len(labels),
            "| FGSM accuracy | "
            + " | ".join(fixed(attack["fgsm_accuracy"][e], 4) for e in labels)
            + " |",
            "| success rate | "
            + " | ".join(fixed(attack["success_rate"][e], 3) for e in labels)
            + " |",
        ]
    )


def evaluate_table(run: str) -> str:
    variants = read_json(paths.metrics(run, "evaluate"))["variants"]
    lines = [
        f"| {run}: AUC | FGSM | PGD | FGSM transferred |",
        "| --- | --- | --- | --- |",
    ]
    for name, result in variants.items():
        cells = []
        for attack in ATTACKS:
            r = result.get(attack) or {}
            std = r.get("auc_std")
            cells.append(fixed(r.get("auc"), 3) + ("" if std is None else f" ± {fixed(std, 3)}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def calibration_section(runs: dict[str, dict]) -> str:
    """The calibration of the primary's attack on the baseline (method.md section 6, v4), from
    each run's evaluate.json (`calibration`: rows {epsilon, attack, accuracy, autoattack, gap},
    and `calibrated`): a row per run and epsilon; a sentence where no run has it."""
    from ..attacks.robustness import CALIBRATION_GAP

    details = {run: read_json(paths.metrics(run, "evaluate")) for run in runs}
    have = {run: d for run, d in details.items() if isinstance(d.get("calibration"), list)}
    if not have:
        return (
            "The committed baseline predates the calibration of the primary's attack (method v4): "
            "its evaluate.json holds no `calibration`; the v4 rerun of the baseline adds it."
        )
    lines = [
        _wrap(
            "The primary's attack against AutoAttack on the original network f, seed 0: the "
            "accuracy under each and the gap between them; the attack is calibrated where every "
            f"gap is at most {CALIBRATION_GAP:g} (method.md section 6), and a claim-2 gain of an "
            "uncalibrated attack flatters every variant."
        ),
        "",
        "| run | epsilon | attack | its accuracy | AutoAttack's | gap | calibrated |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for run, d in have.items():
        rows, calibrated = d["calibration"], d.get("calibrated")
        verdict_text = "n/a" if calibrated is None else "yes" if calibrated else "no"
        if not rows:
            notes.append(f"{run}: the check is off (no rows).")
        for r in rows:
            lines.append(
                f"| {run} | {r.get('epsilon')} | {r.get('attack')} | "
                f"{fixed(r.get('accuracy'), 4)} | {fixed(r.get('autoattack'), 4)} | "
                f"{fixed(r.get('gap'), 4)} | {verdict_text} |"
            )
    missing = [run for run in runs if run not in have]
    if missing:
        notes.append(f"{', '.join(missing)}: its evaluate.json predates the calibration.")
    return "\n".join(lines + ([""] + notes if notes else []))


# --- the section -------------------------------------------------------------------------------


def section(runs: dict[str, dict]) -> str:
    """The results section between the markers (without them), from the committed files."""
    parts = ["### Claims, over seeds"]
    seed0 = [b for b in [baseline_block(runs)] if b]
    if SEEDS.is_file():
        parts.append(claims_table([*seed0, *sweep_blocks()], runs))
    else:
        parts.append(
            f"No seed sweep is committed yet (`{SEEDS}`): the claims table needs one "
            "(see Several seeds in docs/guide.md)."
        )
        if seed0:
            parts.append(claims_table(seed0, runs, missing=""))
    parts.append("### Dose-response and other settings")
    found = sorted(SWEEPS.glob("*.json")) if SWEEPS.is_dir() else []
    others = [p for p in found if p not in (SEEDS, MODELS) and earlier_version(p) is None]
    tables = [t for p in others for t in dose_tables(resummarise(load_summary(p)), p)]
    if tables:
        parts += tables
    else:
        parts.append(
            f"No dose-response sweep is committed yet (`{SWEEPS / 'compress.json'}`; "
            "see Several seeds in docs/guide.md)."
        )
    parts += ["### The baseline (seed 0)", baseline_table(runs)]
    for run in runs:
        parts += [attack_table(run), evaluate_table(run)]
    parts += ["### The primary's attack, calibrated", calibration_section(runs)]
    return "\n\n".join(parts)


def replace_section(text: str, generated: str) -> str:
    """`text` with what lies between BEGIN and END replaced by `generated`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one line {BEGIN!r} and, after it, one line {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{generated}\n{END}{tail}"


def read_text(path: Path) -> str:
    """A text file, or SummaryError naming it."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise SummaryError(f"{path}: cannot be read ({reason})") from None


def committed_runs(params_path: str | Path = "params.yaml") -> dict[str, dict]:
    """The runs of params.yaml that have their metrics, in params.yaml's order."""
    return {
        name: run
        for name, run in load_params(params_path)["runs"].items()
        if Path(paths.metrics(name, "evaluate")).is_file()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fragile-neurons report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", default="params.yaml", help="the params file")
    parser.add_argument(
        "--readme", default=None, metavar="FILE", help="rewrite the findings in this file"
    )
    parser.add_argument(
        "--results", default=None, metavar="FILE", help="rewrite the full results in this file"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="with --readme or --results: exit 1 if a file differs, write nothing",
    )
    args = parser.parse_args(argv)
    if args.check and not (args.readme or args.results):
        parser.error("--check needs --readme FILE or --results FILE (the files to compare)")
    if not Path(args.params).is_file():
        parser.error(f"--params {args.params}: no such file")
    files = [(Path(f), make) for f, make in ((args.readme, findings), (args.results, section)) if f]
    changed = []  # (file, its text, the new text)
    try:
        runs = committed_runs(args.params)
        if not files:
            print(section(runs))
            return
        for path, make in files:
            text, generated = read_text(path), make(runs)
            try:
                changed.append((path, text, replace_section(text, generated)))
            except ValueError as err:  # the markers
                parser.error(f"{path}: {err}")
    except (ParamError, SummaryError) as err:
        parser.error(str(err))
    stale = [(path, text, new) for path, text, new in changed if new != text]
    if args.check:
        given = " ".join(
            f"--{o} {getattr(args, o)}" for o in ("readme", "results") if getattr(args, o)
        )
        for path, _, _ in stale:
            print(f"{path}: the generated section differs; run `fragile-neurons report {given}`",
                  file=sys.stderr)  # fmt: skip
        sys.exit(1 if stale else 0)
    for path, _, new in stale:
        write_with(path, lambda p, new=new: p.write_text(new))


if __name__ == "__main__":
    main()
