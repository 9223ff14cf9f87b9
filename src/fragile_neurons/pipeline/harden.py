"""The harden stage: compress robust neurons, amplify fragile ones proportionally (method.md 5).

With m_k the neurons' mean output magnitudes, F the fragile and R the robust set:
- every k in R is compressed, g_k = c (`harden.compress`, 0 <= c <= 1);
- the freed magnitude M = (1 - c) * sum_{k in R} m_k goes to F: g_k = 1 + M * w_k / m_k, with
  w_k = phi_k / sum_{j in F} phi_j (`proportional`; uniform weights when any phi_j <= 0 in F)
  or w_k = 1 / |F| (`uniform`);
- every gain is capped at `harden.max_gain`; all other neurons keep g_k = 1.
Without the cap sum_k g_k m_k = sum_k m_k. A fragile neuron that never fires (m_k = 0) would need
an infinite gain; it gets the cap, which changes nothing since its output is zero.

The inverse control swaps the roles: R is amplified by the same rule (weighted by its own phi,
so usually uniformly, as robust phi are the smallest) and F is compressed. The random controls
(`random_gains`) apply the same rule to random neuron sets; the evaluate stage attacks them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..datasets.splits import scan_set
from ..figures.label import filters_figure
from ..network.gates import fold
from ..network.inference import as_input
from ..network.models import load_trained, save_checkpoint
from ..network.recalibration import later_batchnorms, recalibrate, statistics
from ..running.config import LABELS
from ..running.runtime import select_device
from ..storage import io, paths
from ..storage.records import Gains, Labels, ScanLayer, ScanMeasurements, Targeting


@dataclass(frozen=True)
class Hardening:
    """One gain vector and how it came about."""

    gains: np.ndarray  # g_k, one per neuron
    weighting: str  # the weights applied: "proportional", or "uniform" (asked for, or the fallback)
    capped: np.ndarray  # True where the cap lowered the gain


def gains(
    magnitude,
    phi,
    amplified,
    compressed,
    *,
    compress: float,
    mode: str,
    max_gain: float,
) -> Hardening:
    """The gains of method.md section 5 for the neuron sets `amplified` (F) and `compressed`
    (R), given as index lists; the weights are the `phi` of the amplified neurons. The settings
    are params the check has already judged (harden.compress, harden.mode, harden.max_gain)."""
    m = np.asarray(magnitude, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    amplified = np.asarray(amplified, dtype=np.int64)
    compressed = np.asarray(compressed, dtype=np.int64)
    if m.ndim != 1 or phi.shape != m.shape:
        raise ValueError(
            f"magnitude and phi must be vectors of one length, got {m.shape}, {phi.shape}"
        )
    if not (np.isfinite(m).all() and (m >= 0).all()):
        raise ValueError("magnitudes must be finite and >= 0")
    if not np.isfinite(phi).all():
        raise ValueError("phi must be finite")
    for name, idx in (("amplified", amplified), ("compressed", compressed)):
        if (
            idx.ndim != 1
            or len(set(idx.tolist())) != len(idx)
            or ((idx < 0) | (idx >= len(m))).any()
        ):
            raise ValueError(f"{name} must list distinct neuron indices in [0, {len(m)})")
    if set(amplified.tolist()) & set(compressed.tolist()):
        raise ValueError("a neuron cannot be both amplified and compressed")

    g = np.ones_like(m)
    g[compressed] = compress
    freed = (1.0 - compress) * m[compressed].sum()
    weighting = mode
    if mode == "proportional" and (phi[amplified] <= 0).any():
        weighting = "uniform"  # phi is not a usable weight: method.md's fallback
    if weighting == "proportional":
        w = phi[amplified] / phi[amplified].sum()
    else:
        w = np.full(len(amplified), 1.0 / max(len(amplified), 1))
    give = freed * w
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.where(give > 0, give / m[amplified], 0.0)  # inf for m_k = 0: the cap applies
    g[amplified] = 1.0 + extra
    capped = g > max_gain
    return Hardening(gains=np.minimum(g, max_gain), weighting=weighting, capped=capped)


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    unknown = sorted(set(labels.tolist()) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; expected {LABELS}")
    return labels


def hardening(
    magnitude,
    phi,
    labels,
    *,
    compress: float,
    mode: str,
    max_gain: float,
    inverse: bool = False,
) -> Hardening:
    """Hardening gains from per-neuron labels (fragile | robust | neutral): fragile amplified,
    robust compressed; `inverse=True` swaps the roles (the inverse control)."""
    labels = _check_labels(labels)
    fragile, robust = np.flatnonzero(labels == "fragile"), np.flatnonzero(labels == "robust")
    amplified, compressed = (robust, fragile) if inverse else (fragile, robust)
    return gains(
        magnitude, phi, amplified, compressed, compress=compress, mode=mode, max_gain=max_gain
    )


@dataclass(frozen=True)
class Draws:
    """The random controls: `gains` (draws x N) and, per draw, its moved magnitude over the
    hardened network's, M'/M (`ratio`); `matched`, whether every draw lies within the tolerance
    (False: too few candidates qualified, and the closest were kept)."""

    gains: torch.Tensor
    ratio: torch.Tensor
    matched: bool


CANDIDATES = 1000  # candidate draws per kept draw before the closest are kept instead


def moved_ratio(magnitude, compressed, compress: float, moved: float) -> float:
    """M'/M: the magnitude (1 - c) * sum_{k in R'} m_k that compressing R' frees, over the
    hardened network's M; 1 where M is 0 (c = 1: nothing moves, for any draw)."""
    freed = (1.0 - compress) * float(np.asarray(magnitude, dtype=np.float64)[compressed].sum())
    return freed / moved if moved > 0 else 1.0


