"""The evaluate stage: the hardening with controls, as method.md section 6 defines it.

The variants: `original` (the trained model; its attacks are the baseline stage's record),
`hardened` (models/<run>/hardened.pt, as the harden stage wrote it), `random` (the
`harden.random_controls` draws of the gains record, each the hardening's rule applied to
random disjoint neuron sets: `harden.random_gains`) and `inverse` (roles swapped). The controls
are folded into a copy of the original's weights (`gates.fold`), so every variant is an ordinary
model of the same architecture, as the hardened checkpoint is.

The modules that answer each question: how a variant is attacked, image by image
(`robustness`); what is measured on a curve (`measures`); the paired bootstrap interval of a
gain and the permutation p-value of the margin over random (`paired`); the check for gradient
masking (`masking`). This module joins them: `run` attacks the variants, `summarise` builds
evaluate.json, `curves` the robustness curves. Each variant, and each epsilon of the hardened
network's masking check, is a unit of `workers.run_units` (params.yaml's `workers`: the same
bytes for any count).

The hardening gain is hardened minus original per measure, with its paired bootstrap 95%
interval; the inverse gain and the clean-accuracy change likewise; each other arm's gain against
its baseline likewise. The margin over random is hardened minus the mean of the draws per
measure, on the draws' PGD images, with the permutation p-value of "hardening beats random": of
the `hardened` arm only, whose rule the draws follow (method.md section 6); the other arms are
compared with their baseline alone. The calibration of the primary's attack (the baseline
stage's: `robustness.calibration_table`) is carried into evaluate.json. The masking check
(docs/guide.md, "AutoAttack: the masking check"): the hardened network is flagged when its PGD
accuracy exceeds its AutoAttack accuracy by more than the original's does, counted in images, on
the same images at the checked epsilons.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..attacks import masking
from ..attacks.robustness import (
    Settings,
    attack_variants,
    calibration_table,
    load_source,
    masking_images,
    masking_outcome,
)
from ..figures.evaluate import robustness_figure
from ..network.gates import fold, gated
from ..network.inference import as_input, logits_of
from ..network.models import load_checkpoint, load_trained
from ..network.recalibration import with_statistics
from ..running.config import ARMS, ATTACKS
from ..running.errors import DataError
from ..running.workers import run_units
from ..stats.measures import MEASURES, Curve, measures
from ..stats.paired import BOOTSTRAP, margin_over_random, paired_gain, resamples, std
from ..storage import headline, io, paths
from ..storage.io import load_split, rerun_advice
from ..storage.records import FGSMSweep, Gains, OriginalAttacks, ScanLayer

FOLD_TOLERANCE = 1e-4  # relative logit difference allowed between hardened.pt and the gains
# the arms besides `hardened` (method.md section 5), each against its baseline
ARM_BASELINES = {
    "hardened": "original",
    "compress_only": "original",
    "amplify_only": "original",
    "recalibrated": "original_recalibrated",
}


def load_original(run: str, test: dict, settings: Settings) -> tuple[FGSMSweep, OriginalAttacks]:
    """The original's attacks of run `run`: the attack stage's FGSM sweep of the `test` split
    (`robustness.load_source`; its signs are transferred to every variant) and the baseline
    stage's record (records.OriginalAttacks), which must have been made with these settings on
    these images; else DataError."""
    counts = settings.image_counts(len(test["labels"]))
    original = OriginalAttacks.load(
        paths.original_attacks_record(run),
        **settings.made_with(),
        fgsm_images=counts["fgsm"],
        pgd_images=counts["pgd"],
        masking_images=masking_images(settings, len(test["labels"])),
    )
    return load_source(paths.sweep_record(run), test, settings), original


def original_results(
    original: OriginalAttacks,
) -> tuple[dict[str, Curve], list[masking.Outcome]]:
    """The original's curves ({attack: Curve}; its transferred FGSM is its own) and its masking
    outcomes, one per checked epsilon (none when the check is off), from the baseline stage's
    record."""
    fgsm = Curve(original.fgsm_clean, original.fgsm_attacked)
    curves = {
        "fgsm": fgsm,
        "pgd": Curve(original.pgd_clean, original.pgd_attacked),
        "transfer": fgsm,
    }
    outcomes = [
        masking.Outcome(
            clean=original.masking_clean,
            pgd=original.masking_pgd[k],
            apgd_ce=original.masking_apgd_ce[k],
            apgd_dlr=original.masking_apgd_dlr[k],
        )
        for k in range(len(original.masking_epsilons))
    ]
    return curves, outcomes


def masking_check(
    original: OriginalAttacks,
    outcomes: list[masking.Outcome],
    hardened: nn.Module,
    pgd: Curve,
    test: dict,
    settings: Settings,
) -> tuple[dict | None, dict]:
    """The masking check (`masking.check`) of the hardened network at the epsilons the baseline
    stage checked the original at (`outcomes`, its outcomes there); each epsilon's outcome a
    unit (`workers.run_units`, in `settings.workers` processes), its PGD results the first of
    the hardened network's PGD curve (`pgd`) at that epsilon."""
    images, labels = test["images"], test["labels"]
    checked = original.masking_epsilons
    names = [settings.epsilon_labels[settings.epsilons.index(eps)] for eps in checked]
    units = {name: (hardened, images, labels, settings, eps,
                    pgd.attacked[settings.epsilons.index(eps)])
             for name, eps in zip(names, checked, strict=True)}  # fmt: skip
    ours = list(run_units(masking_outcome, units, settings.workers, settings.device).values())
    about = {
        "images": masking_images(settings, len(images)),
        "steps": settings.autoattack_steps,
        "restarts": 1,
        "pgd_attack": settings.pgd_attack,
        "pgd_steps": settings.pgd_steps,
        "pgd_restarts": settings.pgd_restarts,
        "alpha": masking.ALPHA,
        "original_pgd_accuracy": dict(
            zip(settings.epsilon_labels, original.masking_pgd_accuracy, strict=False)
        ),
    }
    return masking.check(outcomes, ours, names, about)


