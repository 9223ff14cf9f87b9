"""The evaluate stage: the hardening with controls, as method.md section 6 defines it.

The variants: `original` (the trained model), `hardened` (models/<run>/hardened.pt, as the harden
stage wrote it), `random` (`evaluate.random_controls` draws, each the hardening's rule applied to
random disjoint neuron sets of the sizes of F and R, which never looks at fragility or labels:
see `random_gains`) and `inverse` (roles swapped). The controls are built from the
gains record at full precision, folded into a copy of the original's weights (`gates.fold`), so
every variant is an ordinary model of the same architecture, as the hardened checkpoint is.
Every variant is attacked white-box:
- FGSM at every epsilon in E on the whole test split (eps = 0 is the clean accuracy); the
  original's is the attack stage's sweep (the same model, images and batches), not recomputed;
- PGD-Linf at every epsilon in E+ on the first `samples` test images, `steps` steps of eps / 4
  from a random start drawn from a generator seeded with `seed` afresh for every variant, so all
  variants start from the same points (eps = 0 is the clean accuracy on those images);
- FGSM transferred from the original model: the original's gradient signs applied to the variant.
The area under an accuracy-epsilon curve is the trapezoid over E divided by the epsilon range.

The check for gradient masking (`masking`, README "AutoAttack: the masking check"): at the largest
epsilon of E, on the first `autoattack.images` test images (0: off; a seeded random subset, as the
prepared split's order is seeded; PGD's curve images are the first `samples`, so one set contains
the other), the original and the hardened network are attacked by AutoAttack's APGD-CE and
APGD-DLR (`autoattack.steps` iterations, one restart, seed `seed`, true labels) and by PGD as
above, all on those same images. An image is robust under AutoAttack when the network classifies
it correctly after both APGD attacks. The hardened network is flagged as masking (headline
`masking`) when its PGD accuracy exceeds its AutoAttack accuracy by more than the original's does,
counted in images: (PGD - AutoAttack)(hardened) > (PGD - AutoAttack)(original).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import harden, masking
from .adversarial import fgsm_sweep, pgd
from .config import ATTACKS, fgsm_settings
from .errors import DataError
from .gates import fold, gated
from .inference import accuracy_and_loss, as_input, logits_of
from .io import rerun_advice
from .models import load_checkpoint
from .records import FGSMSweep, Gains, ScanLayer

FOLD_TOLERANCE = 1e-4  # relative logit difference allowed between hardened.pt and the gains


@dataclass(frozen=True)
class Settings:
    """What the evaluate stage reads of params.yaml (dvc.yaml: seed, batch_size, the run's
    attack, evaluate), and where it runs: how every variant is attacked."""

    epsilons: list[float]  # E, increasing, in pixel units
    epsilon_labels: list[str]  # their names in metrics and plots
    batch_size: int
    device: torch.device
    label_mode: str  # "true" | "predicted"
    pgd_steps: int
    pgd_samples: int  # the first `pgd_samples` test images are attacked with PGD
    random_controls: int  # random neuron sets hardened by the same rule
    seed: int  # seeds PGD's random start, the same for every variant, and APGD's
    autoattack_images: int  # the first images checked for masking by APGD; 0: no check
    autoattack_steps: int  # APGD iterations per loss

    @classmethod
    def from_params(cls, params: dict, name: str, device: torch.device) -> Settings:
        """The settings; with the masking check on and torchattacks missing, a ParamError
        before any work."""
        cfg = params["evaluate"]
        masking.require_torchattacks(cfg["autoattack"]["images"])
        return cls(
            **fgsm_settings(params, name),
            device=device,
            pgd_steps=cfg["pgd"]["steps"],
            pgd_samples=cfg["samples"],
            random_controls=cfg["random_controls"],
            seed=params["seed"],
            autoattack_images=cfg["autoattack"]["images"],
            autoattack_steps=cfg["autoattack"]["steps"],
        )


def load_source(path: str | Path, test: dict, settings: Settings) -> FGSMSweep:
    """The attack stage's FGSM sweep of the original (records.FGSMSweep): it must be of the
    `test` split's images, at these epsilons, with these labels and batch size; else DataError."""
    return FGSMSweep.load(
        path,
        images=test["images"],
        epsilons=settings.epsilons,
        label_mode=settings.label_mode,
        batch_size=settings.batch_size,
    )


