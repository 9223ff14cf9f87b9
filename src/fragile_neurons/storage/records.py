"""The records: what one stage hands another, each a small typed object saved under data/.

A record is a frozen dataclass of plain values: tensors, lists of numbers or strings, strings and
numbers. `save` writes its fields with torch.save (atomically, the same fields give the same
bytes); `load` reads them back with ``weights_only`` safety (`io.load_tensors`), builds the record
and checks it. A missing field, a field of the wrong type or shape, or a record that does not fit
what the caller holds (other images, another model, another number of neurons) is one line,
a DataError naming the file and the stage to rerun. Building a record runs nothing from the file.

Which stage writes and which reads each record: docs/architecture.md's table, the one inventory
(tests/test_architecture.py checks it against this module and dvc.yaml).

CSV tables for people and `dvc plots` are written from records (`frame`); no stage reads a CSV.
"""

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..running.config import LABELS, PRIMARY_ATTACKS, RULES
from ..running.errors import DataError
from .io import admit, load_tensors, rerun_advice, save_tensors


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES = {  # a field's declared type: (test of a value, what to call it in a message)
    bool: (lambda v: isinstance(v, bool), "a boolean"),
    str: (lambda v: isinstance(v, str), "a string"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (_is_number, "a number"),
    torch.Tensor: (lambda v: isinstance(v, torch.Tensor), "a tensor"),
    list[float]: (lambda v: isinstance(v, list) and all(map(_is_number, v)), "a list of numbers"),
    list[str]: (
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        "a list of strings",
    ),
}


def _tensor(name: str, value: torch.Tensor, dtype: torch.dtype, *shape: int | None) -> None:
    """`value` must be a `dtype` tensor of `shape` (None: any size)."""
    ok = value.dtype == dtype and value.dim() == len(shape)
    if not ok or any(s is not None and s != n for s, n in zip(shape, value.shape, strict=True)):
        sizes = ", ".join("?" if s is None else str(s) for s in shape)
        wanted = f"({sizes},)" if len(shape) == 1 else f"({sizes})"
        raise ValueError(f"{name} is {value.dtype} {tuple(value.shape)}, not {dtype} {wanted}")


def _setting(name: str, value) -> None:
    """A setting a record holds (the params that made it), by the params' own declared rule
    (config.RULES): ValueError with the rule's message if it breaks it."""
    try:
        RULES[name](name, value)
    except ValueError as err:  # a ParamError
        raise ValueError(getattr(err, "refusal", str(err))) from None


def _same_length(**lists) -> None:
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"lengths differ: {lengths}")


