"""Evaluating the hardening with controls, as method.md section 6 defines it.

Variants are gates over the original model, each folded into a copy of its weights
(`gates.fold`), so every variant is an ordinary model of the same architecture, as the hardened
checkpoint is; a forward hook would cost an extra pass over the layer's output, about a tenth of
this stage's time. `original` (g = 1: the weights unchanged bit for bit), `hardened` (the gains),
`random` (the same gains given to randomly drawn neuron sets of the same sizes: each draw is a
random permutation of the hardening gain vector over the neurons, which never looks at fragility
or labels) and `inverse` (roles swapped). Every variant is attacked white-box:
- FGSM at every epsilon in E on the whole test split (eps = 0 is the clean accuracy); the
  original's is the attack stage's sweep (the same model, images and batches), not recomputed;
- PGD-Linf at every epsilon in E+ on the first `samples` test images, `steps` steps of eps / 4
  from a random start drawn from a generator seeded with `seed` afresh for every variant, so all
  variants start from the same points (eps = 0 is the clean accuracy on those images);
- FGSM transferred from the original model: the original's gradient signs applied to the variant.
The area under an accuracy-epsilon curve is the trapezoid over E divided by the epsilon range.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
from torch import nn

from .attacks import gradient_signs, pgd
from .gates import fold, gated
from .inference import accuracy_and_loss, as_input, logits_of
from .layers import ScanLayer
from .robustness import FGSMSweep, fgsm_sweep

ATTACKS = ("fgsm", "pgd", "transfer")


@dataclass(frozen=True)
class Setup:
    """How every variant is attacked."""

    epsilons: list[float]  # E, increasing, in pixel units
    batch_size: int
    device: torch.device
    label_mode: str  # "true" | "predicted"
    pgd_steps: int
    pgd_samples: int  # the first `pgd_samples` test images are attacked with PGD
    seed: int  # seeds PGD's random start, the same for every variant


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


def random_gains(gains: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
    """`draws` x N random controls: each row is `gains` permuted by torch.randperm(N), i.e. the
    same multiset of gains given to neuron sets drawn at random (never by score or label)."""
    if gains.dim() != 1:
        raise ValueError(f"gains must be a vector, got shape {tuple(gains.shape)}")
    if draws < 1:
        raise ValueError(f"draws = {draws!r}; expected an integer >= 1")
    n = len(gains)
    return torch.stack([gains[torch.randperm(n, generator=generator)] for _ in range(draws)])


def variants(
    gains: torch.Tensor, inverse_gains: torch.Tensor, draws: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The gates of every variant: original, hardened, random_0 .. random_{draws-1}, inverse."""
    if inverse_gains.shape != gains.shape:
        raise ValueError("gains and inverse gains must have the same shape")
    controls = random_gains(gains, draws, generator)
    return {
        "original": torch.ones_like(gains),
        "hardened": gains,
        **{f"random_{i}": g for i, g in enumerate(controls)},
        "inverse": inverse_gains,
    }


def attack_model(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    setup: Setup,
    transfer_signs: torch.Tensor | None = None,
    own: FGSMSweep | None = None,
) -> tuple[dict, torch.Tensor]:
    """Attack one model: clean accuracy, and the accuracy at every epsilon in E under FGSM
    (white-box, the attack stage's `fgsm_sweep`), PGD (white-box, first `pgd_samples` images)
    and FGSM with `transfer_signs` (None: the model is the source itself, so the transfer equals
    its white-box FGSM). `own`: the model's white-box sweep when already computed.
    Returns ({"clean": acc, "fgsm": [...], "pgd": [...], "transfer": [...]}, the model's signs).
    """
    sweep = partial(
        fgsm_sweep, model, images, labels, setup.epsilons,
        batch_size=setup.batch_size, device=setup.device, label_mode=setup.label_mode,
    )  # fmt: skip
    if own is None:
        own = sweep()
    else:
        check_sweep(own, images, setup)
    transfer = own if transfer_signs is None else sweep(
        signs=transfer_signs, clean_logits=own.clean_logits
    )  # fmt: skip
    n = min(setup.pgd_samples, len(images))
    clean_subset = accuracy_and_loss(own.clean_logits[:n], labels[:n])[0]

    def pgd_accuracy(eps: float) -> float:
        if eps == 0:
            return clean_subset
        adv = pgd(
            model,
            images[:n],
            labels[:n],
            eps,
            steps=setup.pgd_steps,
            batch_size=setup.batch_size,
            device=setup.device,
            generator=torch.Generator().manual_seed(setup.seed),
            label_mode=setup.label_mode,
        )
        logits = logits_of(model, adv, setup.batch_size, setup.device)
        return accuracy_and_loss(logits, labels[:n])[0]

    result = {
        "clean": own.clean_accuracy,
        "fgsm": own.accuracy,
        "pgd": [pgd_accuracy(eps) for eps in setup.epsilons],
        "transfer": transfer.accuracy,
    }
    return result, own.signs


