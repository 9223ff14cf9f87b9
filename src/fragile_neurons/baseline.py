"""The baseline stage: the original network attacked on the test split (method.md section 6),
once, so that an experiment that changes only the hardening attacks only the variants.

The attacks are the evaluate stage's (`robustness`: FGSM from the attack stage's sweep, PGD from
the common seeded starts) and the original's side of the masking check (`masking`: PGD, APGD-CE
and APGD-DLR on the check's images at the largest epsilon). The evaluate stage reads them from
the record (records.OriginalAttacks) and checks that they were made with its settings.
"""

from __future__ import annotations

import torch
from torch import nn

from .records import FGSMSweep, OriginalAttacks
from .robustness import Settings, attack_original, masking_outcome


def run(model: nn.Module, source: FGSMSweep, test: dict, settings: Settings) -> OriginalAttacks:
    """The original `model` attacked on the prepared `test` split; `source`, its FGSM sweep of
    that split (the attack stage's)."""
    images, labels = test["images"], test["labels"]
    model.to(settings.device)
    curves = attack_original(model, source, images, labels, settings)
    outcome = masking_outcome(model, images, labels, settings)
    none = torch.zeros(0, dtype=torch.bool)
    return OriginalAttacks(
        **settings.made_with(),
        fgsm_clean=curves["fgsm"].clean,
        fgsm_attacked=curves["fgsm"].attacked,
        pgd_clean=curves["pgd"].clean,
        pgd_attacked=curves["pgd"].attacked,
        masking_clean=none if outcome is None else outcome.clean,
        masking_pgd=none if outcome is None else outcome.pgd,
        masking_apgd_ce=none if outcome is None else outcome.apgd_ce,
        masking_apgd_dlr=none if outcome is None else outcome.apgd_dlr,
    )