def random_gains(
    magnitude: torch.Tensor,
    phi: torch.Tensor,
    fragile: torch.Tensor,
    robust: torch.Tensor,
    draws: int,
    generator: torch.Generator,
    *,
    compress: float,
    mode: str,
    max_gain: float,
    tolerance: float | None = None,
) -> Draws:
    """`draws` random controls (method.md section 6): each candidate takes disjoint random
    neuron sets F' and R' of the sizes of F (`fragile`) and R (`robust`) and applies the
    hardening's rule to them (`gains`): R' compressed by c, the freed magnitude M' given to F'
    with the hardened network's fragile weights (F's `phi`) in random order, the same cap. Total
    magnitude is conserved as for the hardened network; nothing is chosen by score or label.

    With a `tolerance`, the moved magnitude is matched too: a candidate is kept only if
    |M'/M - 1| <= tolerance, M the hardened network's (seeded rejection sampling, `generator`
    drawing every candidate); when `CANDIDATES` x `draws` candidates give fewer than `draws`,
    the closest of the others fill the rest and `matched` is False. None: every candidate is
    kept (the unmatched controls)."""
    n, n_fragile, n_robust = len(magnitude), len(fragile), len(robust)
    m, phi_fragile = magnitude.numpy(), phi[fragile]
    moved = (1.0 - compress) * float(m[robust.numpy()].sum())
    rule = {"compress": compress, "mode": mode, "max_gain": max_gain}
    kept, others = [], []  # (ratio, gains) of the kept candidates and of the rejected ones
    for _ in range(draws * (1 if tolerance is None else CANDIDATES)):
        chosen = torch.randperm(n, generator=generator)
        amplified, compressed = chosen[:n_fragile], chosen[n_fragile : n_fragile + n_robust]
        weights = torch.zeros(n, dtype=torch.float64)  # F's phi, in random order
        weights[amplified] = phi_fragile[torch.randperm(n_fragile, generator=generator)]
        ratio = moved_ratio(m, compressed.numpy(), compress, moved)
        if tolerance is not None and abs(ratio - 1.0) > tolerance:
            others.append((ratio, amplified, compressed, weights))
            continue
        drawn = gains(m, weights.numpy(), amplified.numpy(), compressed.numpy(), **rule)
        kept.append((ratio, torch.from_numpy(drawn.gains)))
        if len(kept) == draws:
            break
    matched = len(kept) == draws
    others.sort(key=lambda o: abs(o[0] - 1.0))  # stable: the earlier of equally close first
    for ratio, amplified, compressed, weights in others[: draws - len(kept)]:
        drawn = gains(m, weights.numpy(), amplified.numpy(), compressed.numpy(), **rule)
        kept.append((ratio, torch.from_numpy(drawn.gains)))
    return Draws(
        gains=torch.stack([g for _, g in kept]),
        ratio=torch.tensor([r for r, _ in kept], dtype=torch.float64),
        matched=matched,
    )


