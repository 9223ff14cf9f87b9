"""Every network attacked white-box on the test split, image by image (method.md section 6): the
settings that say how, and the attacks, shared by the baseline stage (the original network) and
the evaluate stage (the variants).

- FGSM at every epsilon in E on the first `evaluate.images` test images (None: all; eps = 0 is
  the clean image); the original's is the attack stage's sweep (its gradient signs and clean
  logits, the first `images` rows; only the forward passes are made again);
- the primary's attack (records and metrics call it "pgd") at every epsilon in E+ on the first
  `evaluate.samples` test images: `evaluate.pgd.attack` "pgd" (PGD-Linf, `steps` steps of eps / 4
  from a uniform random start) or "apgd-ce" (APGD-CE, AutoAttack's step-size schedule), each of
  `evaluate.pgd.restarts` restarts from the starts of a generator seeded from `seed` afresh for
  every network and epsilon (`adversarial.restart_generator`), so all networks start from the
  same points; an image is correct only if correct under every restart. The random draws are
  attacked on the first `evaluate.random_samples` of those images (None: all of them), from the
  same starts;
- FGSM transferred from the original model: the original's signs applied to the network, on the
  FGSM images (the original's own is its white-box FGSM).

The calibration of the primary's attack (method.md section 6, "Strength of the primary's
attack"): on the masking check's images, at every epsilon of E+, the original's accuracy under the
primary's attack against AutoAttack's (APGD-CE and APGD-DLR, correct only if correct under both);
the gap is the primary's minus AutoAttack's, and the attack is calibrated where every gap is at
most CALIBRATION_GAP (`calibration_table`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..network.inference import as_input, batch_slices, logits_of
from ..running.config import fgsm_settings
from ..running.runtime import select_device
from ..running.workers import resolve, run_units
from ..stats.measures import Curve
from ..storage.records import FGSMSweep, OriginalAttacks
from . import masking
from .adversarial import attack_correct, attack_name, fgsm_images, signs_and_logits

# The primary's accuracy may exceed AutoAttack's by at most this at every epsilon of E+ on the
# baseline (method.md section 6, "Strength of the primary's attack")
CALIBRATION_GAP = 0.02


@dataclass(frozen=True)
class Settings:
    """What attacking a network on the test split reads of params.yaml (dvc.yaml: seed,
    batch_size, the run's attack, evaluate), and where it runs (device, and `workers`, resolved:
    the same bytes for any count): the baseline stage attacks the original network with these
    settings, the evaluate stage every variant."""

    epsilons: list[float]  # E, increasing, in pixel units
    epsilon_labels: list[str]  # their names in metrics and plots
    batch_size: int
    device: torch.device
    label_mode: str  # "true" | "predicted"
    pgd_steps: int
    pgd_samples: int  # the first `pgd_samples` test images are attacked with PGD
    seed: int  # seeds PGD's random start, the bootstrap's resamples, and APGD
    autoattack_images: int  # the first images checked for masking by APGD; 0: no check
    autoattack_steps: int  # APGD iterations per loss
    images: int | None = None  # FGSM and transfer on the first `images` test images; None: all
    random_samples: int | None = None  # the random draws' PGD images, the first of PGD's; None: all
    pgd_attack: str = "pgd"  # the primary's attack: "pgd" | "apgd-ce" (evaluate.pgd.attack)
    pgd_restarts: int = 1  # its restarts, the worst case over them (evaluate.pgd.restarts)
    # the processes the independent units run in (`workers.run_units`: the variants, the
    # epsilons), each at one thread; no result depends on it, so no stage declares it in dvc.yaml
    workers: int = 1

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        """The settings; with the masking check on and torchattacks missing, a ParamError
        before any work."""
        cfg = params["evaluate"]
        masking.require_torchattacks(cfg["autoattack"]["images"])
        return cls(
            **fgsm_settings(params, name),
            device=select_device(params["device"]),
            pgd_steps=cfg["pgd"]["steps"],
            pgd_attack=cfg["pgd"]["attack"],
            pgd_restarts=cfg["pgd"]["restarts"],
            pgd_samples=cfg["samples"],
            seed=params["seed"],
            autoattack_images=cfg["autoattack"]["images"],
            autoattack_steps=cfg["autoattack"]["steps"],
            images=cfg["images"],
            random_samples=cfg["random_samples"],
            workers=resolve(params["workers"]),
        )

    def made_with(self) -> dict:
        """What an attack's per-image results depend on besides the images and the network: the
        entries of records.OriginalAttacks (its MADE_WITH) that the evaluate stage checks against
        its own."""
        return {key: getattr(self, key) for key in OriginalAttacks.MADE_WITH}

    @property
    def primary(self) -> dict:
        """The primary's attack as `adversarial.attack_correct` takes it (with seed, batch size,
        device and labels)."""
        return {
            "attack": self.pgd_attack,
            "steps": self.pgd_steps,
            "restarts": self.pgd_restarts,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "label_mode": self.label_mode,
        }

    @property
    def primary_name(self) -> str:
        """The primary's attack in a table, e.g. "apgd-ce 50x1" (steps x restarts)."""
        return attack_name(self.pgd_attack, self.pgd_steps, self.pgd_restarts)

    def image_counts(self, n: int) -> dict[str, int]:
        """How many of `n` test images each attack uses: `fgsm` and `transfer` the first
        `images`, `pgd` the first `pgd_samples`, `pgd_random` (the random draws under PGD) the
        first `random_samples` of those; each at most what there is."""
        fgsm = n if self.images is None else min(self.images, n)
        pgd_images = min(self.pgd_samples, n)
        random = pgd_images if self.random_samples is None else min(self.random_samples, pgd_images)
        return {"fgsm": fgsm, "transfer": fgsm, "pgd": pgd_images, "pgd_random": random}


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


