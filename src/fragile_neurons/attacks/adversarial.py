"""Adversarial examples: FGSM and PGD-Linf in pixel space, exactly as method.md section 1 defines
them, and what FGSM does to a model at every epsilon of a grid (`fgsm_sweep`).

The model is put in eval mode; the loss is the cross-entropy of the logits summed over the
batch, so each image's gradient is its own and results do not depend on the batch size; the
gradient is taken with respect to the input only (``torch.autograd.grad``, the parameters frozen
meanwhile, so no weight gradient is computed at all). FGSM needs one gradient per image for the
whole epsilon grid: the signs are computed once (`signs_and_logits`, whose forward pass also gives
the clean logits) and every epsilon is a cheap `fgsm_images` of them, made batch by batch, so the
grid never sits in memory at once. At epsilon 0 the adversarial images are the clean images bit
for bit. Given another model's signs, a sweep is a transferred attack.

The public functions check their inputs as torchattacks does (shapes, labels, pixel range,
epsilon range), so a caller outside the pipeline gets a clear ValueError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..network.inference import accuracy_and_loss, as_input, batch_slices, logits_of
from ..running.config import LABEL_MODES, PRIMARY_ATTACKS, epsilon_label
from ..storage.records import FGSMSweep


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
    layer's backward; the input gradient is the same bit for bit."""
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


def gradient_batches(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """grad_x CE (float, before the sign) and the clean logits of the same forward pass, batch by
    batch of `batch_size` images in order, on `device` (`label_mode` as `_gradient_and_logits`):
    what `signs_and_logits` takes the same keyword options for."""
    _check(images, labels, label_mode)
    model.eval()
    for s in batch_slices(len(images), batch_size):
        x, y = as_input(images[s], device), labels[s].to(device)
        yield _gradient_and_logits(model, x, y, label_mode)


def signs_and_logits(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """sign(grad_x CE) for every image, as int8 on the CPU (the whole FGSM grid's gradient), and
    the clean logits of the same forward pass, on the CPU: bit for bit those of a no-grad pass,
    so the clean accuracy costs no second pass. `options`: `gradient_batches`'s (batch_size,
    device, label_mode)."""
    signs, logits = [], []
    for grad, out in gradient_batches(model, images, labels, **options):
        signs.append(grad.sign().to(torch.int8).cpu())
        logits.append(out.cpu())
    return torch.cat(signs), torch.cat(logits)


def gradient_signs(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **options):
    """sign(grad_x CE) for every image, as int8 on the CPU: the signs of `signs_and_logits`,
    which takes the same keyword `options` (batch_size, device, label_mode)."""
    return signs_and_logits(model, images, labels, **options)[0]


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


def pgd_correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    steps: int,
    seed: int,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
) -> torch.Tensor:
    """Per image (bool, on the CPU), whether `model` still classifies it correctly after white-box
    `pgd` at `eps` from the random start of a generator seeded with `seed`: the same points for
    every model, and the starts of the first k images do not depend on how many follow. The PGD
    of the evaluate stage's curves and of its masking check."""
    adversarial = pgd(
        model,
        images,
        labels,
        eps,
        steps=steps,
        batch_size=batch_size,
        device=device,
        generator=torch.Generator().manual_seed(seed),
        label_mode=label_mode,
    )
    return logits_of(model, adversarial, batch_size, device).argmax(dim=1) == labels


def apgd_ce(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    label_mode: str = "true",
    rho: float = 0.75,
) -> torch.Tensor:
    """APGD-CE in the L-infinity ball of radius eps (Croce and Hein, ICML 2020), step for step as
    torchattacks.APGD(norm="Linf", loss="ce", n_restarts=1, eot_iter=1) runs one restart: step
    size 2 eps halved per image at the checkpoints (every 0.22 `steps`, the interval shrinking by
    0.03 `steps` down to 0.06 `steps`) where the loss oscillated (fewer than `rho` of the steps
    since the last checkpoint raised it) or did not improve, the iterate then reset to the best;
    momentum 0.75. The start, x + eps t / max|t| for t uniform in [-1, 1]^d, is drawn from
    `generator` for all images at once (so batch-size independent; torchattacks draws it per batch
    of the images it attacks). Returns per image the last iterate that was misclassified (the
    start where none was), float in [0, 1] on the CPU: what torchattacks returns for an image it
    attacks."""
    _check(images, labels, label_mode)
    _check_epsilon(eps)
    if steps < 1:
        raise ValueError(f"steps = {steps!r}; expected an integer >= 1")
    x0_all = as_input(images, torch.device("cpu"))
    t_all = 2 * torch.rand(x0_all.shape, generator=generator) - 1
    model.eval()
    out = []
    for s in batch_slices(len(images), batch_size):
        x, y = x0_all[s].to(device), labels[s].to(device)
        if label_mode == "predicted":
            with torch.no_grad():
                y = model(x).argmax(dim=1)
        with _frozen(model):
            out.append(_apgd_ce_batch(model, x, y, eps, steps, t_all[s].to(device), rho).cpu())
    return torch.cat(out)


def _ce_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), [x])
    return grad.detach(), logits.detach(), loss.detach()


