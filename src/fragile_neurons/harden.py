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
so usually uniformly, as robust phi are the smallest) and F is compressed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .config import LABELS
from .records import Gains, Labels, ScanLayer, Targeting


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
    mode: str = "proportional",
    max_gain: float = 4.0,
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
    mode: str = "proportional",
    max_gain: float = 4.0,
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


def run(
    labels: Labels,
    targeting: Targeting,
    layer: ScanLayer,
    *,
    compress: float,
    mode: str,
    max_gain: float,
) -> tuple[Gains, dict]:
    """The harden stage: the hardening's gains and the inverse control's from the labels and
    phi of the label stage and the magnitudes m of the attack stage, and harden.json, which
    says whether those labels were resolved (method.md section 3)."""
    m, phi, label = targeting.magnitude.numpy(), labels.phi.numpy(), labels.label
    settings = {"compress": compress, "mode": mode, "max_gain": max_gain}
    hardened = hardening(m, phi, label, **settings)
    inverse = hardening(m, phi, label, **settings, inverse=True)
    record = Gains(
        gain=torch.from_numpy(hardened.gains),
        inverse_gain=torch.from_numpy(inverse.gains),
        magnitude=targeting.magnitude,
        phi=labels.phi,
        fragile=torch.from_numpy(np.flatnonzero(np.asarray(label) == "fragile")),
        robust=torch.from_numpy(np.flatnonzero(np.asarray(label) == "robust")),
        **settings,
        labels_resolved=labels.resolved,
    )
    summary = {
        "labels_resolved": labels.resolved,
        **summarise(hardened, m),
        **settings,
        "layer": layer.conv_name,
        "inverse": summarise(inverse, m),
    }
    return record, summary


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
