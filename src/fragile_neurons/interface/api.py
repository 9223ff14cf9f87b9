"""The method on one's own model: three functions over the pipeline's own primitives.

- `scan_layer`: nodal dropout of every neuron of a convolution (method.md section 3), clean and
  under FGSM (transfer or adaptive), the three impact scores, phi and the labels;
- `attack_share`: how FGSM spreads over that layer's neurons (section 2), T, R, D and m, with the
  controls: the noise share N, the excess share X and the filter gain G;
- `harden_model`: a copy of the model with the hardening gains of a scan folded in (section 5).

Any ``nn.Module`` that maps N x C x H x W images to N x classes logits will do, provided it
normalises its inputs itself: images are float in [0, 1] (or uint8, scaled by 1/255) and every
epsilon is in pixel units, as in the pipeline. Each function checks its inputs and raises a
ValueError that says what is wrong. The model is put in eval mode while it is measured (its mode is
restored afterwards) and runs on `device` (default: where its parameters are; it is moved there).
The layer is a convolution of the model given as the module itself (as Captum takes it), as its
name in `model.named_modules()` or as None (the first convolution the forward pass runs).

The results are frozen dataclasses holding the pipeline's records, with `frame()` for people. One
type for each kind of result: a per-neuron value is a torch tensor of shape [N] (N: the layer's
output channels, the neurons, in channel order); a set of neurons (fragile, robust, antifragile)
is an int64 tensor of their indices, in increasing order; a table is a pandas DataFrame, one row
per neuron. Per-epsilon values stay in the records (`targeting.share` is E x N, a row for each
positive epsilon).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import pandas as pd
import torch
from torch import nn

from .. import API
from ..attacks import dropout, targeting
from ..attacks.adversarial import gradient_signs
from ..network.gates import fold
from ..network.inference import as_input
from ..network.layers import convolutions, find_scan_layer
from ..network.models import Normalize
from ..pipeline import correlate, harden, label
from ..running.config import DEFAULTS, RULES, epsilon_label, parse_epsilon
from ..running.errors import ParamError
from ..storage.records import Labels, ScanLayer, ScanMeasurements, Targeting

__all__ = list(API)  # declared once, in the package's __init__ (which imports this lazily)

Layer = nn.Module | str | None  # a convolution of the model, its name, or None: the first one run


class LabelWarning(UserWarning):
    """The labels of a scan are unresolved: a cut-off that only the neuron index decides, or a
    constant phi (`ScanReport.labels.warnings` holds the same lines)."""


@dataclass(frozen=True)
class HardeningGains:
    """What `ScanReport.gains` gives: the gain g_k of every neuron and how it came about."""

    gains: torch.Tensor  # g_k, [N] float64
    weighting: str  # the weights applied: 'proportional', or 'uniform' (asked for, or fallback)
    capped: torch.Tensor  # [N] bool: True where the cap lowered the gain


@dataclass(frozen=True, repr=False)
class ScanReport:
    """What `scan_layer` found: the layer, the measurements of the intact and every dropped
    network, the labels, and the FGSM targeting of the intact network (whose magnitudes m the
    hardening needs)."""

    layer: ScanLayer  # L, and the module whose output channels are the neurons
    measurements: ScanMeasurements  # correct counts and losses per epsilon (0 first)
    labels: Labels  # impacts, phi (the `score` impact), label and antifragile flag per neuron
    targeting: Targeting  # T, R, D and m at the positive epsilons

    @property
    def fragile(self) -> torch.Tensor:
        """The fragile neurons: int64 indices, increasing (the largest phi)."""
        return _indices(self.labels.members("fragile"))

    @property
    def robust(self) -> torch.Tensor:
        """The robust neurons: int64 indices, increasing (the smallest phi)."""
        return _indices(self.labels.members("robust"))

    @property
    def antifragile(self) -> torch.Tensor:
        """The antifragile neurons (robust, with phi < 0): int64 indices, increasing."""
        return self.labels.antifragile.nonzero().flatten()

    @property
    def phi(self) -> torch.Tensor:
        """Fragility phi per neuron, [N] float64: the `score` impact (`labels.phi`)."""
        return self.labels.phi

    def gains(
        self,
        compress: float = DEFAULTS["compress"],
        mode: str = DEFAULTS["mode"],
        max_gain: float = DEFAULTS["max_gain"],
    ) -> HardeningGains:
        """The hardening gains of these labels (method.md section 5): robust neurons compressed
        to `compress`, the freed magnitude given to the fragile ones, every gain capped."""
        compress, mode, max_gain = _hardening(compress, mode, max_gain)
        rule = harden.hardening(
            self.targeting.magnitude.numpy(),
            self.labels.phi.numpy(),
            self.labels.label,
            compress=compress,
            mode=mode,
            max_gain=max_gain,
        )
        return HardeningGains(
            torch.from_numpy(rule.gains), rule.weighting, torch.from_numpy(rule.capped)
        )

    def frame(self) -> pd.DataFrame:
        """One row per neuron: phi, label, antifragile, the three impacts, the score's loss
        impact, the McNemar p-value, m and the mean attack share D (the pipeline's label.csv).
        `labels.warnings` says why the labels are unresolved, if they are."""
        return correlate.label_table(self.labels, self.targeting)

    def __repr__(self) -> str:
        m = self.measurements
        return (
            f"ScanReport(layer={self.layer.conv_name!r}, neurons={self.layer.channels}, "
            f"images={m.samples}, epsilons={m.epsilon_labels}, score={self.labels.score!r}, "
            f"fragile={len(self.fragile)}, robust={len(self.robust)}, "
            f"resolved={self.labels.resolved})"
        )

    def summary(self) -> str:
        """A few lines for people: the layer, what was measured, the labels and why they are
        unresolved, if they are."""
        m = self.measurements
        lines = [
            f"layer {self.layer.conv_name} ({self.layer.channels} neurons, the channels of "
            f"{self.layer.neuron_name}), {m.samples} images, {m.adversarial} FGSM at epsilon "
            f"{', '.join(m.epsilon_labels)}",
            f"phi: the {self.labels.score} impact; {len(self.fragile)} fragile, "
            f"{len(self.robust)} robust ({len(self.antifragile)} antifragile)",
            f"fragile: {self.fragile.tolist()}",
            f"robust: {self.robust.tolist()}",
        ]
        lines += [f"unresolved: {w}" for w in self.labels.warnings]
        return "\n".join(lines)


@dataclass(frozen=True, repr=False)
class ShareReport:
    """What `attack_share` found: T, R, D and m under FGSM, and the controls. Each property is
    one value per neuron, a float64 tensor of shape [N] (the means over the positive epsilons
    where a value has one per epsilon); `targeting` holds the E x N values per epsilon."""

    layer: ScanLayer
    targeting: Targeting  # T, R, D, m and the controls, E x N or N, at the positive epsilons
    seed: int  # of the random signs

    @property
    def share(self) -> torch.Tensor:
        """Mean D per neuron, [N]: the attack share averaged over the positive epsilons (each
        epsilon's D sums to 1 over the neurons; `targeting.share` is E x N)."""
        return torch.from_numpy(self.targeting.mean_share())

    @property
    def noise_share(self) -> torch.Tensor:
        """Mean N per neuron, [N]: D under seeded random signs of the same size, averaged over
        the positive epsilons (`targeting.noise_share` is E x N)."""
        return torch.from_numpy(self.targeting.mean_noise_share())

    @property
    def excess_share(self) -> torch.Tensor:
        """X per neuron, [N]: mean D / mean N (1: as random noise)."""
        return self.targeting.excess_share

    @property
    def filter_gain(self) -> torch.Tensor:
        """G per neuron, [N]: the filter's norm (times its BatchNorm's scale)."""
        return self.targeting.filter_gain

    @property
    def magnitude(self) -> torch.Tensor:
        """m per neuron, [N]: the neuron's mean absolute output on the clean images."""
        return self.targeting.magnitude

    @property
    def reference_excess(self) -> torch.Tensor:
        """X^ref per neuron, [N]: mean D / mean D^ref (NaN without a reference network)."""
        return self.targeting.reference_excess

    @property
    def placebo_excess(self) -> torch.Tensor:
        """X^plc per neuron, [N]: mean D^ref / mean D^ref2 (NaN without a placebo network)."""
        return self.targeting.placebo_excess

    @property
    def surrogate_excess(self) -> torch.Tensor:
        """X^sur per neuron, [N]: mean D / mean D^sur."""
        return self.targeting.surrogate_excess

    def frame(self) -> pd.DataFrame:
        """One row per neuron: mean D, mean N, X, G, m, X^ref, X^plc and X^sur."""
        return pd.DataFrame(
            {
                "neuron": range(len(self.filter_gain)),
                "share": self.share.numpy(),
                "noise_share": self.noise_share.numpy(),
                "excess_share": self.excess_share.numpy(),
                "filter_gain": self.filter_gain.numpy(),
                "magnitude": self.targeting.magnitude.numpy(),
                "reference_excess": self.reference_excess.numpy(),
                "placebo_excess": self.placebo_excess.numpy(),
                "surrogate_excess": self.surrogate_excess.numpy(),
            }
        )

    def __repr__(self) -> str:
        return (
            f"ShareReport(layer={self.layer.conv_name!r}, neurons={self.layer.channels}, "
            f"epsilons={self.targeting.epsilon_labels}, seed={self.seed})"
        )

    def summary(self) -> str:
        """A few lines for people: the layer, and the neurons the attack aims at most (X)."""
        x = self.excess_share.numpy()
        top = [int(k) for k in x.argsort()[::-1][:5]]
        return "\n".join(
            [
                f"layer {self.layer.conv_name} ({self.layer.channels} neurons), FGSM at epsilon "
                f"{', '.join(self.targeting.epsilon_labels)}, noise seed {self.seed}",
                f"excess share X from {x.min():.3f} to {x.max():.3f} (1: as random noise); "
                f"highest: {', '.join(f'{k} ({x[k]:.3f})' for k in top)}",
            ]
        )


_F = TypeVar("_F", bound=Callable)


def _accepts_layer_name(function: _F) -> _F:
    """`layer_name=`, the former keyword of `layer`, still taken (as scipy's `_rename_parameter`
    keeps an old name); both at once is a TypeError, as Python's own for a doubled argument."""

    @functools.wraps(function)
    def taking(*args, **kwargs):
        if "layer_name" in kwargs:
            if "layer" in kwargs or len(args) > 1:
                raise TypeError(
                    f"{function.__name__}() got the layer twice: pass `layer` (or its former "
                    "name `layer_name`) once"
                )
            kwargs["layer"] = kwargs.pop("layer_name")
        return function(*args, **kwargs)

    return taking  # type: ignore[return-value]


@_accepts_layer_name
def scan_layer(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: Sequence[float | str],
    *,
    adversarial: str = DEFAULTS["adversarial"],
    score: str = DEFAULTS["score"],
    label_fraction: float = DEFAULTS["label_fraction"],
    label_mode: str = DEFAULTS["label_mode"],
    batch_size: int = DEFAULTS["batch_size"],
    device: str | torch.device | None = None,
) -> ScanReport:
    """Drop each neuron of the convolution `layer` in turn (an nn.Conv2d of `model`: the module
    itself or its name; None: the first nn.Conv2d the forward pass runs) and measure the network
    on `images` with `labels`, clean and under FGSM at every epsilon of `epsilons` (pixel units,
    increasing, at least one positive; '8/255' is allowed). `adversarial`: 'transfer' (FGSM
    crafted once on the intact model) or 'adaptive' (crafted anew against each dropped model).
    Fragility phi is the `score` impact ('clean', 'adversarial' or 'difference'); the
    `label_fraction` share of neurons with the largest phi are fragile, the same share with the
    smallest robust. `label_mode`: FGSM on the 'true' labels or the model's 'predicted' ones.
    `layer_name=`, the keyword's former name, is still taken.

    The model must normalise its inputs itself (images are in [0, 1]). Where a BatchNorm2d
    follows the layer, a neuron's output is that BatchNorm's channel. The report's neuron sets
    (`fragile`, `robust`, `antifragile`) are int64 index tensors, its per-neuron values [N]
    tensors."""
    adversarial = _rule("adversarial", adversarial)
    score = _rule("score", score)
    label_mode = _rule("label_mode", label_mode)
    label_fraction = _rule("label_fraction", label_fraction)
    with _attacked(model, layer, images, labels, epsilons, label_mode, batch_size, device) as a:
        args = (model, a.layer, a.x, a.y, a.signs, *dropout.with_clean(a.epsilons, a.names))
        if adversarial == "adaptive":
            measured = dropout.adaptive_scan(*args, label_mode=label_mode, **a.options)
        else:
            measured = dropout.scan(*args, **a.options)
    labelled = label.labelled(measured, score, label_fraction)
    for warning in labelled.warnings:
        # stacklevel 3: the caller of scan_layer, past _accepts_layer_name's wrapper
        warnings.warn(f"unresolved labels: {warning}", LabelWarning, stacklevel=3)
    return ScanReport(a.layer, measured, labelled, a.targeting)


@_accepts_layer_name
def attack_share(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: Sequence[float | str],
    *,
    seed: int = DEFAULTS["seed"],
    label_mode: str = DEFAULTS["label_mode"],
    batch_size: int = DEFAULTS["batch_size"],
    device: str | torch.device | None = None,
    reference: nn.Module | None = None,
    surrogate_iterations: int = DEFAULTS["surrogate_iterations"],
    placebo: nn.Module | None = None,
) -> ShareReport:
    """How an FGSM attack at each positive epsilon of `epsilons` spreads over the neurons of the
    convolution `layer` (the module itself or its name; None: the first one run) on `images`
    with `labels`: T, R, the attack share D and m, with the controls of method.md section 2: the
    noise share N (D under random signs drawn with `seed`, the same perturbation size), the
    excess share X = mean D / mean N (X > 1: more than white noise gives), the filter gain G, the
    surrogate excess X^sur (over a +-1 surrogate with the spatial spectrum of the model's own
    sign perturbation: one random phase field per image, drawn with `seed` + 1, added to every
    channel's phases, then `surrogate_iterations` IAAFT rounds) and, given a `reference`
    network (another network trained the same way, on the same inputs and labels), the
    reference excess X^ref = mean D / mean D^ref, where D^ref is D under the reference's FGSM:
    the primary test that the attack aims at the model's own neurons (NaN without a
    reference), and, given a `placebo` too (a second such network), the placebo excess
    X^plc = mean D^ref / mean D^ref2, the primary's empirical null (NaN without one; a placebo
    needs a reference). The models must normalise their inputs
    themselves (images are in [0, 1]). Every per-neuron value of the report is a float64 tensor
    of shape [N] (D and N averaged over the positive epsilons; `targeting` holds them per
    epsilon). `layer_name=`, the keyword's former name, is still taken."""
    label_mode = _rule("label_mode", label_mode)
    seed = _rule("seed", seed)
    surrogate_iterations = _rule("surrogate_iterations", surrogate_iterations)
    for name, network in (("reference", reference), ("placebo", placebo)):
        if network is not None and not isinstance(network, nn.Module):
            raise ValueError(f"{name} must be an nn.Module or None, not {type(network).__name__}")
    if placebo is not None and reference is None:
        raise ValueError("placebo needs a reference network too (X^plc = mean D^ref / mean D^ref2)")
    with _attacked(
        model, layer, images, labels, epsilons, label_mode, batch_size, device, seed, reference,
        surrogate_iterations, placebo,
    ) as a:  # fmt: skip
        t = a.targeting
    return ShareReport(a.layer, t, seed)


def harden_model(
    model: nn.Module,
    report: ScanReport,
    *,
    compress: float = DEFAULTS["compress"],
    mode: str = DEFAULTS["mode"],
    max_gain: float = DEFAULTS["max_gain"],
) -> nn.Module:
    """A copy of `model` hardened by the labels of `report` (a `scan_layer` of this model):
    robust neurons compressed to `compress`, fragile ones amplified in proportion to phi
    (`mode='proportional'`) or equally ('uniform'), every gain capped at `max_gain`, the gains
    folded into the weights (of the BatchNorm after the layer, where there is one). The model
    itself is left as it is; `report.gains(...)` gives the gains."""
    if not isinstance(report, ScanReport):
        raise ValueError(f"report must be the ScanReport of scan_layer, not {type(report)}")
    problem = report.layer.mismatch(model=model)
    if problem:
        raise ValueError(f"report {problem}")
    gains = report.gains(compress, mode, max_gain).gains
    return fold(model, report.layer, gains)


# --- checks and the shared steps ---------------------------------------------------------------


def _indices(neurons: list[int]) -> torch.Tensor:
    """A set of neurons as the API gives it: an int64 tensor of their indices."""
    return torch.tensor(neurons, dtype=torch.int64)


def _layer_name(model: nn.Module, layer) -> str | None:
    """The name of the scanned layer, given as a module of `model` (found by identity in
    `model.named_modules()`), as its name, or None (the first convolution run)."""
    if layer is None or isinstance(layer, str):
        return layer
    if not isinstance(layer, nn.Module):
        raise ValueError(
            f"layer must be an nn.Conv2d of the model, its name or None, not {type(layer).__name__}"
        )
    name = next((n for n, m in model.named_modules() if m is layer), None)
    lines = repr(layer).splitlines()
    given = lines[0] if len(lines) == 1 else f"{type(layer).__name__}(...)"
    if name is None:
        raise ValueError(
            f"layer = {given} is not a module of this model; pass one of its convolutions, the "
            f"module or its name: {convolutions(model)}"
        )
    if not name:
        raise ValueError(
            f"layer = {given} is the model itself; pass one of its convolutions, the module or its "
            f"name: {convolutions(model)}"
        )
    return name


def _rule(name: str, value):
    """The declared rule of the params check for this argument (config.RULES, as scikit-learn's
    `_parameter_constraints`): the value, normalised, or a ValueError with the check's message
    (`name = value is not allowed; expected ...`)."""
    try:
        return RULES[name](name, value)
    except ParamError as err:
        raise ValueError(err.refusal) from None


def _hardening(compress, mode, max_gain) -> tuple[float, str, float]:
    return _rule("compress", compress), _rule("mode", mode), _rule("max_gain", max_gain)


def _epsilons(epsilons) -> tuple[list[float], list[str]]:
    """The epsilons in pixel units and their names, by the params check's rule for an epsilon
    grid (a list or tuple here)."""
    grid = _rule("epsilons", list(epsilons) if isinstance(epsilons, tuple) else epsilons)
    return [parse_epsilon("epsilons", e) for e in grid], [epsilon_label(e) for e in grid]


@contextmanager
def _measuring(model: nn.Module, device) -> Iterator[torch.device]:
    """The device to run on (default: the model's), the model moved there and in eval mode
    within the block, its mode restored after it."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, not {type(model).__name__}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device = {device!r}; expected e.g. 'cpu' or 'cuda:0'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device = {str(device)!r}, but this torch sees no CUDA device; use 'cpu'")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device = {str(device)!r}; this machine has {torch.cuda.device_count()} CUDA devices"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device = {str(device)!r}, but MPS is not available here; use 'cpu'")
    was_training = model.training
    model.to(device).eval()
    try:
        yield device
    finally:
        model.train(was_training)


def _inputs(
    model: nn.Module, layer, images, labels, device: torch.device
) -> tuple[ScanLayer, torch.Tensor, torch.Tensor]:
    """The images and labels, checked (as torchattacks checks them: shapes, pixel range, label
    range against the model's logits), and the layer they are scanned at (a module of the model,
    its name or None)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty N x C x H x W tensor, got {shape}")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [0, 1] or uint8, not {images.dtype}")
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ValueError(
                "images must lie in [0, 1] (pixel units): normalise inside the model, not before"
            )
    integer = isinstance(labels, torch.Tensor) and not labels.is_floating_point()
    if not integer or labels.dtype == torch.bool or labels.shape != (len(images),):
        given = (
            f"{labels.dtype} {tuple(labels.shape)}"
            if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )
        raise ValueError(f"labels must be {len(images)} integer class indices, got {given}")
    _check_channels(model, images)
    example = as_input(images[:1], device)
    try:
        with torch.no_grad():
            logits = model(example)
    except Exception as err:  # a model that cannot take these images: say which and why
        cause = " ".join(str(err).split())[:200]
        raise ValueError(
            f"the model fails on images of shape {tuple(images.shape)}: {cause}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != 1:
        raise ValueError("the model must return N x classes logits (a tensor) for N images")
    classes = logits.shape[1]
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}) for a model of {classes} logits")
    found = find_scan_layer(model, example, _layer_name(model, layer), key="layer")
    return found, images, labels.to(torch.int64).cpu()


