"""The baseline stage: the original network attacked on the test split (method.md section 6),
once, so that an experiment that changes only the hardening attacks only the variants.

The attacks are the evaluate stage's (`robustness`: FGSM from the attack stage's sweep, the
primary's attack, "PGD", from the common seeded starts) and the original's side of the masking
check (`masking`): on the check's images, at every epsilon of E+, PGD, APGD-CE and APGD-DLR.
PGD's accuracy there chooses the middle epsilon; the per-image results there and at the largest
are the check's; PGD's and AutoAttack's accuracies at every epsilon are the calibration of the
primary's attack (`robustness.calibration_table`, in evaluate.json). The evaluate stage reads
them from the record (records.OriginalAttacks) and checks that they were made with its
settings.

Each epsilon of E+ (its PGD on the PGD images and its masking outcome, each from starts seeded
afresh) is a unit of `workers.run_units`, so params.yaml's `workers` runs them side by side and
changes no byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ..attacks.masking import middle_epsilon
from ..attacks.robustness import (
    Settings,
    attack_original,
    load_source,
    masking_images,
    original_at,
)
from ..network.models import load_trained
from ..running.workers import run_units
from ..stats.measures import Curve
from ..storage import io, paths
from ..storage.records import FGSMSweep, OriginalAttacks

# Settings: how a network is attacked on the test split (`robustness.Settings`: the run's attack,
# evaluate's images, samples, pgd and autoattack, seed, batch_size), evaluate's too.
__all__ = ["Settings", "load", "run", "write"]


class Inputs(NamedTuple):
    model: nn.Module  # f, the original
    source: FGSMSweep  # the attack stage's FGSM sweep of the test split
    test: dict  # the prepared test split


def load(ctx, settings: Settings) -> Inputs:
    test = io.load_split(paths.prepared(ctx.name, "test"))
    model, _ = load_trained(ctx.name, ctx.run)
    source = load_source(paths.sweep_record(ctx.name), test, settings)
    return Inputs(model, source, test)


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> OriginalAttacks:
    """The original network attacked on the prepared test split; `source`, its FGSM sweep of
    that split (the attack stage's). On the masking check's images, every epsilon of E+ is
    attacked by PGD and AutoAttack (the calibration); the check's epsilons: the one where its PGD
    accuracy there is nearest 0.5, and the largest. Each epsilon of E+ is a unit
    (`robustness.original_at`: its PGD row and its masking outcome), run in `settings.workers`
    processes; `progress(label)` as each is done."""
    model, source, test = inputs
    images, labels = test["images"], test["labels"]
    model.to(settings.device)
    units = {label: (model, images, labels, settings, eps)
             for eps, label in zip(settings.epsilons, settings.epsilon_labels, strict=True)
             if eps > 0}  # fmt: skip
    done = run_units(original_at, units, settings.workers, settings.device, progress)
    positive = [eps for eps in settings.epsilons if eps > 0]
    at = dict(zip(positive, done.values(), strict=True))  # eps: (PGD row, masking outcome)
    curves = attack_original(
        model, source, images, labels, settings, {eps: row for eps, (row, _) in at.items()}
    )
    accuracy, autoattack, checked, outcomes = [], [], [], []
    if masking_images(settings, len(images)) > 0:
        every = {eps: outcome for eps, (_, outcome) in at.items()}
        clean = next(iter(every.values())).clean

        def curve(name: str) -> list[float]:
            rows = [clean if eps == 0 else getattr(every[eps], name) for eps in settings.epsilons]
            return Curve(clean, torch.stack(rows)).accuracy()

        accuracy, autoattack = curve("pgd"), curve("worst")
        middle = settings.epsilons[middle_epsilon(settings.epsilons, accuracy)]
        checked = sorted({middle, settings.epsilons[-1]})
        outcomes = [every[eps] for eps in checked]
    n = len(outcomes[0].clean) if outcomes else 0

    def rows(name: str) -> torch.Tensor:
        if not outcomes:
            return torch.zeros(0, 0, dtype=torch.bool)
        return torch.stack([getattr(o, name) for o in outcomes])

    return OriginalAttacks(
        **settings.made_with(),
        fgsm_clean=curves["fgsm"].clean,
        fgsm_attacked=curves["fgsm"].attacked,
        pgd_clean=curves["pgd"].clean,
        pgd_attacked=curves["pgd"].attacked,
        masking_pgd_accuracy=accuracy,
        masking_autoattack_accuracy=autoattack,
        masking_epsilons=checked,
        masking_clean=outcomes[0].clean if outcomes else torch.zeros(n, dtype=torch.bool),
        masking_pgd=rows("pgd"),
        masking_apgd_ce=rows("apgd_ce"),
        masking_apgd_dlr=rows("apgd_dlr"),
    )


def write(ctx, outputs: OriginalAttacks) -> None:
    """data/baseline/<run>/original.pt."""
    outputs.save(paths.original_attacks_record(ctx.name))
