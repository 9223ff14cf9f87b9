"""The label stage's pictures: the impact heatmap (impact.png) and the scanned layer's filters
coloured by label (filters.png)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..running.config import LABELS  # noqa: E402

if TYPE_CHECKING:
    from torch import nn

    from ..storage.records import Labels, ScanMeasurements

COLOURS = {
    "fragile": "#d62728",
    "robust": "#1f77b4",
    "neutral": "#9e9e9e",
    "antifragile": "#2ca02c",
}


def _colour(label: str, antifragile: bool) -> str:
    return COLOURS["antifragile" if antifragile else label]


def _legend_handles(antifragile) -> list[Patch]:
    names = [*LABELS] + (["antifragile"] if np.any(antifragile) else [])
    text = {"antifragile": "robust, antifragile (φ < 0)"}
    return [Patch(color=COLOURS[n], label=text.get(n, n)) for n in names]


def impact_figure(measurements: ScanMeasurements, labelled: Labels, title: str):
    """Heatmaps of the accuracy drop when neuron k (row) is dropped: the clean impact c_k (epsilon
    0, which defines phi and the labels) on a colour scale of its own, beside the adversarial
    impacts a_k(eps) at each positive epsilon on theirs (tens of times larger: on one scale the
    clean column would look blank). Row labels are coloured by the neuron's label."""
    impact, epsilon_labels = measurements.impact(), measurements.epsilon_labels
    labels, antifragile = labelled.label, labelled.antifragile.tolist()
    n, e = impact.shape
    height = 1.6 + 0.16 * n
    fig, axes = plt.subplots(
        1, 2, figsize=(3.4 + 0.75 * e, height), sharey=True,
        gridspec_kw={"width_ratios": [1, max(e - 1, 1)]},
    )  # fmt: skip
    step = max(1, math.ceil(n / 64))
    for ax, columns, names in (
        (axes[0], impact[:, :1], ["0\n(clean)"]),
        (axes[1], impact[:, 1:], list(epsilon_labels[1:])),
    ):
        limit = max(float(np.abs(columns).max()) if columns.size else 0.0, 1e-3)
        image = ax.imshow(
            columns, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest"
        )
        ax.set_xticks(range(len(names)), names)
        fig.colorbar(image, ax=ax, shrink=0.8, pad=0.03)
    axes[0].set_yticks(range(0, n, step), [str(k) for k in range(0, n, step)], fontsize=7)
    for tick, k in zip(axes[0].get_yticklabels(), range(0, n, step), strict=True):
        tick.set_color(_colour(labels[k], antifragile[k]))
        tick.set_fontweight("normal" if labels[k] == "neutral" else "bold")
    axes[0].set_ylabel("neuron (coloured by label)")
    axes[0].set_title("clean impact c\n(defines phi)", fontsize=9)
    axes[1].set_title("adversarial impact a(eps)\n(its own scale)", fontsize=9)
    axes[1].set_xlabel("epsilon")
    fig.suptitle(f"{title}\naccuracy drop when the neuron is dropped", fontsize=10)
    fig.legend(
        handles=_legend_handles(antifragile), loc="lower center", ncol=4, fontsize=7, frameon=False
    )
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1))
    return fig


def _picture(weight: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A filter (C x kh x kw) as an image scaled to [0, 1] on its own range: RGB for three
    input channels, grey for one (or for the mean over the input channels otherwise)."""
    w = weight.transpose(1, 2, 0) if weight.shape[0] == 3 else weight.mean(axis=0)
    span = w.max() - w.min()
    w = (w - w.min()) / span if span > 0 else np.full_like(w, 0.5)
    return w, (None if w.ndim == 3 else "gray")


def filters_figure(conv: nn.Conv2d, labelled: Labels, title: str):
    """The filters of the scanned layer `conv` (N x C x kh x kw) in a grid, framed in the colour
    of their label and titled 'k: phi'. Each filter is scaled to its own range."""
    weights = np.asarray(conv.weight.detach().numpy(), dtype=float)
    labels, antifragile, phi = labelled.label, labelled.antifragile.tolist(), labelled.phi.tolist()
    n = len(weights)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.15 * cols + 0.4, 1.3 * rows + 1.0), squeeze=False
    )
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        picture, cmap = _picture(weights[k])
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        colour = _colour(labels[k], antifragile[k])
        for spine in ax.spines.values():
            spine.set_color(colour)
            spine.set_linewidth(1 if labels[k] == "neutral" else 3.5)
        ax.set_title(f"{k}: {phi[k]:+.3f}", fontsize=7, color=colour)
    note = "RGB" if weights.shape[1] == 3 else "grey" if weights.shape[1] == 1 else "grey, mean"
    fig.suptitle(
        f"{title}\n(each filter on its own scale, {note}; panel title: neuron: φ)", fontsize=9
    )
    fig.legend(
        handles=_legend_handles(antifragile), loc="lower center", ncol=4, fontsize=7, frameon=False
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