class Record:
    """What every record shares: checked fields, to_dict/from_dict, save/load."""

    def __post_init__(self) -> None:
        for f in fields(self):
            test, what = _TYPES[f.type]
            if not test(getattr(self, f.name)):
                raise ValueError(f"{f.name} is not {what}")
        self.check()

    def check(self) -> None:
        """Raise ValueError where the fields do not fit together (shapes, allowed values)."""

    def mismatch(self) -> str | None:
        """What keeps the record from fitting the caller's expectations (keyword arguments of
        `load`), or None."""
        return None

    def to_dict(self) -> dict:
        """The fields, by name: plain tensors, lists, strings and numbers."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, blob: dict):
        """The record of a `to_dict` dict (other keys are ignored), checked: ValueError if not."""
        return cls(**{f.name: blob[f.name] for f in fields(cls)})

    def save(self, path: str | Path) -> None:
        save_tensors(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, **expected):
        """The record in `path`, checked, and checked against `expected` (see `mismatch`)."""
        blob = load_tensors(path, keys=tuple(f.name for f in fields(cls)))
        try:
            record = cls.from_dict(blob)
        except (TypeError, ValueError) as err:  # a field of the wrong type or shape
            raise DataError(
                f"{path} is not a {cls.__name__} record ({err}); {rerun_advice(path)}"
            ) from None
        problem = record.mismatch(**expected)
        if problem:
            raise DataError(f"{path} {problem}; {rerun_advice(path)}")
        admit(path, blob)
        return record


def _neurons(count: int, neurons: int | None) -> str | None:
    if neurons is None or count == neurons:
        return None
    return f"holds {count} neurons, not the {neurons} of the scanned layer"


@dataclass(frozen=True)
class FGSMSweep(Record):
    """FGSM on every image of a split at every epsilon of a grid, from one gradient sign per
    pixel (method.md section 1). Per epsilon (lists in grid order): accuracy and mean
    cross-entropy on the true labels; success rate, the share of the images classified correctly
    on clean inputs that the attack makes misclassified (NaN when none is correct); the mean
    L-infinity and L2 norms of the perturbation (pixel units). Plus the clean logits, accuracy
    and loss, and the signs (int8) that made every epsilon's images."""

    epsilons: list[float]
    epsilon_labels: list[str]  # how the epsilons are named in metrics and plots ('8/255')
    label_mode: str  # the signs' labels: "true" | "predicted"
    batch_size: int  # images per pass that made the signs and logits
    accuracy: list[float]
    loss: list[float]
    success_rate: list[float]
    linf_mean: list[float]
    l2_mean: list[float]
    clean_accuracy: float
    clean_loss: float
    clean_logits: torch.Tensor  # float32, N x classes
    signs: torch.Tensor  # int8, N x C x H x W

    def check(self) -> None:
        _same_length(
            epsilons=self.epsilons,
            epsilon_labels=self.epsilon_labels,
            accuracy=self.accuracy,
            loss=self.loss,
            success_rate=self.success_rate,
            linf_mean=self.linf_mean,
            l2_mean=self.l2_mean,
        )
        _setting("label_mode", self.label_mode)
        _tensor("signs", self.signs, torch.int8, None, None, None, None)
        _tensor("clean_logits", self.clean_logits, torch.float32, len(self.signs), None)

    def mismatch(self, images=None, epsilons=None, label_mode=None, batch_size=None):
        """`images`: the images the signs must be of (the test split for sweep.pt, the scan set
        S for scan_sweep.pt); the others: how it must have been made."""
        if images is not None and self.signs.shape != images.shape:
            shape, wanted = tuple(self.signs.shape), tuple(images.shape)
            return f"holds the signs of images {shape}, not of the images read with it {wanted}"
        made = (self.epsilons, self.label_mode, self.batch_size)
        if epsilons is not None and made != (list(epsilons), label_mode, batch_size):
            return (
                f"was made at epsilons {self.epsilons} with labels {self.label_mode!r} and "
                f"batch size {self.batch_size}, not at {list(epsilons)} with {label_mode!r} and "
                f"{batch_size}"
            )
        return None

    def frame(self) -> pd.DataFrame:
        """attack.csv: the accuracy-epsilon curve, one row per epsilon."""
        return pd.DataFrame(
            {
                "epsilon": self.epsilons,
                "epsilon_label": self.epsilon_labels,
                "accuracy": self.accuracy,
                "loss": self.loss,
                "success_rate": self.success_rate,
                "linf_mean": self.linf_mean,
                "l2_mean": self.l2_mean,
            }
        )


@dataclass(frozen=True)
class ScanLayer(Record):
    """The scanned layer L (method.md, notation): resolved once, by the attack stage."""

    conv_name: str  # L, by its name in model.named_modules()
    neuron_name: str  # the module whose output channel k is neuron k (L, or its BatchNorm)
    channels: int  # N, the number of neurons

    def check(self) -> None:
        if self.channels < 1 or not self.conv_name or not self.neuron_name:
            raise ValueError("a layer needs a convolution, a neuron module and neurons >= 1")

    def mismatch(self, model: nn.Module | None = None):
        """`model`: the network whose layer this must be."""
        if model is None:
            return None
        modules = dict(model.named_modules())
        conv = modules.get(self.conv_name)
        neuron = modules.get(self.neuron_name)
        if not isinstance(conv, nn.Conv2d) or conv.out_channels != self.channels or neuron is None:
            return (
                f"names layer {self.conv_name!r} ({self.channels} neurons, output of "
                f"{self.neuron_name!r}), which is not a convolution of this model"
            )
        return None

    def conv(self, model: nn.Module) -> nn.Conv2d:
        return model.get_submodule(self.conv_name)

    def neuron_module(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.neuron_name)

    def describe(self) -> dict:
        """The layer as the metrics name it."""
        return {"conv": self.conv_name, "neuron_module": self.neuron_name, "neurons": self.channels}