def check_sweep(sweep: FGSMSweep, images: torch.Tensor, setup: Setup) -> None:
    """A precomputed sweep must be of these images, at these epsilons."""
    if sweep.signs.shape != images.shape or list(sweep.epsilons) != list(setup.epsilons):
        raise ValueError(
            f"the FGSM sweep has signs of shape {tuple(sweep.signs.shape)} at epsilons "
            f"{sweep.epsilons}, not {tuple(images.shape)} at {setup.epsilons}"
        )


def attack_variants(
    model: nn.Module,
    layer: ScanLayer,
    gates: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    setup: Setup,
    progress: Callable[[str], None] | None = None,
    source: FGSMSweep | None = None,
) -> dict[str, dict]:
    """attack_model for `model` with each of `gates` folded into its weights, white-box, with FGSM
    transferred from the ungated model. `source`: the ungated model's FGSM sweep of these images
    when already computed (the attack stage's); otherwise a gate of all ones (the original) is
    attacked first and its own sweep is the source. The source's signs are the transfer signs,
    and the source is the white-box FGSM of a gate of all ones, so neither is computed twice."""
    first = next((name for name, g in gates.items() if bool((g == 1).all())), None)
    signs = None if source is None else source.signs
    if signs is None and first is None:
        signs = gradient_signs(
            model, images, labels,
            batch_size=setup.batch_size, device=setup.device, label_mode=setup.label_mode,
        )  # fmt: skip
    order = ([first] if first is not None else []) + [name for name in gates if name != first]
    out = {}
    for name in order:
        variant = fold(model, layer, gates[name])
        if name == first:  # the source itself: its transfer attack is its white-box FGSM
            out[name], signs = attack_model(variant, images, labels, setup, own=source)
        else:
            out[name], _ = attack_model(variant, images, labels, setup, transfer_signs=signs)
        if progress is not None:
            progress(name)
    return {name: out[name] for name in gates}


def folded_difference(
    folded: nn.Module,
    model: nn.Module,
    layer: ScanLayer,
    gains: torch.Tensor,
    images: torch.Tensor,
    setup: Setup,
) -> float:
    """Largest |logit difference| between a folded model and `model` gated by `gains`, relative
    to the largest |logit| (a few 1e-7 when the checkpoint holds exactly those gains)."""
    x = as_input(images, torch.device("cpu"))
    with gated(model, layer, gains):
        reference = logits_of(model, x, setup.batch_size, setup.device)
    diff = (logits_of(folded, x, setup.batch_size, setup.device) - reference).abs().max()
    return float(diff / reference.abs().max().clamp_min(1e-12))


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None  # undefined for one draw


def summarize(
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


def curves(summary: dict, epsilons: list[float], labels: list[str]) -> list[dict]:
    """Long table rows (variant, attack, epsilon, epsilon_label, accuracy, accuracy_std) of every
    robustness curve in a summary; accuracy_std is the std over random draws (NaN otherwise)."""
    rows = []
    for variant, result in summary["variants"].items():
        for attack in ATTACKS:
            std = result[attack].get("accuracy_std", {})
            nan = float("nan")
            for eps, label in zip(epsilons, labels, strict=True):
                rows.append({
                    "variant": variant, "attack": attack, "epsilon": eps, "epsilon_label": label,
                    "accuracy": result[attack]["accuracy"][label],
                    "accuracy_std": nan if std.get(label) is None else std[label],
                })  # fmt: skip
    return rows


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
