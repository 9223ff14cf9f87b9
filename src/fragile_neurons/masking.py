"""The evaluate stage's check for gradient masking: AutoAttack's APGD against PGD.

A network can look robust under PGD only because its gradients mislead PGD (gradient masking,
e.g. a saturated softmax whose cross-entropy gradient vanishes); then a stronger attack finds the
adversarial images PGD missed. The check attacks the `original` and the `hardened` network at the
largest epsilon of the run's grid, eps_max, on the AutoAttack images: the first
`evaluate.autoattack.images` images of the prepared test split, which `prepare` put in a seeded
random order, so they are a seeded random subset of the split, the same images for both networks
(paired). PGD's images are the first `evaluate.samples`, so one set contains the other.

Each network, on those images, at eps_max:
- APGD-CE and APGD-DLR (Croce and Hein, ICML 2020; the two white-box attacks of AutoAttack's
  standard version without the targeted ones), as torchattacks.APGD implements them: L-inf,
  `evaluate.autoattack.steps` iterations, one restart, seed `seed`, on the true labels. torchattacks
  draws each batch's start (of `batch_size` images) from the global generator seeded with `seed`;
  the global generator's state is restored afterwards, so nothing else the stage draws changes;
- PGD as the evaluate stage runs it (`evaluate.pgd.steps`, step eps/4, the run's labels, the same
  seeded random start), on these same images.
An image is robust under AutoAttack (`worst`) when the network classifies it correctly after
APGD-CE and after APGD-DLR: the per-image worst case, as AutoAttack reports robust accuracy. A
network's gap is its PGD accuracy minus its AutoAttack accuracy on these images. The hardened
network is flagged as masking when its gap exceeds the original's, counted in images (no
rounding): masking = (pgd_hardened - worst_hardened) > (pgd_original - worst_original).

torchattacks is not a dependency of the package (its pin of `requests` conflicts with DVC's);
`make setup` installs it without its dependencies. It is imported only when the check is on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .adversarial import _frozen, pgd_correct
from .errors import ParamError
from .inference import as_input, batch_slices, logits_of

if TYPE_CHECKING:
    from .evaluate import Settings

LOSSES = ("ce", "dlr")  # APGD's losses, in the order they run
NETWORKS = ("original", "hardened")  # the networks the check attacks
INSTALL = "pip install --no-deps 'torchattacks>=3.5'"
HEADLINE = ("masking", "masking_testable", "masking_gap_original", "masking_gap_hardened")
FLAGS = HEADLINE[:2]  # of these, the ones in evaluate's headline (headline.py); all in its details


def require_torchattacks(images: int):
    """torchattacks when the check is on (`images` > 0), None when it is off, when nothing
    imports it. Missing, it is a ParamError naming evaluate.autoattack.images, before any work."""
    if images == 0:
        return None
    try:
        import torchattacks
    except ImportError as err:
        cause = " ".join(str(err).split())
        allowed = (
            f"0 (the AutoAttack check off), or torchattacks installed as `make setup` installs "
            f"it ({INSTALL}; the import failed: {cause})"
        )
        raise ParamError("evaluate.autoattack.images", images, allowed) from None
    return torchattacks


def apgd_correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    loss: str,
    steps: int,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Per image (bool, on the CPU): whether `model` classifies it as `labels` says after
    torchattacks.APGD(norm="Linf", eps, steps, n_restarts=1, seed, loss) on the true labels,
    batch by batch. The global torch generator (which APGD reseeds) is left as it was."""
    import torchattacks  # evaluate checked that it is there (require_torchattacks)

    model.eval().to(device)
    attack = torchattacks.APGD(
        model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss=loss
    )
    attack.set_device(device)
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    correct = []
    with torch.random.fork_rng(devices=cuda), _frozen(model):
        for s in batch_slices(len(images), batch_size):
            x, y = as_input(images[s], device), labels[s].to(device)
            adversarial = attack(x, y)
            with torch.no_grad():
                correct.append((model(adversarial).argmax(1) == y).cpu())
    return torch.cat(correct)