def load_hardened(
    path: str | Path,
    arch: str,
    model: nn.Module,
    layer: ScanLayer,
    gains: Gains,
    test: dict,
    settings: Settings,
    dataset: str | None = None,
) -> tuple[nn.Module, float]:
    """The hardened checkpoint (an `arch` network, its images and classes checked against
    `dataset` when given) and its relative logit difference from
    `model` gated by the gains record's gains, on the PGD images (a few 1e-7 when it holds
    exactly those gains). One that does not hold them is a DataError: it is not the harden
    stage's output for these gains. Both networks are moved to `settings.device`, where every
    variant is attacked."""
    hardened, _ = load_checkpoint(path, arch=arch, dataset=dataset)
    model.to(settings.device)
    hardened.to(settings.device)
    images = test["images"][: settings.pgd_samples]
    difference = folded_difference(hardened, model, layer, gains.gain, images, settings)
    if difference > FOLD_TOLERANCE:
        raise DataError(
            f"{path} does not hold the gains of the gains record (relative logit difference "
            f"{difference:.2g}); {rerun_advice(path)}"
        )
    return hardened, difference


def folded_difference(
    folded: nn.Module,
    model: nn.Module,
    layer: ScanLayer,
    gains: torch.Tensor,
    images: torch.Tensor,
    settings: Settings,
) -> float:
    """Largest |logit difference| between a folded model and `model` gated by `gains`, relative
    to the largest |logit|."""
    x = as_input(images, torch.device("cpu"))
    with gated(model, layer, gains):
        reference = logits_of(model, x, settings.batch_size, settings.device)
    diff = (logits_of(folded, x, settings.batch_size, settings.device) - reference).abs().max()
    return float(diff / reference.abs().max().clamp_min(1e-12))


def variants(gains: Gains) -> dict[str, torch.Tensor]:
    """The gates of every variant: original, hardened, random_0 .. random_{draws-1}, inverse,
    and the one-sided arms compress_only and amplify_only."""
    return {
        "original": torch.ones_like(gains.gain),
        "hardened": gains.gain,
        **{f"random_{i}": g for i, g in enumerate(gains.random_gain)},
        "inverse": gains.inverse_gain,
        "compress_only": gains.compress_only_gain,
        "amplify_only": gains.amplify_only_gain,
        # the recalibrated arm and its baseline (their BatchNorm statistics: `run`), if any
        **(
            {"recalibrated": gains.gain, "original_recalibrated": torch.ones_like(gains.gain)}
            if gains.recalibrated_modules
            else {}
        ),
    }