@torch.no_grad()
def fgsm_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    signs: torch.Tensor,
    clean_logits: torch.Tensor,
    settings: Settings,
) -> Curve:
    """FGSM with the gradient signs `signs` (the model's own: white-box; another model's:
    transferred) at every epsilon of E, image by image; `clean_logits`, the model's logits on
    `images`, give the clean results (and those at epsilon 0, whose images are the clean ones).
    Batches and passes as `adversarial.fgsm_sweep` makes them, so the accuracies are its own."""
    if signs.shape != images.shape or len(clean_logits) != len(images):
        raise ValueError(f"signs {tuple(signs.shape)} and logits {len(clean_logits)} for "
                         f"images {tuple(images.shape)}")  # fmt: skip
    model.eval()
    clean = clean_logits.argmax(dim=1) == labels
    rows = [[] for _ in settings.epsilons]
    for s in batch_slices(len(images), settings.batch_size):
        x = as_input(images[s], settings.device)
        for i, eps in enumerate(settings.epsilons):
            if eps == 0:
                rows[i].append(clean[s])
                continue
            logits = model(fgsm_images(x, signs[s], eps)).cpu()
            rows[i].append(logits.argmax(dim=1) == labels[s])
    return Curve(clean, torch.stack([torch.cat(row) for row in rows]))


def pgd_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    clean: torch.Tensor,
    settings: Settings,
    attacked: dict[float, torch.Tensor] | None = None,
) -> Curve:
    """The primary's attack, white-box, at every epsilon of E+, image by image
    (`adversarial.attack_correct`), from the random starts of generators seeded from
    `settings.seed` for every epsilon (the same points for every model; the starts of the first
    k images do not depend on how many follow). `clean`: the model's results on the clean images
    (those at epsilon 0); `attacked`: the rows already made, per positive epsilon (the baseline
    stage's units, `original_at`), else they are made here."""
    rows = []
    for eps in settings.epsilons:
        if eps == 0:
            rows.append(clean)
        elif attacked is not None:
            rows.append(attacked[eps])
        else:
            rows.append(attack_correct(model, images, labels, eps, **settings.primary))
    return Curve(clean, torch.stack(rows))


def attack_original(
    model: nn.Module,
    source: FGSMSweep,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    attacked: dict[float, torch.Tensor] | None = None,
) -> dict[str, Curve]:
    """The original network under FGSM and PGD, image by image, on the images of
    `settings.image_counts`: {"fgsm": Curve, "pgd": Curve}. `source`: its white-box FGSM sweep on
    these images (the attack stage's), whose signs and clean logits give its FGSM (forward passes
    only); its transferred FGSM is that same curve (the source attacked with its own signs).
    `attacked`: PGD's rows made already, per positive epsilon (`original_at`; else `pgd_curve`
    makes them)."""
    counts = settings.image_counts(len(images))
    n, m = counts["fgsm"], counts["pgd"]
    options = {"batch_size": settings.batch_size, "device": settings.device}
    logits = source.clean_logits  # of every test image
    white_box = fgsm_curve(model, images[:n], labels[:n], source.signs[:n], logits[:n], settings)
    if m > len(logits):  # PGD on images beyond FGSM's: their clean logits
        logits = logits_of(model, images[:m], **options)
    clean = logits[:m].argmax(dim=1) == labels[:m]
    pgd = pgd_curve(model, images[:m], labels[:m], clean, settings, attacked)
    return {"fgsm": white_box, "pgd": pgd}