def _apgd_ce_batch(model, x, y, eps, steps, t, rho):
    """One batch of `apgd_ce`, the order of operations torchattacks' `attack_single_run`'s."""
    n = x.shape[0]
    steps_2, steps_min, size_decr = (
        max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    )  # fmt: skip
    scale = t.reshape(n, -1).abs().max(dim=1, keepdim=True)[0].reshape(-1, 1, 1, 1)
    x_adv = (x + eps * torch.ones(n, 1, 1, 1, device=x.device) * t / scale).clamp(0.0, 1.0)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    loss_steps = torch.zeros(steps, n)
    grad, logits, loss = _ce_gradient(model, x_adv, y)
    grad_best = grad.clone()
    acc = logits.argmax(1) == y
    loss_best = loss.clone()
    step_size = eps * torch.ones(n, 1, 1, 1, device=x.device) * 2.0
    x_adv_old = x_adv.clone()
    k, counter3 = steps_2, 0
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(n, dtype=torch.bool)
    with torch.no_grad():
        for i in range(steps):
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            x1 = x_adv + step_size * torch.sign(grad)
            x1 = torch.clamp(torch.min(torch.max(x1, x - eps), x + eps), 0.0, 1.0)
            x1 = torch.clamp(
                torch.min(torch.max(x_adv + (x1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps),
                0.0,
                1.0,
            )
            x_adv = x1 + 0.0
            grad, logits, loss = _ce_gradient(model, x_adv, y)
            pred = logits.argmax(1) == y
            acc = acc & pred
            x_best_adv[~pred] = x_adv[~pred] + 0.0
            loss_steps[i] = loss.cpu()
            better = loss > loss_best
            x_best[better] = x_adv[better].clone()
            grad_best[better] = grad[better].clone()
            loss_best[better] = loss[better]
            counter3 += 1
            if counter3 == k:
                rises = sum(loss_steps[i - c] > loss_steps[i - c - 1] for c in range(k))
                oscillated = rises <= k * rho
                no_improvement = ~reduced_last_check & (loss_best_last_check >= loss_best).cpu()
                reduce = oscillated | no_improvement
                reduced_last_check = reduce.clone()
                loss_best_last_check = loss_best.clone()
                if reduce.any():
                    where = reduce.to(x.device)
                    step_size[where] /= 2.0
                    x_adv[where] = x_best[where].clone()
                    grad[where] = grad_best[where].clone()
                counter3 = 0
                k = max(k - size_decr, steps_min)
    return x_best_adv


def restart_generator(seed: int, restart: int) -> torch.Generator:
    """The generator of a restart's random starts: seeded with `seed` for the first (restart 0),
    with a SeedSequence of (seed, restart) for the others, so no restart shares another seed's."""
    if restart == 0:
        return torch.Generator().manual_seed(seed)
    state = np.random.SeedSequence([seed, restart]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def attack_correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    attack: str,
    steps: int,
    restarts: int,
    seed: int,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
) -> torch.Tensor:
    """Per image (bool, on the CPU), whether `model` classifies it correctly under the primary's
    attack (method.md section 6): `attack` "pgd" (`pgd`, step eps/4 from a random start) or
    "apgd-ce" (`apgd_ce`; an image misclassified clean counts as not correct, as AutoAttack counts
    it), `steps` iterations, from the random starts of `restart_generator(seed, r)` for
    r < `restarts`; correct only if correct under every restart (the worst case). "pgd" with one
    restart is `pgd_correct` exactly."""
    if attack not in PRIMARY_ATTACKS:
        raise ValueError(f"attack = {attack!r}; expected one of {PRIMARY_ATTACKS}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts = {restarts!r}; expected an integer >= 1")
    options = {"steps": steps, "batch_size": batch_size, "device": device}
    correct = None
    if attack == "apgd-ce":
        clean = logits_of(model, images, batch_size, device).argmax(dim=1) == labels
    for r in range(restarts):
        generator = restart_generator(seed, r)
        if attack == "pgd":
            adversarial = pgd(
                model, images, labels, eps, generator=generator, label_mode=label_mode, **options
            )
        else:
            adversarial = apgd_ce(
                model, images, labels, eps, generator=generator, label_mode=label_mode, **options
            )
        now = logits_of(model, adversarial, batch_size, device).argmax(dim=1) == labels
        if attack == "apgd-ce":
            now &= clean
        correct = now if correct is None else correct & now
    return correct


def attack_name(attack: str, steps: int, restarts: int) -> str:
    """The primary's attack in a table: e.g. "apgd-ce 50x1" (steps x restarts)."""
    return f"{attack} {steps}x{restarts}"


def fgsm_sweep(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: list[float],
    *,
    batch_size: int,
    device: torch.device,
    label_mode: str = "true",
    signs: torch.Tensor | None = None,
    clean_logits: torch.Tensor | None = None,
    epsilon_labels: list[str] | None = None,
) -> FGSMSweep:
    """FGSM at every epsilon on `images` (uint8 or float in [0, 1]), in batches on `device`.

    `signs`: the gradient signs to use (another model's, for a transferred attack); by default
    the model's own. `clean_logits`: the model's logits on `images` when already known (they are
    computed otherwise). `epsilon_labels`: the epsilons' names (default: as numbers, '0.1')."""
    if not epsilons:
        raise ValueError("epsilons must be a non-empty list")
    own_logits = None
    if signs is None:
        signs, own_logits = signs_and_logits(
            model, images, labels, batch_size=batch_size, device=device, label_mode=label_mode
        )
    elif signs.shape != images.shape:
        raise ValueError(f"signs have shape {tuple(signs.shape)}, images {tuple(images.shape)}")
    if clean_logits is None:
        clean_logits = (
            own_logits if own_logits is not None else logits_of(model, images, batch_size, device)
        )
    if clean_logits.shape[0] != len(images):
        raise ValueError(f"{clean_logits.shape[0]} clean logits for {len(images)} images")
    model.eval()
    adv_logits = [[] for _ in epsilons]
    linf, l2 = [[] for _ in epsilons], [[] for _ in epsilons]
    with torch.no_grad():
        for s in batch_slices(len(images), batch_size):
            x = as_input(images[s], device)
            for i, eps in enumerate(epsilons):
                adv = fgsm_images(x, signs[s], eps)
                delta = (adv - x).flatten(1).double()
                linf[i].append(delta.abs().amax(1).cpu())
                l2[i].append(delta.norm(dim=1).cpu())
                # x'_0 is x bit for bit, so its logits are the clean ones: no second pass
                adv_logits[i].append(clean_logits[s] if eps == 0 else model(adv).cpu())
    clean_accuracy, clean_loss = accuracy_and_loss(clean_logits, labels)
    was_correct = clean_logits.argmax(1) == labels
    n_correct = int(was_correct.sum())
    accuracy, loss, success = [], [], []
    for parts in adv_logits:
        logits = torch.cat(parts)
        acc, ce = accuracy_and_loss(logits, labels)
        fooled = int((was_correct & (logits.argmax(1) != labels)).sum())
        accuracy.append(acc)
        loss.append(ce)
        success.append(fooled / n_correct if n_correct else float("nan"))
    return FGSMSweep(
        epsilons=list(epsilons),
        epsilon_labels=list(epsilon_labels or map(epsilon_label, epsilons)),
        label_mode=label_mode,
        batch_size=batch_size,
        accuracy=accuracy,
        loss=loss,
        success_rate=success,
        linf_mean=[torch.cat(v).mean().item() for v in linf],
        l2_mean=[torch.cat(v).mean().item() for v in l2],
        clean_accuracy=clean_accuracy,
        clean_loss=clean_loss,
        clean_logits=clean_logits,
        signs=signs,
    )


@torch.no_grad()
def fgsm_examples(
    model: nn.Module,
    images: torch.Tensor,
    signs: torch.Tensor,
    epsilons: list[float],
    *,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A few images at every epsilon: (E x n x C x H x W float images, E x n predicted labels),
    both on the CPU. Meant for pictures: the whole batch goes through the model at once."""
    model.eval()
    x = as_input(images, device)
    adversarial = torch.stack([fgsm_images(x, signs, eps) for eps in epsilons])
    predictions = torch.stack([model(a).argmax(1) for a in adversarial])
    return adversarial.cpu(), predictions.cpu()