@dataclass(frozen=True)
class Outcome:
    """One network on the AutoAttack images: per image (bool vectors), classified correctly on
    the clean image, after PGD, after APGD-CE and after APGD-DLR."""

    clean: torch.Tensor
    pgd: torch.Tensor
    apgd_ce: torch.Tensor
    apgd_dlr: torch.Tensor

    @property
    def worst(self) -> torch.Tensor:
        """Robust under AutoAttack: correct after both APGD attacks."""
        return self.apgd_ce & self.apgd_dlr

    @property
    def gap(self) -> int:
        """Images PGD leaves correct minus images AutoAttack leaves correct."""
        return int(self.pgd.sum()) - int(self.worst.sum())

    def accuracies(self) -> dict[str, float]:
        n = len(self.clean)
        counts = {
            "clean": self.clean,
            "pgd": self.pgd,
            "apgd_ce": self.apgd_ce,
            "apgd_dlr": self.apgd_dlr,
            "worst": self.worst,
        }
        out = {name: int(correct.sum()) / n for name, correct in counts.items()}
        return {**out, "pgd_minus_worst": self.gap / n}


def is_masking(original: Outcome, hardened: Outcome) -> bool:
    """The hardened network's PGD accuracy exceeds its AutoAttack accuracy by more than the
    original's does, on the same images (compared in images, so without rounding)."""
    if len(original.clean) != len(hardened.clean):
        raise ValueError("the original and the hardened network must be checked on one set")
    return hardened.gap > original.gap


def outcome(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: Settings
) -> Outcome:
    """`model` on `images` at eps_max: clean, PGD (as evaluate runs it), APGD-CE, APGD-DLR."""
    eps, device, batch_size = settings.epsilons[-1], settings.device, settings.batch_size
    model.eval().to(device)
    clean = logits_of(model, images, batch_size, device).argmax(1) == labels
    after_pgd = pgd_correct(
        model,
        images,
        labels,
        eps,
        steps=settings.pgd_steps,
        seed=settings.seed,
        batch_size=batch_size,
        device=device,
        label_mode=settings.label_mode,
    )
    apgd = {
        loss: apgd_correct(
            model,
            images,
            labels,
            eps,
            loss=loss,
            steps=settings.autoattack_steps,
            seed=settings.seed,
            batch_size=batch_size,
            device=device,
        )
        for loss in LOSSES
    }
    return Outcome(clean=clean, pgd=after_pgd, apgd_ce=apgd["ce"], apgd_dlr=apgd["dlr"])


def check(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict | None, dict]:
    """The masking check of `models["original"]` and `models["hardened"]` on the first
    `settings.autoattack_images` of `images`: (the `autoattack` block of evaluate.json, the
    headline's masking entries). With the check off (0 images), (None, the entries as None).
    `masking_testable` says whether the flag could have been raised at all: at an epsilon where
    PGD already leaves no image correct on either network it cannot, and the flag is vacuous."""
    n = min(settings.autoattack_images, len(images))
    if n == 0:
        return None, dict.fromkeys(HEADLINE)
    outcomes = {}
    for name in NETWORKS:
        outcomes[name] = outcome(models[name], images[:n], labels[:n], settings)
        if progress is not None:
            progress(f"autoattack {name}")
    original, hardened = outcomes["original"], outcomes["hardened"]
    block = {
        "epsilon": settings.epsilon_labels[-1],
        "images": n,
        "steps": settings.autoattack_steps,
        "restarts": 1,
        "pgd_steps": settings.pgd_steps,
        **{name: outcomes[name].accuracies() for name in NETWORKS},
    }
    headline = {
        "masking": is_masking(original, hardened),
        # false when PGD leaves no image correct on either network: neither gap can then be
        # positive, so `masking` is false by construction, not by measurement
        "masking_testable": bool(original.pgd.any() or hardened.pgd.any()),
        "masking_gap_original": original.gap / n,
        "masking_gap_hardened": hardened.gap / n,
    }
    return block, headline