def arms(gain: np.ndarray, fragile, robust, compress: float) -> dict[str, np.ndarray]:
    """The one-sided arms of method.md section 5: `compress_only`, g_k = c on R and 1 elsewhere;
    `amplify_only`, the hardened network's gains `gain` on F and 1 elsewhere."""
    compress_only = np.ones_like(gain)
    compress_only[np.asarray(robust, dtype=np.int64)] = compress
    amplify_only = np.ones_like(gain)
    f = np.asarray(fragile, dtype=np.int64)
    amplify_only[f] = gain[f]
    return {"compress_only": compress_only, "amplify_only": amplify_only}


def summarise(result: Hardening, magnitude) -> dict:
    """What a gain vector does: neurons compressed (g < 1) and amplified (g > 1), the largest
    gain, whether the cap lowered any gain, and sum g m / sum m (1 when conserved)."""
    g, m = result.gains, np.asarray(magnitude, dtype=np.float64)
    total = m.sum()
    return {
        "compressed": int((g < 1).sum()),
        "amplified": int((g > 1).sum()),
        "max_gain_applied": float(g.max()),
        "capped": bool(result.capped.any()),
        "magnitude_ratio": float((g * m).sum() / total) if total > 0 else float("nan"),
        "weighting": result.weighting,
    }


def harden_gains(
    labels: Labels,
    targeting: Targeting,
    layer: ScanLayer,
    random_controls: int,
    generator: torch.Generator,
    tolerance: float,
    *,
    compress: float,
    mode: str,
    max_gain: float,
) -> tuple[Gains, dict]:
    """The hardening's gains, the inverse control's, the one-sided arms'
    (`arms`) and `random_controls` random controls' (drawn by `generator`, matched on the moved
    magnitude within `tolerance`: `random_gains`) from the labels and phi of the label stage and the
    magnitudes m of the attack stage, and harden.json, which says whether those
    labels were resolved (method.md section 3)."""
    m, phi, label = targeting.magnitude.numpy(), labels.phi.numpy(), labels.label
    settings = {"compress": compress, "mode": mode, "max_gain": max_gain}
    hardened = hardening(m, phi, label, **settings)
    inverse = hardening(m, phi, label, **settings, inverse=True)
    fragile = torch.from_numpy(np.flatnonzero(np.asarray(label) == "fragile"))
    robust = torch.from_numpy(np.flatnonzero(np.asarray(label) == "robust"))
    sets = (targeting.magnitude, labels.phi, fragile, robust)
    draws = random_gains(*sets, random_controls, generator, **settings, tolerance=tolerance)
    one_sided = arms(hardened.gains, fragile, robust, compress)
    record = Gains(
        gain=torch.from_numpy(hardened.gains),
        inverse_gain=torch.from_numpy(inverse.gains),
        magnitude=targeting.magnitude,
        phi=labels.phi,
        fragile=fragile,
        robust=robust,
        **settings,
        labels_resolved=labels.resolved,
        random_gain=draws.gains,
        random_ratio=draws.ratio,
        random_matched=draws.matched,
        random_tolerance=tolerance,
        compress_only_gain=torch.from_numpy(one_sided["compress_only"]),
        amplify_only_gain=torch.from_numpy(one_sided["amplify_only"]),
    )
    summary = {
        "labels_resolved": labels.resolved,
        **summarise(hardened, m),
        **settings,
        "layer": layer.conv_name,
        "inverse": summarise(inverse, m),
    }
    return record, summary


