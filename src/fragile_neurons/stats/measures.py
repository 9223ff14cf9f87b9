"""Curve measures (method.md section 6): one network under one attack, image by image, and what
is measured on it.

A `Curve` holds, per image, whether the network classified it correctly on the clean image and
after the attack at every epsilon of E (at epsilon 0, the clean image). The measures: accuracy per
epsilon; AUC, the trapezoid of the accuracy-epsilon curve over E divided by the epsilon range;
AUC+, the same over E+ only (the accuracy there when E+ holds one epsilon); relative AUC, AUC+
over the clean accuracy on the same images. Each is a mean over images of a per-image value
(`image_table`) except the relative AUC, a ratio of two such means, so a bootstrap resample of
the images is a weighted mean of the table's rows (`paired`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MEASURES = ("auc", "auc_plus", "relative_auc")  # besides the accuracy per epsilon


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


def number(value) -> float | None:
    """A float for JSON: None where undefined (NaN)."""
    value = float(value)
    return value if np.isfinite(value) else None


def measures(curve: Curve, epsilons) -> dict:
    """A curve's clean accuracy, AUC, AUC+ and relative AUC (None when no image is correct on
    clean inputs), as floats."""
    values = measures_of(image_table(curve, epsilons).mean(axis=0))
    return {name: number(value) for name, value in values.items()}