@dataclass(frozen=True)
class Targeting(Record):
    """How the attack spreads over the neurons (method.md section 2): T, R and D as E x N float64
    tensors (rows: the positive epsilons, in grid order), m as N; and the controls: the noise
    share N (E x N, D under random signs drawn with `noise_seed`), the excess share X = mean D
    / mean N, the null of X (`null_excess`: X of a second random draw against the first, what X
    looks like when nothing aims) and the filter gain G, each N; the reference share D^ref (E x
    N: D under the FGSM of the reference network f_ref; NaN throughout when `reference` is
    false, the run having none) and X^ref = mean D / mean D^ref (N), the primary measure of
    claim 1, and X^ref on each half of the scan set (`reference_excess_halves`, 2 x N: its
    split-half reliability); the placebo share D^ref2 (E x N: D under the FGSM of the placebo
    network f_ref2; NaN throughout when `placebo` is false) and X^plc = mean D^ref / mean
    D^ref2 (N), the primary's empirical null; the surrogate share D^sur (E x N: D under a
    spectrum-matched surrogate of f's own perturbation s = sign(grad), v4: per image one random
    phase field, drawn with `surrogate_seed`, added to the phases of every colour channel, then
    `surrogate_iterations` IAAFT rounds alternately imposing the amplitude spectrum of s per
    channel and the +-1 values) and X^sur = mean D / mean D^sur (N); the surrogate's remaining
    relative amplitude error || |F(sur)| - |F(s)| ||_2 / || |F(s)| ||_2 per image, its mean
    over S (`surrogate_error`) and its largest (`surrogate_error_max`); without a surrogate,
    D^sur, X^sur and both errors are NaN and `surrogate_iterations` is 0. D and the control
    shares are NaN in a row where no neuron moves at all (the share of a zero attack is
    undefined); an excess is NaN where its control moves a neuron not at all."""

    epsilons: list[float]
    epsilon_labels: list[str]
    effect: torch.Tensor  # T
    relative_effect: torch.Tensor  # R
    share: torch.Tensor  # D
    magnitude: torch.Tensor  # m
    noise_share: torch.Tensor  # N
    excess_share: torch.Tensor  # X
    null_excess: torch.Tensor  # X of a random perturbation against another
    filter_gain: torch.Tensor  # G
    noise_seed: int
    reference: bool  # whether the run has a reference network (runs.<name>.reference)
    reference_share: torch.Tensor  # D^ref
    reference_excess: torch.Tensor  # X^ref
    reference_excess_halves: torch.Tensor  # X^ref on each half of S (2 x N; NaN: one image)
    placebo: bool  # whether the run has a placebo network (runs.<name>.placebo)
    placebo_share: torch.Tensor  # D^ref2
    placebo_excess: torch.Tensor  # X^plc
    surrogate_share: torch.Tensor  # D^sur
    surrogate_excess: torch.Tensor  # X^sur
    surrogate_seed: int
    surrogate_iterations: int  # IAAFT rounds (runs.<name>.attack.surrogate_iterations); 0: none
    surrogate_error: float  # mean over S of the relative amplitude error of the surrogate
    surrogate_error_max: float  # its largest over S

    def check(self) -> None:
        _same_length(epsilons=self.epsilons, epsilon_labels=self.epsilon_labels)
        errors = (self.surrogate_error, self.surrogate_error_max)
        if self.surrogate_iterations == 0:
            if not all(map(math.isnan, errors)):
                raise ValueError("the surrogate's errors must be NaN without a surrogate")
        else:
            _setting("surrogate_iterations", self.surrogate_iterations)
            mean, largest = errors  # the mean may pass the largest by a rounding error
            if not (0 <= mean <= largest * (1 + 1e-9) and largest < math.inf):
                raise ValueError(
                    f"surrogate_error {self.surrogate_error} and surrogate_error_max "
                    f"{self.surrogate_error_max} must be finite, >= 0 and in that order"
                )
        n = len(self.magnitude)
        per_neuron = ("magnitude", "excess_share", "null_excess", "filter_gain")
        for name in (*per_neuron, "reference_excess", "placebo_excess", "surrogate_excess"):
            _tensor(name, getattr(self, name), torch.float64, n)
        _tensor("reference_excess_halves", self.reference_excess_halves, torch.float64, 2, n)
        for name in (
            "effect",
            "relative_effect",
            "share",
            "noise_share",
            "reference_share",
            "placebo_share",
            "surrogate_share",
        ):
            _tensor(name, getattr(self, name), torch.float64, len(self.epsilons), n)
        if not self.reference and not torch.isnan(self.reference_share).all():
            raise ValueError("reference_share must be NaN throughout without a reference network")
        if not self.placebo and not torch.isnan(self.placebo_share).all():
            raise ValueError("placebo_share must be NaN throughout without a placebo network")
        if self.placebo and not self.reference:
            raise ValueError("a placebo share needs the reference network's (X^plc = D^ref/D^ref2)")
        for name in ("magnitude", "filter_gain"):
            value = getattr(self, name)
            if not (torch.isfinite(value).all() and (value >= 0).all()):
                raise ValueError(f"{name} must be finite and >= 0")

    def mismatch(self, neurons: int | None = None):
        return _neurons(len(self.magnitude), neurons)

    def mean_share(self) -> np.ndarray:
        """Each neuron's attack share D averaged over the positive epsilons."""
        return self.share.numpy().mean(axis=0)

    def mean_noise_share(self) -> np.ndarray:
        """Each neuron's noise share N averaged over the positive epsilons."""
        return self.noise_share.numpy().mean(axis=0)

    def mean_reference_share(self) -> np.ndarray:
        """Each neuron's reference share D^ref averaged over the positive epsilons."""
        return self.reference_share.numpy().mean(axis=0)

    def mean_placebo_share(self) -> np.ndarray:
        """Each neuron's placebo share D^ref2 averaged over the positive epsilons."""
        return self.placebo_share.numpy().mean(axis=0)

    def frame(self) -> pd.DataFrame:
        """targeting.csv: one row per (neuron, epsilon), neurons outer; the per-neuron controls
        X, its null, G, X^ref, X^plc and X^sur repeated on each of the neuron's rows."""
        n_eps, n_neurons = self.effect.shape

        def per_neuron(values: torch.Tensor) -> np.ndarray:
            return values.repeat_interleave(n_eps).numpy()

        return pd.DataFrame(
            {
                "neuron": torch.arange(n_neurons).repeat_interleave(n_eps).numpy(),
                "epsilon": self.epsilons * n_neurons,
                "epsilon_label": self.epsilon_labels * n_neurons,
                "effect": self.effect.T.flatten().numpy(),
                "relative_effect": self.relative_effect.T.flatten().numpy(),
                "share": self.share.T.flatten().numpy(),
                "noise_share": self.noise_share.T.flatten().numpy(),
                "reference_share": self.reference_share.T.flatten().numpy(),
                "placebo_share": self.placebo_share.T.flatten().numpy(),
                "surrogate_share": self.surrogate_share.T.flatten().numpy(),
                "magnitude": per_neuron(self.magnitude),
                "excess_share": per_neuron(self.excess_share),
                "null_excess": per_neuron(self.null_excess),
                "filter_gain": per_neuron(self.filter_gain),
                "reference_excess": per_neuron(self.reference_excess),
                "placebo_excess": per_neuron(self.placebo_excess),
                "surrogate_excess": per_neuron(self.surrogate_excess),
            }
        )