class Inputs(NamedTuple):
    """What the evaluate stage reads, checked, and the hardened checkpoint's difference from the
    gated original (`load_hardened`)."""

    model: nn.Module
    hardened: nn.Module
    layer: ScanLayer
    gains: Gains
    original: OriginalAttacks
    source: FGSMSweep
    test: dict
    hardened_difference: float


class Evaluated(NamedTuple):
    summary: dict  # evaluate.json, with its headline
    curves: pd.DataFrame  # every variant's robustness curves
    hardened_difference: float


def load(ctx, settings: Settings) -> Inputs:
    """The run's test split, trained and hardened networks, scanned layer, gains record and
    the baseline stage's attacks of the original, each checked against the others and the run."""
    name, run_params = ctx.name, ctx.run
    test = load_split(paths.prepared(name, "test"), run_params["dataset"])
    model, _ = load_trained(name, run_params)
    layer = ScanLayer.load(paths.layer_record(name), model=model)
    gains = Gains.load(paths.gains_record(name), neurons=layer.channels)
    source, original = load_original(name, test, settings)
    hardened, difference = load_hardened(
        paths.hardened(name), run_params["arch"], model, layer, gains, test, settings,
        dataset=run_params["dataset"],
    )  # fmt: skip
    return Inputs(model, hardened, layer, gains, original, source, test, difference)


def run(
    inputs: Inputs, settings: Settings, progress: Callable[[str], None] | None = None
) -> Evaluated:
    """The evaluate stage: every variant but the original attacked (`attack_variants`; the
    original's attacks are the baseline stage's `original`), summarised for evaluate.json
    (`summarise`, its bootstrap seeded with `settings.seed`) with the masking check of the
    original and the hardened network (`masking.check`), and the robustness curves (`curves`)."""
    model, hardened, layer, gains, original, source, test, difference = inputs
    gates = variants(gains)
    models = {name: hardened if name == "hardened" else fold(model, layer, gate)
              for name, gate in gates.items() if name != "original"}  # fmt: skip
    if "recalibrated" in models:  # the arm and its baseline, with the statistics harden made
        names = gains.recalibrated_modules
        models["recalibrated"] = with_statistics(hardened, names, gains.recalibrated_hardened)
        models["original_recalibrated"] = with_statistics(model, names, gains.recalibrated_original)
    images, labels = test["images"], test["labels"]
    attacked, original_outcomes = original_results(original)
    results = {
        "original": attacked,
        **attack_variants(models, source, images, labels, settings, progress),
    }
    autoattack, flag = masking_check(
        original, original_outcomes, hardened, results["hardened"]["pgd"], test, settings
    )
    magnitude = gains.magnitude.numpy()
    summary = summarise(
        results, settings.epsilons, settings.epsilon_labels, settings.seed, magnitude, gates
    )
    if "recalibrated" not in gates:
        why = f"no BatchNorm runs after {layer.neuron_name}: nothing to recalibrate"
        summary["arms"]["recalibrated"] = {"absent": why}
    table = curves(summary, settings.epsilons, settings.epsilon_labels)
    calibration = calibration_of(original, settings)
    return Evaluated(
        summary_with(summary, autoattack, flag, gains, settings, calibration), table, difference
    )


def write(ctx, outputs: Evaluated) -> None:
    """Its headline metrics/<run>/evaluate/ (headline.py), and for people (data/views/<run>/
    evaluate/, published by publish) evaluate.json, evaluate.csv and robustness.png (and .svg)."""
    summary, table, difference = outputs
    io.write_csv(paths.view(ctx.name, "evaluate", "evaluate.csv"), wide_curves(table))
    io.save_figure(
        paths.view(ctx.name, "evaluate", "robustness.png"),
        robustness_figure(table, summary, ctx.name),
    )
    extra = {"hardened_checkpoint_difference": difference, **ctx.runtime()}
    headline.write(ctx.name, "evaluate", {**summary, **extra})