def recalibrated(
    gains: Gains,
    model: nn.Module,
    hardened: nn.Module,
    layer: ScanLayer,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> Gains:
    """`gains` with the hardened+recalibrated arm (method.md section 5): the BatchNorms after L
    in `model` and their statistics re-estimated on the scan set's `images`, of the `hardened`
    network (`model` with `gains.gain` folded in) and of `model` itself, its baseline
    (`recalibration`). Unchanged for a network without a BatchNorm after L: the arm is absent."""
    names = later_batchnorms(model, layer, as_input(images[:1], device))
    if not names:
        return gains
    stats = {
        name: statistics(recalibrate(network, names, images, batch_size, device), names)
        for name, network in (("hardened", hardened), ("original", model))
    }
    return dataclasses.replace(
        gains,
        recalibrated_modules=names,
        recalibrated_hardened=stats["hardened"],
        recalibrated_original=stats["original"],
    )


def table(gains: Gains, labels: Labels) -> pd.DataFrame:
    """gains.csv: per neuron, its label, m, phi, gain and inverse gain."""
    return pd.DataFrame(
        {
            "neuron": np.arange(len(gains.gain)),
            "label": labels.label,
            "magnitude": gains.magnitude.numpy(),
            "phi": gains.phi.numpy(),
            "gain": gains.gain.numpy(),
            "inverse_gain": gains.inverse_gain.numpy(),
        }
    )


# --- the stage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the harden stage reads of params.yaml: the rule (harden.compress, harden.mode,
    harden.max_gain), the random controls (harden.random_controls drawn with `seed`, matched within
    harden.match_tolerance), batch_size; and where it runs."""

    compress: float
    mode: str
    max_gain: float
    random_controls: int
    match_tolerance: float
    seed: int
    batch_size: int
    device: torch.device

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        cfg = params["harden"]
        return cls(
            compress=cfg["compress"],
            mode=cfg["mode"],
            max_gain=cfg["max_gain"],
            random_controls=cfg["random_controls"],
            match_tolerance=cfg["match_tolerance"],
            seed=params["seed"],
            batch_size=params["batch_size"],
            device=select_device(params["device"]),
        )

    def rule(self) -> dict:
        return {"compress": self.compress, "mode": self.mode, "max_gain": self.max_gain}


class Inputs(NamedTuple):
    model: nn.Module  # f
    spec: dict  # what rebuilds it, saved with the hardened network
    layer: ScanLayer  # L
    labels: Labels
    targeting: Targeting  # m, the magnitudes
    images: torch.Tensor  # the scan set S, on which the recalibrated arm re-estimates statistics


class Hardened(NamedTuple):
    gains: Gains
    summary: dict  # harden.json
    network: nn.Module  # f with the gains folded into L
    spec: dict
    labels: Labels  # for gains.csv and filters.png
    layer: ScanLayer
    model: nn.Module  # f, whose filters filters.png draws


def load(ctx, settings: Settings) -> Inputs:
    """f, the scanned layer (of f), the labels and the targeting (their neurons checked against
    the layer's), and S: as many images of the selection split as the scan measured."""
    model, spec = load_trained(ctx.name, ctx.run)
    layer = ScanLayer.load(paths.layer_record(ctx.name), model=model)
    labels = Labels.load(paths.labels_record(ctx.name), neurons=layer.channels)
    targeting = Targeting.load(paths.targeting_record(ctx.name), neurons=layer.channels)
    samples = ScanMeasurements.load(paths.scan_record(ctx.name), neurons=layer.channels).samples
    selection = io.load_split(paths.prepared(ctx.name, "selection"), ctx.run["dataset"])
    images, _ = scan_set(selection, samples)
    return Inputs(model, spec, layer, labels, targeting, images)


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> Hardened:
    """The gains (`harden_gains`, the random controls drawn by a generator seeded with `seed`),
    the hardened network, folded once, and the recalibrated arm's statistics."""
    model, spec, layer, labels, targeting, images = inputs
    generator = torch.Generator().manual_seed(settings.seed)
    gains, summary = harden_gains(
        labels, targeting, layer, settings.random_controls, generator, settings.match_tolerance,
        **settings.rule(),
    )  # fmt: skip
    network = fold(model, layer, gains.gain)
    gains = recalibrated(gains, model, network, layer, images, settings.batch_size, settings.device)
    return Hardened(gains, summary, network, spec, labels, layer, model)


def write(ctx, outputs: Hardened) -> None:
    """models/<run>/hardened.pt, data/harden/<run>/gains.pt, and for people (data/views/<run>/
    harden/) harden.json, gains.csv and filters.png (the filters by label)."""
    save_checkpoint(paths.hardened(ctx.name), outputs.network, outputs.spec)
    outputs.gains.save(paths.gains_record(ctx.name))
    io.write_csv(paths.view(ctx.name, "harden", "gains.csv"), table(outputs.gains, outputs.labels))
    io.write_json(paths.details(ctx.name, "harden"), outputs.summary)
    layer, labels = outputs.layer, outputs.labels
    title = f"{ctx.name}: {layer.conv_name}, phi = {labels.score} impact"
    figure = filters_figure(layer.conv(outputs.model), labels, title)
    io.save_figure(paths.view(ctx.name, "harden", "filters.png"), figure)
