"""The evaluate stage: the hardening with controls, as method.md section 6 defines it.

The variants: `original` (the trained model), `hardened` (models/<run>/hardened.pt, as the harden
stage wrote it), `random` (`evaluate.random_controls` draws, each the hardening's rule applied to
random disjoint neuron sets of the sizes of F and R, which never looks at fragility or labels:
see `random_gains`) and `inverse` (roles swapped). The controls are built from the
gains record at full precision, folded into a copy of the original's weights (`gates.fold`), so
every variant is an ordinary model of the same architecture, as the hardened checkpoint is.

Every variant is attacked white-box on the test split, image by image (`Curve`: correct or not
on each image, clean and at every epsilon of E), all variants on the same images (paired):
- FGSM at every epsilon in E on the first `evaluate.images` test images (None: all; eps = 0 is
  the clean image); the original's is the attack stage's sweep (its gradient signs and clean
  logits, the first `images` rows; only the forward passes are made again);
- PGD-Linf at every epsilon in E+ on the first `evaluate.samples` test images, `steps` steps of
  eps / 4 from a random start drawn from a generator seeded with `seed` afresh for every variant
  and epsilon, so all variants start from the same points. The random draws are attacked by PGD
  on the first `evaluate.random_samples` of those images (None: all of them), from the same
  starts, and their margin is taken against the hardened network on those same images;
- FGSM transferred from the original model: the original's signs applied to the variant, on the
  FGSM images.

Measures, per variant and attack, from the per-image results: accuracy per epsilon; AUC, the
trapezoid of the accuracy-epsilon curve over E divided by the epsilon range; AUC+, the same over
E+ only (the accuracy there when E+ holds one epsilon); relative AUC, AUC+ over the variant's
clean accuracy on the same images. Each is a mean over images of a per-image value (`image_table`)
except the relative AUC, a ratio of two such means. The hardening gain is hardened minus original
per measure, with a paired bootstrap 95% interval (`BOOTSTRAP` resamples of the images with
replacement, drawn from a generator seeded with `seed`, the same resample for both variants and
every epsilon; percentile interval); the inverse gain and the clean-accuracy change likewise. The
margin over random is hardened minus the mean of the draws per measure, with the permutation
p-value of "hardening beats random", (1 + #{draws >= hardened}) / (1 + #draws).

The check for gradient masking (`masking`, README "AutoAttack: the masking check"): at the largest
epsilon of E, on the first `autoattack.images` test images (0: off; a seeded random subset, as the
prepared split's order is seeded), the original and the hardened network are attacked by
AutoAttack's APGD-CE and APGD-DLR (`autoattack.steps` iterations, one restart, seed `seed`, true
labels) and by PGD as above, all on those same images. An image is robust under AutoAttack when
the network classifies it correctly after both APGD attacks. The hardened network is flagged as
masking (headline `masking`) when its PGD accuracy exceeds its AutoAttack accuracy by more than
the original's does, counted in images: (PGD - AutoAttack)(hardened) > (PGD - AutoAttack)(original).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import harden, masking
from .adversarial import fgsm_images, pgd_correct, signs_and_logits
from .config import ATTACKS, fgsm_settings
from .errors import DataError
from .gates import fold, gated
from .inference import as_input, batch_slices, logits_of
from .io import rerun_advice
from .models import load_checkpoint
from .records import FGSMSweep, Gains, ScanLayer

FOLD_TOLERANCE = 1e-4  # relative logit difference allowed between hardened.pt and the gains
BOOTSTRAP = 1000  # paired bootstrap resamples of the test images (method.md section 6)
INTERVAL = (2.5, 97.5)  # percentiles of the bootstrap: a 95% interval
MEASURES = ("auc", "auc_plus", "relative_auc")  # besides the accuracy per epsilon


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
    seed: int  # seeds PGD's random start, the bootstrap's resamples, and APGD
    autoattack_images: int  # the first images checked for masking by APGD; 0: no check
    autoattack_steps: int  # APGD iterations per loss
    images: int | None = None  # FGSM and transfer on the first `images` test images; None: all
    random_samples: int | None = None  # the random draws' PGD images, the first of PGD's; None: all

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
            images=cfg["images"],
            random_samples=cfg["random_samples"],
        )

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


def trapezoid_weights(epsilons) -> np.ndarray:
    """w with sum_j w_j * acc_j = the trapezoid of the accuracy-epsilon curve over `epsilons`
    divided by max - min (the mean accuracy over the range); one epsilon: w = [1]."""
    eps = np.asarray(epsilons, dtype=np.float64)
    if eps.ndim != 1 or len(eps) == 0:
        raise ValueError("epsilons must be a non-empty vector")
    if (np.diff(eps) <= 0).any():
        raise ValueError("epsilons must be strictly increasing")
    if len(eps) == 1:
        return np.ones(1)
    step = np.diff(eps) / 2
    weights = np.zeros(len(eps))
    weights[:-1] += step
    weights[1:] += step
    return weights / (eps[-1] - eps[0])


def auc(epsilons, accuracies) -> float:
    """Area under the accuracy-epsilon curve: the trapezoid over E divided by max E - min E (the
    mean accuracy over the range); a single epsilon gives its accuracy."""
    acc = np.asarray(accuracies, dtype=np.float64)
    weights = trapezoid_weights(epsilons)
    if acc.shape != weights.shape:
        raise ValueError("epsilons and accuracies must be non-empty vectors of one length")
    return float(weights @ acc)


def measure_weights(epsilons) -> dict[str, np.ndarray]:
    """Per epsilon of E, the weight of its accuracy in the AUC (the trapezoid over E) and in the
    AUC+ (the trapezoid over E+ only: 0 at epsilon 0)."""
    eps = np.asarray(epsilons, dtype=np.float64)
    positive = eps > 0
    if not positive.any():
        raise ValueError("epsilons must hold a positive epsilon (E+ is what is attacked)")
    plus = np.zeros(len(eps))
    plus[positive] = trapezoid_weights(eps[positive])
    return {"auc": trapezoid_weights(eps), "auc_plus": plus}


@dataclass(frozen=True)
class Curve:
    """One variant under one attack, image by image: `clean` (n, bool), classified correctly on
    the clean image; `attacked` (|E| x n, bool), correctly after the attack at each epsilon of E
    (at epsilon 0, the clean image)."""

    clean: torch.Tensor
    attacked: torch.Tensor

    def __post_init__(self):
        if self.clean.dtype != torch.bool or self.attacked.dtype != torch.bool:
            raise ValueError("a curve's results must be bool tensors")
        if self.clean.dim() != 1 or self.attacked.dim() != 2:
            raise ValueError("clean must be (n,) and attacked (epsilons x n)")
        if self.attacked.shape[1] != len(self.clean) or len(self.clean) == 0:
            raise ValueError(f"{len(self.clean)} clean results, attacked {self.attacked.shape}")

    def __len__(self) -> int:
        return len(self.clean)

    def head(self, n: int) -> Curve:
        """The results of the first `n` images."""
        return Curve(self.clean[:n], self.attacked[:, :n])

    def accuracy(self) -> list[float]:
        """Accuracy at every epsilon of E."""
        return self.attacked.double().mean(dim=1).tolist()


def image_table(curve: Curve, epsilons) -> np.ndarray:
    """n x 3, per image: correct on the clean image (0 or 1), its share of the AUC and of the
    AUC+ (the curve's weights applied to its results). The clean accuracy, the AUC and the AUC+
    of any set of these images are the means of the columns."""
    weights = measure_weights(epsilons)
    attacked = curve.attacked.double().numpy()
    if attacked.shape[0] != len(weights["auc"]):
        raise ValueError(f"a curve of {attacked.shape[0]} epsilons; E has {len(epsilons)}")
    return np.stack(
        [curve.clean.double().numpy(), weights["auc"] @ attacked, weights["auc_plus"] @ attacked],
        axis=1,
    )


def measures_of(means: np.ndarray) -> dict[str, np.ndarray]:
    """The measures from the column means of `image_table` (`means`: ... x 3): clean accuracy,
    AUC, AUC+, and the relative AUC, AUC+ / clean accuracy (NaN where no image is correct)."""
    clean, area, plus = means[..., 0], means[..., 1], means[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(clean > 0, plus / np.where(clean > 0, clean, 1.0), np.nan)
    return {"clean_accuracy": clean, "auc": area, "auc_plus": plus, "relative_auc": relative}


def _number(value) -> float | None:
    """A float for JSON: None where undefined (NaN)."""
    value = float(value)
    return value if np.isfinite(value) else None


def measures(curve: Curve, epsilons) -> dict:
    """A curve's clean accuracy, AUC, AUC+ and relative AUC (None when no image is correct on
    clean inputs), as floats."""
    values = measures_of(image_table(curve, epsilons).mean(axis=0))
    return {name: _number(value) for name, value in values.items()}


def resamples(n: int, draws: int, seed: int) -> torch.Tensor:
    """`draws` bootstrap resamples of n images as weights (draws x n, float64): row r holds how
    often resample r draws each image (n draws with replacement, from a generator seeded with
    `seed`), over n, so that `weights @ values` is each resample's mean."""
    index = torch.randint(n, (draws, n), generator=torch.Generator().manual_seed(seed))
    counts = torch.zeros(draws, n, dtype=torch.float64)
    counts.scatter_add_(1, index, torch.ones(draws, n, dtype=torch.float64))
    return counts / n