def load_hardened(
    path: str | Path,
    arch: str,
    model: nn.Module,
    layer: ScanLayer,
    gains: Gains,
    test: dict,
    settings: Settings,
) -> tuple[nn.Module, float]:
    """The hardened checkpoint (an `arch` network) and its relative logit difference from
    `model` gated by the gains record's gains, on the PGD images (a few 1e-7 when it holds
    exactly those gains). One that does not hold them is a DataError: it is not the harden
    stage's output for these gains. Both networks are moved to `settings.device`, where every
    variant is attacked."""
    hardened, _ = load_checkpoint(path, arch=arch)
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


def auc(epsilons, accuracies) -> float:
    """Area under the accuracy-epsilon curve: the trapezoid over E divided by max E - min E (the
    mean accuracy over the range); a single epsilon gives its accuracy."""
    eps = np.asarray(epsilons, dtype=np.float64)
    acc = np.asarray(accuracies, dtype=np.float64)
    if eps.ndim != 1 or eps.shape != acc.shape or len(eps) == 0:
        raise ValueError("epsilons and accuracies must be non-empty vectors of one length")
    if (np.diff(eps) <= 0).any():
        raise ValueError("epsilons must be strictly increasing")
    if len(eps) == 1:
        return float(acc[0])
    return float(np.trapezoid(acc, eps) / (eps[-1] - eps[0]))


def random_gains(gains: Gains, draws: int, generator: torch.Generator) -> torch.Tensor:
    """`draws` x N random controls (method.md section 6): each draw takes disjoint random neuron
    sets F' and R' of the sizes of F and R and applies the hardening's rule to them
    (`harden.gains`): R' compressed by c, the freed magnitude given to F' with the hardened
    network's fragile weights w in random order, the same cap. Total magnitude is conserved as
    for the hardened network; nothing is chosen by score or label."""
    n, n_fragile, n_robust = len(gains.gain), len(gains.fragile), len(gains.robust)
    m, phi_fragile = gains.magnitude.numpy(), gains.phi[gains.fragile]
    rows = []
    for _ in range(draws):
        chosen = torch.randperm(n, generator=generator)
        fragile, robust = chosen[:n_fragile], chosen[n_fragile : n_fragile + n_robust]
        phi = torch.zeros(n, dtype=torch.float64)  # the weights follow F's phi, in random order
        phi[fragile] = phi_fragile[torch.randperm(n_fragile, generator=generator)]
        rule = {"compress": gains.compress, "mode": gains.mode, "max_gain": gains.max_gain}
        drawn = harden.gains(m, phi.numpy(), fragile.numpy(), robust.numpy(), **rule)
        rows.append(torch.from_numpy(drawn.gains))
    return torch.stack(rows)


