"""The evaluate stage's check for gradient masking: AutoAttack's APGD against PGD.

A network can look robust under PGD only because its gradients mislead PGD (gradient masking,
e.g. a saturated softmax whose cross-entropy gradient vanishes); then a stronger attack finds the
adversarial images PGD missed. The check (method.md section 6) attacks the `original` and the
`hardened` network on the AutoAttack images: the first `evaluate.autoattack.images` images of the
prepared test split, which `prepare` put in a seeded random order, so they are a seeded random
subset of the split, the same images for both networks (paired). It runs at two epsilons of E+:
the one where the original's PGD accuracy on those images is nearest 0.5 (`middle_epsilon`; the
check is vacuous where PGD leaves nothing correct, as it often does at the largest), and the
largest; one check when they coincide.

Each network, on those images, at each checked epsilon:
- APGD-CE and APGD-DLR (Croce and Hein, ICML 2020; the two white-box attacks of AutoAttack's
  standard version without the targeted ones), as torchattacks.APGD implements them: L-inf,
  `evaluate.autoattack.steps` iterations, one restart, seed `seed`, on the true labels. torchattacks
  draws each batch's start (of `batch_size` images) from the global generator seeded with `seed`;
  the global generator's state is restored afterwards, so nothing else the stage draws changes;
- the primary's attack as the evaluate stage runs it (`evaluate.pgd`: its attack, steps and
  restarts, the run's labels, the same seeded random starts; "PGD" below), on these same
  images.
An image is robust under AutoAttack (`worst`) when the network classifies it correctly after
APGD-CE and after APGD-DLR: the per-image worst case, as AutoAttack reports robust accuracy. A
network's masking gap is the set of images correct under PGD but not under AutoAttack. Over the
paired images, the discordant ones are those in the hardened network's gap and not the
original's (b) and the reverse (c); the hardened network is flagged only when the exact one-sided
McNemar p-value, P(X >= b) for X ~ Binomial(b + c, 1/2), is below `ALPHA` (`compare`). Where
neither network has an image correct under PGD no gap can exist: the check is "not testable"
(flag and p-value None), never "not flagged".

torchattacks is not a dependency of the package (its pin of `requests` conflicts with DVC's);
`make setup` installs it without its dependencies. It is imported only when the check is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..network.inference import as_input, batch_slices, logits_of
from ..running.errors import ParamError
from ..stats.significance import ALPHA, mcnemar
from .adversarial import _frozen, attack_correct

LOSSES = ("ce", "dlr")  # APGD's losses, in the order they run
INSTALL = "pip install --no-deps 'torchattacks>=3.5'"
POSITIONS = ("mid", "max")  # the checked epsilons: PGD accuracy nearest 0.5, and the largest
# `masking`: flagged at a checked epsilon (None where none was testable); `masking_testable`: any
# check testable; then per position its epsilon's testable, flagged and p-value
HEADLINE = ("masking", "masking_testable") + tuple(
    f"masking_{position}_{what}" for position in POSITIONS for what in ("testable", "flagged", "p")
)
# of these, the ones in evaluate's headline (headline.py), a seed sweep's keys; all in its details
FLAGS = (*HEADLINE[:2], "masking_mid_flagged", "masking_mid_p")


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


def outcome(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    primary: dict,
    autoattack_steps: int,
    pgd: torch.Tensor | None = None,
) -> Outcome:
    """`model` on `images` at `eps`: clean, the primary's attack (`primary`: the keyword options
    of `adversarial.attack_correct`, as evaluate runs it, on the labels it names), APGD-CE and
    APGD-DLR (`autoattack_steps` iterations, true labels). `pgd`: the primary's per-image
    results at `eps` on the first images of the PGD curve, made already (the curve's starts of
    the first k images do not depend on how many follow, so its first len(images) entries are
    what the attack would give here); None: the attack runs here."""
    seed, batch_size, device = primary["seed"], primary["batch_size"], primary["device"]
    model.eval().to(device)
    clean = logits_of(model, images, batch_size, device).argmax(1) == labels
    options = {"seed": seed, "batch_size": batch_size, "device": device}
    if pgd is not None and len(pgd) >= len(images):
        after_pgd = pgd[: len(images)].cpu()
    else:
        after_pgd = attack_correct(model, images, labels, eps, **primary)
    apgd = {
        loss: apgd_correct(model, images, labels, eps, loss=loss, steps=autoattack_steps, **options)
        for loss in LOSSES
    }
    return Outcome(clean=clean, pgd=after_pgd, apgd_ce=apgd["ce"], apgd_dlr=apgd["dlr"])


def middle_epsilon(epsilons: list[float], pgd_accuracy: list[float]) -> int:
    """The index of the positive epsilon whose PGD accuracy (of the original, on the check's
    images) is nearest 0.5; the smaller epsilon on a tie. `epsilons` and `pgd_accuracy` are of
    one length; epsilon 0 is never chosen."""
    if len(epsilons) != len(pgd_accuracy):
        raise ValueError("one PGD accuracy per epsilon")
    candidates = [i for i, eps in enumerate(epsilons) if eps > 0]
    if not candidates:
        raise ValueError("no positive epsilon to check")
    return min(candidates, key=lambda i: (abs(pgd_accuracy[i] - 0.5), i))


def compare(original: Outcome, hardened: Outcome) -> dict:
    """The check at one epsilon, on the same images: whether it is testable (an image correct
    under PGD on either network), the images in the hardened network's gap only (`b`) and in the
    original's only (`c`), the one-sided McNemar p-value and the flag (p < ALPHA); p and flag
    None where it is not testable."""
    if len(original.clean) != len(hardened.clean):
        raise ValueError("the original and the hardened network must be checked on one set")
    gap = {name: o.pgd & ~o.worst for name, o in (("original", original), ("hardened", hardened))}
    b = int((gap["hardened"] & ~gap["original"]).sum())
    c = int((gap["original"] & ~gap["hardened"]).sum())
    testable = bool(original.pgd.any() or hardened.pgd.any())
    p = mcnemar(b, c, "greater") if testable else None
    return {
        "testable": testable,
        "gap_original": int(gap["original"].sum()),
        "gap_hardened": int(gap["hardened"].sum()),
        "hardened_only": b,
        "original_only": c,
        "p_value": p,
        "flagged": None if p is None else p < ALPHA,
    }


def check(
    original: list[Outcome], hardened: list[Outcome], labels: list[str], about: dict
) -> tuple[dict | None, dict]:
    """The masking check at the checked epsilons (named `labels`, the middle one first, the
    largest last; one when they coincide), from each network's outcome there: (the `autoattack`
    block of evaluate.json, `about` and per epsilon each network's accuracies and `compare`; the
    headline's masking entries). With the check off (no outcomes), (None, the entries as None)."""
    if not original:
        return None, dict.fromkeys(HEADLINE)
    if not len(original) == len(hardened) == len(labels) or len(labels) > len(POSITIONS):
        raise ValueError("one outcome of each network per checked epsilon, at most two")
    checks = []
    for label, o, h in zip(labels, original, hardened, strict=True):
        checks.append(
            {
                "epsilon": label,
                "original": o.accuracies(),
                "hardened": h.accuracies(),
                **compare(o, h),
            }
        )
    by_position = {"mid": checks[0], "max": checks[-1]}
    testable = [c for c in checks if c["testable"]]
    headline = {
        "masking": any(c["flagged"] for c in testable) if testable else None,
        "masking_testable": bool(testable),
    }
    for position in POSITIONS:
        entry = by_position[position]
        headline |= {
            f"masking_{position}_testable": entry["testable"],
            f"masking_{position}_flagged": entry["flagged"],
            f"masking_{position}_p": entry["p_value"],
        }
    return {**about, "checks": checks}, headline