def paired_gain(a: Curve, b: Curve, epsilons, weights: torch.Tensor) -> dict[str, dict]:
    """a minus b for each measure (clean accuracy, AUC, AUC+, relative AUC) on the same images,
    with the percentile 95% interval over the bootstrap resamples `weights` (`resamples`), each
    applied to both curves and every epsilon: {measure: {value, ci_low, ci_high}}. A resample
    where either curve has no correct clean image gives no relative AUC and is left out of its
    interval; None where nothing is left."""
    if len(a) != len(b) or weights.shape[1] != len(a):
        raise ValueError(f"curves of {len(a)} and {len(b)} images, resamples of {weights.shape[1]}")
    tables = [image_table(c, epsilons) for c in (a, b)]
    point = [measures_of(t.mean(axis=0)) for t in tables]
    boot = [measures_of(weights.numpy() @ t) for t in tables]
    out = {}
    for name in point[0]:
        value = _number(point[0][name] - point[1][name])
        spread = boot[0][name] - boot[1][name]
        spread = spread[np.isfinite(spread)]
        low, high = np.percentile(spread, INTERVAL) if len(spread) else (None, None)
        out[name] = {
            "value": value,
            "ci_low": None if low is None else float(low),
            "ci_high": None if high is None else float(high),
        }
    return out