def _check_channels(model: nn.Module, images: torch.Tensor) -> None:
    """ValueError unless the images' channels are what the model's first convolution (and its
    Normalize, which would broadcast a 1-channel batch silently) takes, naming NCHW; images in
    N x H x W x C get the permute that fixes them."""
    wanted = {
        len(m.mean.flatten()) for m in model.modules() if isinstance(m, Normalize)
    } - {1}  # fmt: skip
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None:
        wanted.add(conv.in_channels)
    channels = images.shape[1]
    if not wanted or wanted == {channels}:
        return
    expected = " or ".join(str(c) for c in sorted(wanted))
    shape = tuple(images.shape)
    if images.shape[3] in wanted:
        raise ValueError(
            f"images of shape {shape} look like N x H x W x C (channels last); the model takes "
            f"N x C x H x W (NCHW) with {expected} channels: pass images.permute(0, 3, 1, 2)"
        )
    raise ValueError(
        f"images of shape {shape} have {channels} channels; the model takes N x C x H x W "
        f"(NCHW) with C = {expected}"
    )


class _Attack(NamedTuple):
    """What both measurements start from: the checked inputs, the layer, the FGSM signs of the
    intact model and the attack stage's targeting (T, R, D, m) at the positive epsilons."""

    layer: ScanLayer
    x: torch.Tensor
    y: torch.Tensor
    epsilons: list[float]
    names: list[str]
    options: dict  # batch_size and device, as every primitive takes them
    signs: torch.Tensor
    targeting: Targeting