def calibration_of(original: OriginalAttacks, settings: Settings) -> dict:
    """The calibration of the primary's attack (`robustness.calibration_table`) at every epsilon
    of E+, from the baseline stage's accuracies of the original on the masking check's images
    (no rows where the check is off)."""
    rows = [
        (label, p, a)
        for eps, label, p, a in zip(
            settings.epsilons,
            settings.epsilon_labels,
            original.masking_pgd_accuracy,
            original.masking_autoattack_accuracy,
            strict=False,
        )
        if eps > 0
    ]
    labels, primary, autoattack = ([list(c) for c in zip(*rows, strict=True)] if rows
                                   else ([], [], []))  # fmt: skip
    return calibration_table(labels, settings.primary_name, primary, autoattack)


def summary_with(
    summary: dict,
    autoattack,
    flag: dict,
    gains: Gains,
    settings: Settings,
    calibration: dict | None = None,
) -> dict:
    """evaluate.json: the summary, the masking check, the calibration of the primary's attack
    (`calibration_of`; none given: no rows), and how the variants were attacked."""
    if calibration is None:
        calibration = calibration_table([], settings.primary_name, [], [])
    headline_keys = {
        "calibration_max_gap": calibration["calibration_max_gap"],
        "calibrated": calibration["calibrated"],
        **{k: flag[k] for k in masking.FLAGS},
    }
    return {
        **summary,
        "headline": {**summary["headline"], **headline_keys},
        "masking": flag,
        **calibration,
        # false: F and R, and so the gains, rest on a cut-off the index decided
        "labels_resolved": gains.labels_resolved,
        "autoattack": autoattack,
        "epsilons": settings.epsilon_labels,
        "labels": settings.label_mode,
        "pgd_attack": settings.pgd_attack,
        "pgd_steps": settings.pgd_steps,
        "pgd_restarts": settings.pgd_restarts,
        "random_controls": len(gains.random_gain),
        # the draws' moved magnitude M'/M, and whether each lies within the tolerance
        "random_matching": {
            "tolerance": gains.random_tolerance,
            "matched": gains.random_matched,
            "ratio": gains.random_ratio.tolist(),
            "within": [abs(r - 1) <= gains.random_tolerance for r in gains.random_ratio.tolist()],
        },
    }