def original_at(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: Settings, eps: float
) -> tuple[torch.Tensor, masking.Outcome | None]:
    """The original at one positive epsilon `eps`, a unit of the baseline stage: per image,
    correct after the primary's attack on the `pgd` images of `settings.image_counts` (the row of
    `pgd_curve`), and its masking outcome (`masking_outcome`; None where the check is off)."""
    m = settings.image_counts(len(images))["pgd"]
    row = attack_correct(model, images[:m], labels[:m], eps, **settings.primary)
    if masking_images(settings, len(images)) == 0:
        return row, None
    return row, masking_outcome(model, images, labels, settings, eps, pgd=row)


def attack_variant(
    model: nn.Module,
    source: FGSMSweep,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    pgd_images: int,
) -> dict[str, Curve]:
    """A variant attacked white-box by FGSM and PGD (on its first `pgd_images` images), and by
    FGSM transferred from the original (the signs of `source`, the original's sweep):
    {attack: Curve}."""
    n = settings.image_counts(len(images))["fgsm"]
    options = {"batch_size": settings.batch_size, "device": settings.device}
    fgsm_images_, fgsm_labels = images[:n], labels[:n]
    signs, logits = signs_and_logits(
        model, fgsm_images_, fgsm_labels, label_mode=settings.label_mode, **options
    )
    white_box = fgsm_curve(model, fgsm_images_, fgsm_labels, signs, logits, settings)
    transferred = fgsm_curve(model, fgsm_images_, fgsm_labels, source.signs[:n], logits, settings)
    m = pgd_images
    if m > len(logits):  # PGD on images beyond FGSM's: their clean logits
        logits = logits_of(model, images[:m], **options)
    clean = logits[:m].argmax(dim=1) == labels[:m]
    return {
        "fgsm": white_box,
        "pgd": pgd_curve(model, images[:m], labels[:m], clean, settings),
        "transfer": transferred,
    }


def attack_variants(
    models: dict[str, nn.Module],
    source: FGSMSweep,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Curve]]:
    """Every variant of `models` (not the original: `attack_original`) attacked by
    `attack_variant`, each a unit (`workers.run_units`, in `settings.workers` processes), on the
    images of `settings.image_counts`: the random draws, `random_<i>`, under PGD on the
    `pgd_random` images, the others on the `pgd` images. `progress(name)` as each is done."""
    counts = settings.image_counts(len(images))
    units = {
        name: (model, source, images, labels, settings,
               counts["pgd_random"] if name.startswith("random_") else counts["pgd"])
        for name, model in models.items()
    }  # fmt: skip
    return run_units(attack_variant, units, settings.workers, settings.device, progress)


def masking_images(settings: Settings, n: int) -> int:
    """How many of `n` test images the masking check attacks (0: the check is off)."""
    return min(settings.autoattack_images, n)


def masking_outcome(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    eps: float,
    pgd: torch.Tensor | None = None,
) -> masking.Outcome:
    """`model` under the masking check (`masking.outcome`) on the first `masking_images` test
    images at epsilon `eps`; `pgd`: the model's row of its PGD curve at `eps` (the first
    `pgd` images), whose first entries are the check's PGD results where it covers them (the
    attack is not run twice)."""
    n = masking_images(settings, len(images))
    return masking.outcome(
        model, images[:n], labels[:n], eps, primary=settings.primary,
        autoattack_steps=settings.autoattack_steps, pgd=pgd,
    )  # fmt: skip


def calibration_table(
    labels: list[str], attack: str, primary: list[float], autoattack: list[float]
) -> dict:
    """The calibration of the primary's attack `attack` (e.g. "apgd-ce 50x1") from the original's
    accuracies under it (`primary`) and under AutoAttack (`autoattack`) at the epsilons named
    `labels` (those of E+): `calibration`, a row {epsilon, attack, accuracy, autoattack, gap} per
    epsilon, gap = accuracy - autoattack; `calibration_max_gap`, the largest gap; `calibrated`,
    every gap at most CALIBRATION_GAP (None for both where there is no row: the check is off)."""
    if not len(labels) == len(primary) == len(autoattack):
        raise ValueError("one primary and one AutoAttack accuracy per epsilon")
    rows = [
        {"epsilon": label, "attack": attack, "accuracy": p, "autoattack": a, "gap": p - a}
        for label, p, a in zip(labels, primary, autoattack, strict=True)
    ]
    largest = max((row["gap"] for row in rows), default=None)
    return {
        "calibration": rows,
        "calibration_max_gap": largest,
        # a gap of k/n is computed in floats: a hair of rounding does not uncalibrate it
        "calibrated": None if largest is None else largest <= CALIBRATION_GAP + 1e-9,
    }