@contextmanager
def _attacked(
    model,
    layer,
    images,
    labels,
    epsilons,
    label_mode,
    batch_size,
    device,
    seed=0,
    reference=None,
    surrogate_iterations=DEFAULTS["surrogate_iterations"],
    placebo=None,
) -> Iterator[_Attack]:
    """The inputs checked and the model attacked by FGSM, as the attack stage does, inside
    `_measuring` (the model on its device, in eval mode, its mode restored afterwards); the
    `reference` and `placebo` networks' FGSM (None: none) and the surrogate give D^ref, D^ref2
    and D^sur."""
    eps, names = _epsilons(epsilons)
    batch_size = _rule("batch_size", batch_size)
    with _measuring(model, device) as where:
        found, x, y = _inputs(model, layer, images, labels, where)
        options = {"batch_size": batch_size, "device": where}
        signs = gradient_signs(model, x, y, label_mode=label_mode, **options)
        reference_signs = placebo_signs = None
        if reference is not None:
            with _measuring(reference, where):
                reference_signs = gradient_signs(reference, x, y, label_mode=label_mode, **options)
        if placebo is not None:
            with _measuring(placebo, where):
                placebo_signs = gradient_signs(placebo, x, y, label_mode=label_mode, **options)
        surrogate = targeting.surrogate_signs(  # of the model's own signs s = sign(grad)
            signs, seed + targeting.SURROGATE_SEED_OFFSET, surrogate_iterations
        )
        positive = [(e, n) for e, n in zip(eps, names, strict=True) if e > 0]
        share = targeting.targeting(
            model, found, x, signs, [e for e, _ in positive], [n for _, n in positive],
            reference_signs=reference_signs, placebo_signs=placebo_signs, surrogate=surrogate,
            noise_seed=seed, **options,
        )  # fmt: skip
        yield _Attack(found, x, y, eps, names, options, signs, share)