NETS = ("intact", "dropped")  # the scan's two kinds of network, as its fields name them


@dataclass(frozen=True)
class ScanMeasurements(Record):
    """Correct counts and mean losses of the intact network and of every dropped network on the
    scan set (method.md section 3). Column e is epsilons[e] (the scan stage's: 0 first);
    intact_* have shape (E,), dropped_* shape (N, E) with row k for the network without neuron
    k. `path` names how they were computed (scan.py): delta, prefix, hooks, naive or adaptive.
    On the clean images (epsilon 0), per neuron k: dropped_lost[k], the images the intact
    network classifies correctly and the network without k does not, and dropped_gained[k],
    the reverse (the discordant pairs of McNemar's test). The halves of the scan set, its first
    `half_samples` images and the other samples - half_samples, in its seeded order: the first
    half's correct counts (`first_half_*_correct`; the second half's are the totals minus these)
    and each half's summed cross-entropy (`first_half_*_loss_sum`, `second_half_*_loss_sum`;
    the two add up to samples times the mean loss, to float32 rounding) give the split-half
    reliability of phi and of the loss fragility psi (method.md section 3)."""

    epsilons: list[float]
    epsilon_labels: list[str]
    samples: int
    path: str
    intact_correct: torch.Tensor
    intact_loss: torch.Tensor
    dropped_correct: torch.Tensor
    dropped_loss: torch.Tensor
    dropped_lost: torch.Tensor  # int64 (N,)
    dropped_gained: torch.Tensor  # int64 (N,)
    half_samples: int  # samples // 2: the first half of the scan set
    first_half_intact_correct: torch.Tensor  # int64 (E,)
    first_half_dropped_correct: torch.Tensor  # int64 (N, E)
    first_half_intact_loss_sum: torch.Tensor  # float64 (E,): summed cross-entropy, first half
    first_half_dropped_loss_sum: torch.Tensor  # float64 (N, E)
    second_half_intact_loss_sum: torch.Tensor  # float64 (E,): the same, the second half
    second_half_dropped_loss_sum: torch.Tensor  # float64 (N, E)

    def check(self) -> None:
        _same_length(epsilons=self.epsilons, epsilon_labels=self.epsilon_labels)
        e, n = len(self.epsilons), len(self.dropped_correct)
        _tensor("intact_correct", self.intact_correct, torch.int64, e)
        _tensor("intact_loss", self.intact_loss, torch.float64, e)
        _tensor("dropped_correct", self.dropped_correct, torch.int64, n, e)
        _tensor("dropped_loss", self.dropped_loss, torch.float64, n, e)
        _tensor("dropped_lost", self.dropped_lost, torch.int64, n)
        _tensor("dropped_gained", self.dropped_gained, torch.int64, n)
        _tensor("first_half_intact_correct", self.first_half_intact_correct, torch.int64, e)
        _tensor("first_half_dropped_correct", self.first_half_dropped_correct, torch.int64, n, e)
        for name in ("first", "second"):
            for net, shape in zip(NETS, ((e,), (n, e)), strict=True):
                key = f"{name}_half_{net}_loss_sum"
                _tensor(key, getattr(self, key), torch.float64, *shape)
        counts = torch.cat([self.intact_correct, self.dropped_correct.flatten()])
        if self.samples < 1 or counts.min() < 0 or counts.max() > self.samples:
            raise ValueError(f"counts must lie in [0, samples = {self.samples}]")
        if self.half_samples != self.samples // 2:
            raise ValueError(f"half_samples must be samples // 2 = {self.samples // 2}")
        first = torch.cat(
            [self.first_half_intact_correct, self.first_half_dropped_correct.flatten()]
        )
        if first.min() < 0 or first.max() > self.half_samples or (first > counts).any():
            raise ValueError(
                f"first-half counts must lie in [0, half_samples = {self.half_samples}] and "
                "not exceed the totals"
            )
        second = counts - first
        if second.max() > self.samples - self.half_samples:
            raise ValueError("the second half's counts (totals minus first half) exceed its size")
        summed = torch.cat([self.intact_loss[None], self.dropped_loss]) * self.samples

        def half(name: str) -> torch.Tensor:  # (N + 1, E): the intact network first
            intact, dropped = (getattr(self, f"{name}_half_{net}_loss_sum") for net in NETS)
            return torch.cat([intact[None], dropped])

        halves = half("first") + half("second")
        if not torch.allclose(halves, summed, rtol=1e-6, atol=1e-6, equal_nan=True):
            raise ValueError("the halves' loss sums must add up to samples times the mean losses")
        lost, gained = self.dropped_lost, self.dropped_gained
        if n and (lost.min() < 0 or gained.min() < 0):
            raise ValueError("dropped_lost and dropped_gained must be >= 0")
        if self.epsilons.count(0.0) != 1:
            return  # no clean column to check them against: `mismatch` refuses the record
        clean = self.epsilons.index(0.0)
        right = int(self.intact_correct[clean])
        if (lost > right).any() or (gained > self.samples - right).any():
            raise ValueError(
                f"dropped_lost must lie in [0, {right}] (the intact network's clean correct) "
                f"and dropped_gained in [0, {self.samples - right}] (its clean wrong)"
            )
        if not torch.equal(
            self.dropped_correct[:, self.epsilons.index(0.0)], right - lost + gained
        ):
            raise ValueError(
                "the clean dropped_correct must be the intact network's minus dropped_lost plus "
                "dropped_gained"
            )

    def mismatch(self, neurons: int | None = None):
        """The scan stage's record always holds the clean images (epsilon 0), once."""
        if self.epsilons.count(0.0) != 1:
            return f"holds epsilons {self.epsilons}, not the clean images (epsilon 0) once"
        return _neurons(len(self.dropped_correct), neurons)

    @property
    def adversarial(self) -> str:
        """The scan.adversarial mode the measurements were made with."""
        return "adaptive" if self.path == "adaptive" else "transfer"

    @property
    def intact_accuracy(self) -> torch.Tensor:
        return self.intact_correct.double() / self.samples

    @property
    def dropped_accuracy(self) -> torch.Tensor:
        return self.dropped_correct.double() / self.samples

    def impact(self) -> np.ndarray:
        """N x E: intact minus dropped accuracy (at epsilon 0 the clean impact c_k, elsewhere
        the adversarial impact a_k(eps))."""
        return (self.intact_correct[None, :] - self.dropped_correct).numpy() / self.samples

    def frame(self) -> pd.DataFrame:
        """scan.csv: one row per neuron and epsilon, the intact and the dropped network's
        accuracy and loss, and the impact."""
        n, e = self.dropped_correct.shape
        return pd.DataFrame(
            {
                "neuron": [k for k in range(n) for _ in range(e)],
                "epsilon": self.epsilons * n,
                "epsilon_label": self.epsilon_labels * n,
                "accuracy_intact": list(self.intact_accuracy.numpy()) * n,
                "accuracy_dropped": self.dropped_accuracy.numpy().reshape(-1),
                "loss_intact": list(self.intact_loss.numpy()) * n,
                "loss_dropped": self.dropped_loss.numpy().reshape(-1),
                "impact": self.impact().reshape(-1),
            }
        )


