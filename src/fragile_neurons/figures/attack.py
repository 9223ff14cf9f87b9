"""The attack stage's picture, examples.png: a few test images, clean and at each epsilon, with
the model's predictions."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class Examples:
    """A few scan images, clean and at each positive epsilon, with the model's predictions."""

    images: torch.Tensor  # E x n x C x H x W in [0, 1]; row 0 the clean images
    predictions: torch.Tensor  # E x n
    labels: torch.Tensor  # n true labels
    classes: list[str]
    epsilons: list[float]
    epsilon_labels: list[str]


def short_name(name: str) -> str:
    """A class name short enough for a panel title ('7 - seven' -> '7')."""
    return name.split(" - ")[0]


def examples_figure(examples: Examples):
    """Rows: epsilons (epsilon 0 is the clean images); columns: images, their true class below.
    Each panel is titled with the predicted class, green when right and red when wrong."""
    images, predictions, labels = examples.images, examples.predictions, examples.labels
    classes, epsilons, epsilon_labels = examples.classes, examples.epsilons, examples.epsilon_labels
    rows, cols = predictions.shape
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.15 * cols + 0.9, 1.25 * rows + 0.5), squeeze=False
    )
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            picture = images[r, c].permute(1, 2, 0).clamp(0, 1).numpy()
            if picture.shape[2] == 1:
                ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(picture)
            right = bool(predictions[r, c] == labels[c])
            ax.set_title(
                short_name(classes[int(predictions[r, c])]),
                color="tab:green" if right else "tab:red",
                fontsize=9,
                pad=2,
            )
            ax.set_xticks([])
            ax.set_yticks([])
        row = "clean" if epsilons[r] == 0 else f"ε = {epsilon_labels[r]}"
        axes[r, 0].set_ylabel(row, fontsize=9)
    for c in range(cols):
        axes[-1, c].set_xlabel(f"true: {short_name(classes[int(labels[c])])}", fontsize=9)
    fig.suptitle("FGSM examples: predicted class (green right, red wrong)", fontsize=10)
    fig.tight_layout()
    return fig