def permutation_p(hardened: float, draws: list[float]) -> float:
    """The permutation p-value of "hardening beats random": (1 + #{draws >= hardened}) /
    (1 + #draws); its smallest value is 1 / (1 + #draws)."""
    return (1 + sum(d >= hardened for d in draws)) / (1 + len(draws))


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
) -> Curve:
    """White-box PGD at every epsilon of E+, image by image, from the random start of a generator
    seeded with `settings.seed` for every epsilon (the same points for every model; the starts of
    the first k images do not depend on how many follow). `clean`: the model's results on the
    clean images (those at epsilon 0)."""
    rows = []
    for eps in settings.epsilons:
        if eps == 0:
            rows.append(clean)
            continue
        rows.append(
            pgd_correct(
                model,
                images,
                labels,
                eps,
                steps=settings.pgd_steps,
                seed=settings.seed,
                batch_size=settings.batch_size,
                device=settings.device,
                label_mode=settings.label_mode,
            )
        )
    return Curve(clean, torch.stack(rows))


def attack_variants(
    models: dict[str, nn.Module],
    source: FGSMSweep,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Curve]]:
    """Every variant attacked white-box by FGSM and PGD, and by FGSM transferred from the
    original, image by image: {attack: Curve} per variant, on the images of
    `settings.image_counts` (the random draws, `random_<i>`, under PGD on `pgd_random` images).

    `source`: the white-box FGSM sweep of `models["original"]` on these images (the attack
    stage's): its signs and clean logits give the original's FGSM (forward passes only), and its
    signs are transferred to every other variant."""
    counts = settings.image_counts(len(images))
    n = counts["fgsm"]
    fgsm_images_, fgsm_labels = images[:n], labels[:n]
    options = {"batch_size": settings.batch_size, "device": settings.device}
    results = {}
    for name, model in models.items():
        if name == "original":
            signs, logits = source.signs[:n], source.clean_logits
            white_box = fgsm_curve(model, fgsm_images_, fgsm_labels, signs, logits[:n], settings)
            transferred = white_box  # the source attacked with its own signs
        else:
            signs, logits = signs_and_logits(
                model, fgsm_images_, fgsm_labels, label_mode=settings.label_mode, **options
            )
            white_box = fgsm_curve(model, fgsm_images_, fgsm_labels, signs, logits, settings)
            transferred = fgsm_curve(
                model, fgsm_images_, fgsm_labels, source.signs[:n], logits, settings
            )
        m = counts["pgd_random"] if name.startswith("random_") else counts["pgd"]
        if m > len(logits):  # PGD on images beyond FGSM's: their clean logits
            logits = logits_of(model, images[:m], **options)
        clean = logits[:m].argmax(dim=1) == labels[:m]
        results[name] = {
            "fgsm": white_box,
            "pgd": pgd_curve(model, images[:m], labels[:m], clean, settings),
            "transfer": transferred,
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
    evaluate.json (`summarise`, its bootstrap seeded with `settings.seed`) with the masking check
    of the original and the hardened network (`masking.check`), and the robustness curves
    (`curves`). `generator` draws the random controls."""
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
    summary = summarise(
        results, settings.epsilons, settings.epsilon_labels, settings.seed, magnitude, gates
    )
    summary = {
        **summary,
        "headline": {**summary["headline"], **{k: flag[k] for k in masking.FLAGS}},
        "masking": flag,
        # false: F and R, and so the gains, rest on a cut-off the index decided
        "labels_resolved": gains.labels_resolved,
        "autoattack": autoattack,
        "epsilons": settings.epsilon_labels,
        "labels": settings.label_mode,
        "pgd_steps": settings.pgd_steps,
        "random_controls": settings.random_controls,
    }
    return summary, curves(summary, settings.epsilons, settings.epsilon_labels)


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None  # undefined for one draw


def margin_over_random(hardened: float | None, draws: list[float | None], images: int) -> dict:
    """Hardened minus the mean of the draws (`mean`), the draws' sample std, how many draws the
    hardened value beats, and the permutation p-value of "hardening beats random"; on `images`
    images. None where the hardened value or a draw is undefined."""
    out = {"mean": None, "std": None, "p_value": None, "hardened_beats": None}
    if hardened is not None and None not in draws:
        out = {
            "mean": hardened - statistics.mean(draws),
            "std": _std(draws),
            "p_value": permutation_p(hardened, draws),
            "hardened_beats": sum(hardened > d for d in draws),
        }
    return {**out, "draws": len(draws), "images": images}


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
    draws of each. `gain` and `inverse_gain`: hardened (inverse) minus original per attack and
    measure, {value, ci_low, ci_high}, from `bootstrap` paired resamples of a generator seeded
    with `seed` (`resamples`; the same for every attack on the same images);
    `clean_accuracy_change` likewise, on the FGSM images. `margin_over_random`: per attack and
    measure, hardened minus the draws' mean on the draws' images (`margin_over_random`).
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

    single = {name: one(name) for name in ("original", "hardened", "inverse")}
    per_draw = [one(name) for name in draws]
    random = {
        "draws": len(draws),
        "clean_accuracy": statistics.mean(d["clean_accuracy"] for d in per_draw),
    }
    for attack in ATTACKS:
        entry = {
            "accuracy": {
                e: statistics.mean(d[attack]["accuracy"][e] for d in per_draw) for e in labels
            },
            "accuracy_std": {e: _std([d[attack]["accuracy"][e] for d in per_draw]) for e in labels},
        }
        for m in MEASURES:
            values = [d[attack][m] for d in per_draw]
            defined = None not in values
            entry[m] = statistics.mean(values) if defined else None
            entry[f"{m}_std"] = _std(values) if defined else None
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

    gains = {a: paired(hardened, original, a) for a in ATTACKS}
    inverse_gains = {a: paired(inverse, original, a) for a in ATTACKS}
    clean_change = gains["fgsm"]["clean_accuracy"]  # FGSM's images: the clean accuracy's
    margin = {}
    for attack in ATTACKS:
        n = len(results[draws[0]][attack])  # the draws' images: the first n of the hardened's
        ours = measures(hardened[attack].head(n), epsilons)
        margin[attack] = {
            m: margin_over_random(ours[m], [measures(results[d][attack], epsilons)[m]
                                            for d in draws], n)
            for m in MEASURES
        }  # fmt: skip
    headline = {
        "clean_accuracy_change": clean_change["value"],
        "clean_accuracy_change_low": clean_change["ci_low"],
        "clean_accuracy_change_high": clean_change["ci_high"],
    }
    for a in ATTACKS:
        headline |= {
            f"{a}_auc_plus_gain": gains[a]["auc_plus"]["value"],
            f"{a}_auc_plus_gain_low": gains[a]["auc_plus"]["ci_low"],
            f"{a}_auc_plus_gain_high": gains[a]["auc_plus"]["ci_high"],
            f"{a}_margin_over_random": margin[a]["auc_plus"]["mean"],
            f"{a}_p_value": margin[a]["auc_plus"]["p_value"],
        }
    return {
        "headline": headline,
        "gain": {a: {m: gains[a][m] for m in MEASURES} for a in ATTACKS},
        "clean_accuracy_change": clean_change,
        "margin_over_random": margin,
        "inverse_gain": {a: {m: inverse_gains[a][m] for m in MEASURES} for a in ATTACKS},
        "variants": {**single, "random": random},
        "samples": {
            **{a: len(original[a]) for a in ATTACKS},
            "pgd_random": len(results[draws[0]]["pgd"]),
            "bootstrap": bootstrap,
        },
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