@dataclass(frozen=True)
class Labels(Record):
    """Each neuron's impacts, its fragility phi (the impact `score` names) and its label under
    `fraction` (method.md section 3), one entry per neuron; the loss impacts that break ties in
    phi, the clean one being the loss fragility psi (`loss_fragility`: method.md section 3, v4,
    secondary, never phi); the McNemar p-value of its clean discordant counts; and `warnings`,
    why the labels are unresolved (a cut-off only the neuron index decides, a constant phi),
    empty if they are not."""

    score: str
    fraction: float
    phi: torch.Tensor
    clean_impact: torch.Tensor
    adversarial_impact: torch.Tensor
    difference_impact: torch.Tensor
    label: list[str]  # fragile | robust | neutral
    antifragile: torch.Tensor  # bool: robust with phi < 0
    clean_loss_impact: torch.Tensor  # loss of f^(-k) minus loss of f, clean: psi
    adversarial_loss_impact: torch.Tensor  # the same, the mean over E+
    difference_loss_impact: torch.Tensor  # adversarial minus clean
    mcnemar_p: torch.Tensor  # exact two-sided, of the clean discordant counts
    warnings: list[str]
    clean_reliability: float  # the clean phi's split-half reliability (Spearman-Brown; NaN)

    def check(self) -> None:
        n = len(self.phi)
        for name in (
            "phi",
            "clean_impact",
            "adversarial_impact",
            "difference_impact",
            "clean_loss_impact",
            "adversarial_loss_impact",
            "difference_loss_impact",
            "mcnemar_p",
        ):
            _tensor(name, getattr(self, name), torch.float64, n)
        _tensor("antifragile", self.antifragile, torch.bool, n)
        _same_length(phi=self.phi, label=self.label)
        _setting("score", self.score)
        if not set(self.label) <= set(LABELS):
            raise ValueError(f"every label must be one of {LABELS}")
        if not ((self.mcnemar_p >= 0) & (self.mcnemar_p <= 1)).all():
            raise ValueError("mcnemar_p must lie in [0, 1]")
        reliable = self.clean_reliability
        if not isinstance(reliable, float) or not (math.isnan(reliable) or reliable <= 1):
            raise ValueError("clean_reliability must be a float <= 1, or NaN")

    def mismatch(self, neurons: int | None = None):
        return _neurons(len(self.phi), neurons)

    @property
    def resolved(self) -> bool:
        """No cut-off is decided by neuron index alone and phi is not constant."""
        return not self.warnings

    @property
    def loss_impact(self) -> torch.Tensor:
        """The loss impact of the score: phi's tiebreak."""
        return getattr(self, f"{self.score}_loss_impact")

    @property
    def loss_fragility(self) -> torch.Tensor:
        """psi, the loss fragility (method.md section 3, v4; secondary): the clean loss impact,
        mean cross-entropy of f^(-k) minus that of f on S."""
        return self.clean_loss_impact

    def members(self, label: str) -> list[int]:
        """The neurons with `label`, in index order."""
        return [k for k, name in enumerate(self.label) if name == label]


