"""FGSM and PGD-Linf in pixel space, exactly as method.md section 1 defines them.

The model is put in eval mode; the loss is the cross-entropy of the logits summed over the
batch, so each image's gradient is its own and results do not depend on the batch size; the
gradient is taken with respect to the input only (``torch.autograd.grad``, the parameters frozen
meanwhile, so no weight gradient is computed at all). FGSM needs one gradient per image for the
whole epsilon grid: the signs are computed once (`gradient_signs`) and every epsilon is a cheap
`fgsm_images` of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .inference import as_input, batch_slices

LABEL_MODES = ("true", "predicted")


def _check(images: torch.Tensor, labels: torch.Tensor, label_mode: str) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode = {label_mode!r}; expected one of {LABEL_MODES}")
    if images.is_floating_point() and (images.min() < 0 or images.max() > 1):
        raise ValueError("images must lie in [0, 1] (pixel units); normalise inside the model")


def _check_epsilon(eps: float) -> None:
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"epsilon = {eps!r}; expected a value in [0, 1] (pixel units)")


def input_gradient(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, label_mode: str = "true"
) -> torch.Tensor:
    """d CE(model(x), y) / dx for one batch on the model's device; y true or predicted."""
    return _gradient_and_logits(model, x, labels, label_mode)[0]


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients within the block. Autograd then skips the weight
    gradients that `torch.autograd.grad(loss, x)` would otherwise compute and discard inside each
    layer's backward (7% of a gradient pass here); the input gradient is the same bit for bit."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _gradient_and_logits(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, label_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with _frozen(model):
        logits = model(x)
        target = logits.argmax(dim=1).detach() if label_mode == "predicted" else labels
        loss = F.cross_entropy(logits, target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def signs_and_logits(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
) -> tuple[torch.Tensor, torch.Tensor]:
    """sign(grad_x CE) for every image, as int8 on the CPU (the whole FGSM grid's gradient), and
    the clean logits of the same forward pass, on the CPU: bit for bit those of a no-grad pass,
    so the clean accuracy costs no second pass."""
    _check(images, labels, label_mode)
    model.eval()
    signs, logits = [], []
    for s in batch_slices(len(images), batch_size):
        x, y = as_input(images[s], device), labels[s].to(device)
        grad, out = _gradient_and_logits(model, x, y, label_mode)
        signs.append(grad.sign().to(torch.int8).cpu())
        logits.append(out.cpu())
    return torch.cat(signs), torch.cat(logits)


def gradient_signs(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
) -> torch.Tensor:
    """sign(grad_x CE) for every image, as int8 on the CPU (the signs of `signs_and_logits`)."""
    return signs_and_logits(
        model, images, labels, batch_size=batch_size, device=device, label_mode=label_mode
    )[0]


def fgsm_images(x: torch.Tensor, signs: torch.Tensor, eps: float) -> torch.Tensor:
    """x'_eps = clip(x + eps * sign, 0, 1) for float x in [0, 1]; eps = 0 returns x unchanged."""
    _check_epsilon(eps)
    if eps == 0:
        return x.clone()
    return (x + eps * signs.to(x.device, x.dtype)).clamp_(0.0, 1.0)


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
) -> torch.Tensor:
    """FGSM images at one epsilon, float in [0, 1] on the CPU."""
    signs = gradient_signs(
        model, images, labels, batch_size=batch_size, device=device, label_mode=label_mode
    )
    return fgsm_images(as_input(images, torch.device("cpu")), signs, eps)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    step_size: float | None = None,
    random_start: bool = True,
    label_mode: str = "true",
) -> torch.Tensor:
    """PGD in the L-infinity ball of radius eps: `steps` signed-gradient steps of `step_size`
    (default eps / 4), each projected back onto the ball and onto [0, 1], from a uniform random
    start in the ball drawn from `generator` for all images at once (batch-size independent).
    Returns float images in [0, 1] on the CPU."""
    _check(images, labels, label_mode)
    _check_epsilon(eps)
    if steps < 1:
        raise ValueError(f"steps = {steps!r}; expected an integer >= 1")
    alpha = eps / 4 if step_size is None else step_size
    x0_all = as_input(images, torch.device("cpu"))
    start = x0_all
    if random_start:
        noise = torch.rand(x0_all.shape, generator=generator).mul_(2 * eps).sub_(eps)
        start = (x0_all + noise).clamp_(0.0, 1.0)
    model.eval()
    out = []
    for s in batch_slices(len(images), batch_size):
        x0, adv, y = x0_all[s].to(device), start[s].to(device), labels[s].to(device)
        if label_mode == "predicted":
            with torch.no_grad():
                y = model(x0).argmax(dim=1)
        for _ in range(steps):
            grad = input_gradient(model, adv, y)
            adv = adv.detach() + alpha * grad.sign()
            adv = (x0 + (adv - x0).clamp(-eps, eps)).clamp(0.0, 1.0)
        out.append(adv.detach().cpu())
    return torch.cat(out)