def summarise(
    results: dict[str, dict[str, Curve]],
    epsilons: list[float],
    labels: list[str],
    seed: int,
    magnitude: np.ndarray | None = None,
    gates: dict[str, torch.Tensor] | None = None,
    bootstrap: int = BOOTSTRAP,
) -> dict:
    """evaluate.json's measures from the per-image results of `attack_variants`.

    `variants`: per variant (original, hardened, inverse) its clean accuracy (on the FGSM images)
    and per attack the accuracy per epsilon label, AUC, AUC+ and relative AUC; the random draws
    (`random_<i>`) pooled as the mean, std (sample std over draws; None for one draw) and list of
    draws of each, and per epsilon the accuracy's mean, std and range over draws (`accuracy_low`,
    `accuracy_high`: the lowest and highest draw). `gain` and `inverse_gain`: hardened (inverse)
    minus original per attack and measure, {value, ci_low, ci_high}, from `bootstrap` paired
    resamples of a generator seeded with `seed` (`resamples`; the same for every attack on the
    same images);
    `clean_accuracy_change` likewise, on the FGSM images. `margin_over_random`: per attack and
    measure, hardened minus the draws' mean on the draws' images (`margin_over_random`); of the
    hardened arm only (the draws follow its rule), so `arms` hold gains alone.
    `headline`: the flat numbers a seed sweep collects. With `magnitude` and `gates`, each
    variant's total output magnitude ratio sum g m / sum m is reported too."""
    draws = [name for name in results if name.startswith("random_")]
    if not draws or not {"original", "hardened", "inverse"} <= set(results):
        raise ValueError("results must hold original, hardened, inverse and random_<i> variants")
    original, hardened, inverse = (results[n] for n in ("original", "hardened", "inverse"))
    for name, result in results.items():
        sizes = {a: len(c) for a, c in result.items()}
        wanted = {a: len(original[a]) for a in ATTACKS}
        if name in draws:
            wanted["pgd"] = len(results[draws[0]]["pgd"])
        if sizes != wanted or wanted["pgd"] > len(original["pgd"]):
            raise ValueError(f"{name} is attacked on {sizes} images; expected {wanted}")

    def one(name: str) -> dict:
        result = results[name]
        out = {"clean_accuracy": measures(result["fgsm"], epsilons)["clean_accuracy"]}
        for attack in ATTACKS:
            curve = result[attack]
            values = measures(curve, epsilons)
            out[attack] = {
                "accuracy": dict(zip(labels, curve.accuracy(), strict=True)),
                **{m: values[m] for m in MEASURES},
            }
        if magnitude is not None and gates is not None:
            out["magnitude_ratio"] = float(
                (gates[name].double().numpy() * magnitude).sum() / magnitude.sum()
            )
        return out

    arms = [arm for arm in ARMS if arm in results]
    single = {name: one(name) for name in ("original", "hardened", "inverse", *arms)}
    for name in [ARM_BASELINES[arm] for arm in arms if ARM_BASELINES[arm] != "original"]:
        single[name] = one(name)
    per_draw = [one(name) for name in draws]
    random = {
        "draws": len(draws),
        "clean_accuracy": statistics.mean(d["clean_accuracy"] for d in per_draw),
    }
    for attack in ATTACKS:
        accuracies = {e: [d[attack]["accuracy"][e] for d in per_draw] for e in labels}
        entry = {
            "accuracy": {e: statistics.mean(a) for e, a in accuracies.items()},
            "accuracy_std": {e: std(a) for e, a in accuracies.items()},
            # the range over draws, robustness.png's band
            "accuracy_low": {e: min(a) for e, a in accuracies.items()},
            "accuracy_high": {e: max(a) for e, a in accuracies.items()},
        }
        for m in MEASURES:
            values = [d[attack][m] for d in per_draw]
            defined = None not in values
            entry[m] = statistics.mean(values) if defined else None
            entry[f"{m}_std"] = std(values) if defined else None
            entry[f"{m}_draws"] = values
        random[attack] = entry
    if "magnitude_ratio" in per_draw[0]:
        ratios = [d["magnitude_ratio"] for d in per_draw]
        random["magnitude_ratio"] = statistics.mean(ratios)
        random["magnitude_ratio_draws"] = ratios

    weights = {}  # the bootstrap resamples, one set per number of images

    def paired(a: dict, b: dict, attack: str) -> dict:
        n = len(a[attack])
        if n not in weights:
            weights[n] = resamples(n, bootstrap, seed)
        return paired_gain(a[attack], b[attack], epsilons, weights[n])

    def arm(name: str) -> dict:
        """An arm against its baseline: gains with intervals and the clean-accuracy change; for
        the hardened arm, the margin over the random draws with its permutation p-value too."""
        ours, base = results[name], results[ARM_BASELINES[name]]
        gains = {a: paired(ours, base, a) for a in ATTACKS}
        entry = {
            "gain": {a: {m: gains[a][m] for m in MEASURES} for a in ATTACKS},
            "clean_accuracy_change": gains["fgsm"]["clean_accuracy"],  # on FGSM's images
        }
        if name != "hardened":
            return entry
        margin = {}
        for attack in ATTACKS:
            n = len(results[draws[0]][attack])  # the draws' images: the first n of the arm's
            mine = measures(ours[attack].head(n), epsilons)
            margin[attack] = {
                m: margin_over_random(mine[m], [measures(results[d][attack], epsilons)[m]
                                                for d in draws], n)
                for m in MEASURES
            }  # fmt: skip
        return {**entry, "margin_over_random": margin}

    hardened_arm = arm("hardened")
    other_arms = {name: arm(name) for name in arms}
    inverse_gains = {a: paired(inverse, original, a) for a in ATTACKS}
    headline = headline_of(hardened_arm)
    for name in ARMS:  # an absent arm (e.g. nothing to recalibrate): its numbers undefined
        headline |= arm_headline(name, other_arms.get(name))
    return {
        "headline": headline,
        **hardened_arm,
        "arms": {
            name: {"baseline": ARM_BASELINES[name], **entry} for name, entry in other_arms.items()
        },
        "inverse_gain": {a: {m: inverse_gains[a][m] for m in MEASURES} for a in ATTACKS},
        "variants": {**single, "random": random},
        "samples": {
            **{a: len(original[a]) for a in ATTACKS},
            "pgd_random": len(results[draws[0]]["pgd"]),
            "bootstrap": bootstrap,
        },
    }