@dataclass(frozen=True)
class Gains(Record):
    """The hardening's gain g_k of every neuron, the inverse control's and the random
    controls' (method.md sections 5 and 6), at full precision, with the magnitudes m and the
    fragility phi they were made from, and whether the labels that made them were resolved
    (method.md section 3)."""

    gain: torch.Tensor
    inverse_gain: torch.Tensor
    magnitude: torch.Tensor
    phi: torch.Tensor
    fragile: torch.Tensor  # int64 indices of F, the amplified neurons
    robust: torch.Tensor  # int64 indices of R, the compressed neurons
    compress: float  # harden.compress, harden.mode, harden.max_gain: the rule that made the gains
    mode: str
    max_gain: float
    labels_resolved: bool  # Labels.resolved of the labels that chose F and R
    random_gain: torch.Tensor  # draws x N: the random controls, the rule on random sets
    random_ratio: torch.Tensor  # per draw, its moved magnitude M' over the hardened network's M
    random_matched: bool  # every draw within random_tolerance (else the closest were kept)
    random_tolerance: float  # harden.match_tolerance: |M'/M - 1| allowed
    compress_only_gain: torch.Tensor  # the arms of method.md section 5: c on R, 1 elsewhere
    amplify_only_gain: torch.Tensor  # the hardened gains on F, 1 elsewhere
    # the hardened+recalibrated arm: the BatchNorms after L (none: the arm is absent) and their
    # running means and variances re-estimated on S, of the hardened and of the original network
    recalibrated_modules: list[str] = field(default_factory=list)
    recalibrated_hardened: torch.Tensor = field(default_factory=lambda: torch.zeros(0).double())
    recalibrated_original: torch.Tensor = field(default_factory=lambda: torch.zeros(0).double())

    def check(self) -> None:
        n = len(self.gain)
        for name in ("gain", "inverse_gain", "magnitude", "phi"):
            _tensor(name, getattr(self, name), torch.float64, n)
            if not torch.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} must be finite")
        _tensor("random_gain", self.random_gain, torch.float64, None, n)
        if len(self.random_gain) == 0 or not torch.isfinite(self.random_gain).all():
            raise ValueError("random_gain must hold at least one draw, finite")
        _tensor("random_ratio", self.random_ratio, torch.float64, len(self.random_gain))
        for name in ("compress_only_gain", "amplify_only_gain"):
            _tensor(name, getattr(self, name), torch.float64, n)
            if not torch.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} must be finite")
        if not 0 < self.random_tolerance <= 1:
            raise ValueError(f"random_tolerance {self.random_tolerance} is not in (0, 1]")
        size = len(self.recalibrated_hardened)
        _tensor("recalibrated_hardened", self.recalibrated_hardened, torch.float64, size)
        _tensor("recalibrated_original", self.recalibrated_original, torch.float64, size)
        if (size == 0) != (len(self.recalibrated_modules) == 0):
            raise ValueError("recalibrated statistics need their BatchNorms, and the reverse")
        for name in ("fragile", "robust"):
            idx = getattr(self, name)
            _tensor(name, idx, torch.int64, None)
            if len(set(idx.tolist())) != len(idx) or ((idx < 0) | (idx >= n)).any():
                raise ValueError(f"{name} must list distinct neuron indices in [0, {n})")
        if set(self.fragile.tolist()) & set(self.robust.tolist()):
            raise ValueError("fragile and robust neurons must be distinct")
        for name in ("compress", "mode", "max_gain"):
            _setting(name, getattr(self, name))

    def mismatch(self, neurons: int | None = None):
        return _neurons(len(self.gain), neurons)