def variants(gains: Gains, draws: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The gates of every variant: original, hardened, random_0 .. random_{draws-1}, inverse."""
    controls = random_gains(gains, draws, generator)
    return {
        "original": torch.ones_like(gains.gain),
        "hardened": gains.gain,
        **{f"random_{i}": g for i, g in enumerate(controls)},
        "inverse": gains.inverse_gain,
    }


def pgd_accuracies(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_logits: torch.Tensor,
    settings: Settings,
) -> list[float]:
    """White-box PGD accuracy at every epsilon of E on the first `pgd_samples` images, from the
    same random start for every model; at eps = 0 the clean accuracy (from `clean_logits`)."""
    n = min(settings.pgd_samples, len(images))
    accuracies = []
    for eps in settings.epsilons:
        if eps == 0:
            accuracies.append(accuracy_and_loss(clean_logits[:n], labels[:n])[0])
            continue
        adversarial = pgd(
            model,
            images[:n],
            labels[:n],
            eps,
            steps=settings.pgd_steps,
            batch_size=settings.batch_size,
            device=settings.device,
            generator=torch.Generator().manual_seed(settings.seed),
            label_mode=settings.label_mode,
        )
        logits = logits_of(model, adversarial, settings.batch_size, settings.device)
        accuracies.append(accuracy_and_loss(logits, labels[:n])[0])
    return accuracies


def attack_variants(
    models: dict[str, nn.Module],
    source: FGSMSweep,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Every variant attacked white-box by FGSM and PGD, and by FGSM transferred from the
    original: {"clean": acc, "fgsm": [...], "pgd": [...], "transfer": [...]} per variant.

    `source`: the white-box FGSM sweep of `models["original"]` on these images (the attack
    stage's): the original's FGSM, and the signs transferred to every other variant."""
    results = {}
    for name, model in models.items():
        if name == "original":
            white_box = transferred = source
        else:
            sweep = partial(
                fgsm_sweep,
                model,
                images,
                labels,
                settings.epsilons,
                batch_size=settings.batch_size,
                device=settings.device,
                label_mode=settings.label_mode,
            )
            white_box = sweep()
            transferred = sweep(signs=source.signs, clean_logits=white_box.clean_logits)
        results[name] = {
            "clean": white_box.clean_accuracy,
            "fgsm": white_box.accuracy,
            "pgd": pgd_accuracies(model, images, labels, white_box.clean_logits, settings),
            "transfer": transferred.accuracy,
        }
        if progress is not None:
            progress(name)
    return results


def run(
    model: nn.Module,
    hardened: nn.Module,
    layer: ScanLayer,
    gains: Gains,
    source: FGSMSweep,
    test: dict,
    settings: Settings,
    generator: torch.Generator,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """The evaluate stage: every variant attacked (`attack_variants`), summarised for
    evaluate.json with the masking check of the original and the hardened network
    (`masking.check`), and the robustness curves (`curves`). `generator` draws the random
    controls."""
    gates = variants(gains, settings.random_controls, generator)
    given = {"original": model, "hardened": hardened}  # the controls: gates folded into a copy
    models = {
        name: given[name] if name in given else fold(model, layer, gate)
        for name, gate in gates.items()
    }
    images, labels = test["images"], test["labels"]
    results = attack_variants(models, source, images, labels, settings, progress)
    autoattack, flag = masking.check(models, images, labels, settings, progress)
    magnitude = gains.magnitude.numpy()
    summary = summarise(results, settings.epsilons, settings.epsilon_labels, magnitude, gates)
    summary = {
        **summary,
        "headline": {**summary["headline"], **flag},
        "autoattack": autoattack,
        "epsilons": settings.epsilon_labels,
        "labels": settings.label_mode,
        "samples": {
            "fgsm": len(images),
            "transfer": len(images),
            "pgd": min(settings.pgd_samples, len(images)),
        },
        "pgd_steps": settings.pgd_steps,
        "random_controls": settings.random_controls,
    }
    return summary, curves(summary, settings.epsilons, settings.epsilon_labels)


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None  # undefined for one draw


def summarise(
    results: dict[str, dict],
    epsilons: list[float],
    labels: list[str],
    magnitude: np.ndarray | None = None,
    gates: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Accuracies per epsilon label and AUC for every variant and attack; the random draws
    (names `random_<i>`) pooled as mean, std (sample std over draws; None for one draw) and the
    list of draws. The hardening gain is hardened minus original AUC per attack, and its margin
    over the random control is hardened minus the random mean (with the draws' std and how many
    draws the hardened AUC beats). With `magnitude` and `gates`, each variant's total output
    magnitude ratio sum g m / sum m is reported too."""
    draws = [name for name in results if name.startswith("random_")]
    if not draws or not {"original", "hardened", "inverse"} <= set(results):
        raise ValueError("results must hold original, hardened, inverse and random_<i> variants")

    def one(name: str) -> dict:
        r = results[name]
        out = {"clean_accuracy": r["clean"]}
        for attack in ATTACKS:
            out[attack] = {
                "accuracy": dict(zip(labels, r[attack], strict=True)),
                "auc": auc(epsilons, r[attack]),
            }
        if magnitude is not None and gates is not None:
            out["magnitude_ratio"] = float(
                (gates[name].double().numpy() * magnitude).sum() / magnitude.sum()
            )
        return out

    single = {name: one(name) for name in ("original", "hardened", "inverse")}
    per_draw = [one(name) for name in draws]
    random = {
        "draws": len(draws),
        "clean_accuracy": statistics.mean(d["clean_accuracy"] for d in per_draw),
    }
    for attack in ATTACKS:
        aucs = [d[attack]["auc"] for d in per_draw]
        random[attack] = {
            "accuracy": {
                e: statistics.mean(d[attack]["accuracy"][e] for d in per_draw) for e in labels
            },
            "accuracy_std": {e: _std([d[attack]["accuracy"][e] for d in per_draw]) for e in labels},
            "auc": statistics.mean(aucs),
            "auc_std": _std(aucs),
            "auc_draws": aucs,
        }
    if "magnitude_ratio" in per_draw[0]:
        ratios = [d["magnitude_ratio"] for d in per_draw]
        random["magnitude_ratio"] = statistics.mean(ratios)
        random["magnitude_ratio_draws"] = ratios

    hardened, original, inverse = single["hardened"], single["original"], single["inverse"]
    gain = {a: hardened[a]["auc"] - original[a]["auc"] for a in ATTACKS}
    margin = {
        a: {
            "mean": hardened[a]["auc"] - random[a]["auc"],
            "std": random[a]["auc_std"],
            "hardened_beats": sum(hardened[a]["auc"] > x for x in random[a]["auc_draws"]),
            "draws": len(draws),
            # permutation p-value of "hardening beats random": (1 + #{draws >= hardened}) /
            # (1 + #draws); its smallest value is 1 / (1 + #draws)
            "p_value": (1 + sum(x >= hardened[a]["auc"] for x in random[a]["auc_draws"]))
            / (1 + len(draws)),
        }
        for a in ATTACKS
    }
    return {
        "headline": {
            "clean_accuracy_change": hardened["clean_accuracy"] - original["clean_accuracy"],
            **{f"{a}_auc_gain": gain[a] for a in ATTACKS},
            **{f"{a}_margin_over_random": margin[a]["mean"] for a in ATTACKS},
        },
        "gain": gain,
        "margin_over_random": margin,
        "inverse_gain": {a: inverse[a]["auc"] - original[a]["auc"] for a in ATTACKS},
        "variants": {**single, "random": random},
    }


def curves(summary: dict, epsilons: list[float], labels: list[str]) -> pd.DataFrame:
    """The long table (variant, attack, epsilon, epsilon_label, accuracy, accuracy_std) of every
    robustness curve in a summary; accuracy_std is the std over random draws (NaN otherwise)."""
    rows = []
    for variant, result in summary["variants"].items():
        for attack in ATTACKS:
            std = result[attack].get("accuracy_std", {})
            nan = float("nan")
            for eps, label in zip(epsilons, labels, strict=True):
                rows.append(
                    {
                        "variant": variant,
                        "attack": attack,
                        "epsilon": eps,
                        "epsilon_label": label,
                        "accuracy": result[attack]["accuracy"][label],
                        "accuracy_std": nan if std.get(label) is None else std[label],
                    }
                )
    return pd.DataFrame(rows)


def wide_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The long table of `curves` as one row per epsilon with a column `<attack>_<variant>` per
    curve (and `<attack>_random_std`), the layout `dvc plots` draws as one line per column."""
    table = frame[["epsilon", "epsilon_label"]].drop_duplicates().reset_index(drop=True)
    for attack in ATTACKS:
        for variant in frame["variant"].unique():
            rows = frame[(frame["attack"] == attack) & (frame["variant"] == variant)]
            table[f"{attack}_{variant}"] = rows["accuracy"].to_numpy()
            if rows["accuracy_std"].notna().any():
                table[f"{attack}_{variant}_std"] = rows["accuracy_std"].to_numpy()
    return table