def headline_of(arm: dict, prefix: str = "") -> dict:
    """The flat numbers a seed sweep collects of one arm (`summarise`'s `arm`): the
    clean-accuracy change with its interval; per attack the AUC+ gain with its interval, the
    AUC and relative AUC gains, the AUC+'s margin over random and its permutation p-value. The
    hardened arm's keys carry no prefix; another arm's are prefixed with its name."""
    change = arm["clean_accuracy_change"]
    out = {
        f"{prefix}clean_accuracy_change": change["value"],
        f"{prefix}clean_accuracy_change_low": change["ci_low"],
        f"{prefix}clean_accuracy_change_high": change["ci_high"],
    }
    for a in ATTACKS:
        gain, margin = arm["gain"][a], arm["margin_over_random"][a]["auc_plus"]
        out |= {
            f"{prefix}{a}_auc_plus_gain": gain["auc_plus"]["value"],
            f"{prefix}{a}_auc_plus_gain_low": gain["auc_plus"]["ci_low"],
            f"{prefix}{a}_auc_plus_gain_high": gain["auc_plus"]["ci_high"],
            f"{prefix}{a}_margin_over_random": margin["mean"],
            f"{prefix}{a}_p_value": margin["p_value"],
        }
    return out


def arm_headline(name: str, arm: dict | None) -> dict:
    """The headline numbers of an arm other than `hardened`: its PGD AUC+ gain (the primary
    measure, method.md section 7) with its interval, prefixed with the arm's name (None for an
    absent arm); the rest of the arm stays in evaluate.json's `arms`, so that `dvc metrics diff`
    stays short."""
    nothing = {"value": None, "ci_low": None, "ci_high": None}
    gain = nothing if arm is None else arm["gain"]["pgd"]["auc_plus"]
    return {
        f"{name}_pgd_auc_plus_gain": gain["value"],
        f"{name}_pgd_auc_plus_gain_low": gain["ci_low"],
        f"{name}_pgd_auc_plus_gain_high": gain["ci_high"],
    }


# the columns of `curves` that only the random draws fill: their std and range over draws
SPREAD = ("accuracy_std", "accuracy_low", "accuracy_high")


def curves(summary: dict, epsilons: list[float], labels: list[str]) -> pd.DataFrame:
    """The long table (variant, attack, epsilon, epsilon_label, accuracy, accuracy_std,
    accuracy_low, accuracy_high) of every robustness curve in a summary; accuracy_std is the std
    over random draws, accuracy_low and accuracy_high their lowest and highest accuracy (NaN for
    the other variants, and the std for one draw)."""
    rows = []
    for variant, result in summary["variants"].items():
        for attack in ATTACKS:
            spread = {column: result[attack].get(column, {}) for column in SPREAD}
            for eps, label in zip(epsilons, labels, strict=True):
                row = {
                    "variant": variant,
                    "attack": attack,
                    "epsilon": eps,
                    "epsilon_label": label,
                    "accuracy": result[attack]["accuracy"][label],
                }
                for column, values in spread.items():
                    value = values.get(label)
                    row[column] = float("nan") if value is None else value
                rows.append(row)
    return pd.DataFrame(rows)


def wide_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The long table of `curves` as one row per epsilon with a column `<attack>_<variant>` per
    curve (and `<attack>_random_std`, `_low`, `_high`: the draws' std and range), the layout
    `dvc plots` draws as one line per column."""
    table = frame[["epsilon", "epsilon_label"]].drop_duplicates().reset_index(drop=True)
    for attack in ATTACKS:
        for variant in frame["variant"].unique():
            rows = frame[(frame["attack"] == attack) & (frame["variant"] == variant)]
            table[f"{attack}_{variant}"] = rows["accuracy"].to_numpy()
            for column in SPREAD:
                if column in rows and rows[column].notna().any():
                    suffix = column.removeprefix("accuracy_")
                    table[f"{attack}_{variant}_{suffix}"] = rows[column].to_numpy()
    return table