@dataclass(frozen=True)
class OriginalAttacks(Record):
    """The original network attacked on the test split (method.md section 6), image by image, as
    the evaluate stage attacks every variant (`robustness`): correct on the clean image and
    after FGSM at every epsilon of E on the FGSM images, the same under PGD on the PGD images;
    and for the masking check (none of it when the check is off), on its images: the PGD
    accuracy at every epsilon of E and AutoAttack's (correct after APGD-CE and APGD-DLR; the
    calibration of the primary's attack, `robustness.calibration_table`), the checked epsilons
    (`masking.middle_epsilon`'s, then the largest; one when they coincide), and per image correct
    on the clean image and, at each checked epsilon, after PGD, APGD-CE and APGD-DLR; with the
    settings that made them (`MADE_WITH`, which the evaluate stage checks against its own). "PGD"
    is the primary's attack: `pgd_attack` ("pgd" or "apgd-ce") with `pgd_steps` steps and
    `pgd_restarts` restarts."""

    MADE_WITH: ClassVar[tuple[str, ...]] = (
        "epsilons", "label_mode", "batch_size", "seed", "pgd_attack", "pgd_steps", "pgd_restarts",
        "autoattack_steps",
    )  # fmt: skip

    epsilons: list[float]
    label_mode: str
    batch_size: int
    seed: int
    pgd_attack: str
    pgd_steps: int
    pgd_restarts: int
    autoattack_steps: int
    fgsm_clean: torch.Tensor  # bool, n_fgsm
    fgsm_attacked: torch.Tensor  # bool, |E| x n_fgsm
    pgd_clean: torch.Tensor  # bool, n_pgd
    pgd_attacked: torch.Tensor  # bool, |E| x n_pgd
    masking_pgd_accuracy: list[float]  # per epsilon of E, on the check's images (empty: off)
    masking_autoattack_accuracy: list[float]  # the same under AutoAttack (epsilon 0: clean)
    masking_epsilons: list[float]  # the checked epsilons (empty: off)
    masking_clean: torch.Tensor  # bool, n_masking
    masking_pgd: torch.Tensor  # bool, checked epsilons x n_masking
    masking_apgd_ce: torch.Tensor
    masking_apgd_dlr: torch.Tensor

    def check(self) -> None:
        e = len(self.epsilons)
        for attack in ("fgsm", "pgd"):
            n = len(getattr(self, f"{attack}_clean"))
            _tensor(f"{attack}_clean", getattr(self, f"{attack}_clean"), torch.bool, n)
            _tensor(f"{attack}_attacked", getattr(self, f"{attack}_attacked"), torch.bool, e, n)
        n, k = len(self.masking_clean), len(self.masking_epsilons)
        _tensor("masking_clean", self.masking_clean, torch.bool, n)
        for name in ("pgd", "apgd_ce", "apgd_dlr"):
            _tensor(f"masking_{name}", getattr(self, f"masking_{name}"), torch.bool, k, n)
        lengths = {len(self.masking_pgd_accuracy), len(self.masking_autoattack_accuracy)}
        if (
            (n == 0) != (k == 0)
            or lengths not in ({0}, {e})
            or (k == 0) != (lengths == {0})
            or k > 2
        ):
            raise ValueError(
                "a masking check needs images, one or two epsilons, and E's accuracies"
            )
        if any(eps not in self.epsilons or eps <= 0 for eps in self.masking_epsilons):
            raise ValueError(f"checked epsilons {self.masking_epsilons} are not of E+")
        _setting("label_mode", self.label_mode)
        if self.pgd_attack not in PRIMARY_ATTACKS or self.pgd_restarts < 1 or self.pgd_steps < 1:
            raise ValueError(
                f"the primary's attack {self.pgd_attack!r} {self.pgd_steps}x{self.pgd_restarts} "
                f"is not one of {PRIMARY_ATTACKS} with steps and restarts >= 1"
            )

    def made(self) -> dict:
        """How the attacks were made, and on how many images each."""
        return {
            **{key: getattr(self, key) for key in self.MADE_WITH},
            "epsilons": list(self.epsilons),
            "fgsm_images": len(self.fgsm_clean),
            "pgd_images": len(self.pgd_clean),
            "masking_images": len(self.masking_clean),
        }

    def mismatch(self, **wanted):
        """`wanted`: entries of `made` that must hold (the evaluate stage's settings)."""
        made = self.made()
        differ = {k: v for k, v in wanted.items() if made[k] != v}
        if differ:
            held = {k: made[k] for k in differ}
            return f"was made with {held}, not with {differ}"
        return None
