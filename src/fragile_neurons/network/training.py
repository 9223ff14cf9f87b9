"""Fitting a network: AdamW with a one-cycle learning-rate schedule, seeded and repeatable, for
the train stage (f) and the reference stage (f_ref, trained the same way with another seed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..running.errors import ParamError
from .inference import accuracy_and_loss, as_input, batch_slices, logits_of
from .models import build_model, check_batch_memory


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crops (zero padding of `pad` pixels) and horizontal flips, per image."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy.view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chan, rows, cols]


def train_model(
    model: nn.Module,
    train: dict,
    test: dict,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    augment_images: bool,
    device: torch.device,
    generator: torch.Generator,
    eval_batch_size: int = 1000,
    progress: bool = True,
    lr_key: str = "train.lr",
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Train in place; return one row per epoch: train and test loss and accuracy.
    `on_epoch(history)` is called after every epoch with the rows so far.

    A training that diverges stops with a ParamError on the learning rate (`lr_key` names it):
    at the first non-finite loss; after an epoch whose test accuracy is no better than a constant
    prediction of the commonest test class (what a network whose weights blew up gets) and whose
    train loss exceeds a uniform guess's, log(classes), before `on_epoch` sees it; or when the
    final test accuracy is at that chance level."""
    model.to(device)
    images, labels = train["images"], train["labels"]
    steps = epochs * -(-len(labels) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    history = []
    # a diverged training: at chance on the test split, with a train loss above a uniform guess's
    chance = torch.bincount(test["labels"]).max().item() / len(test["labels"])
    uniform_loss = math.log(len(train["classes"]))
    # progress on a terminal only (disable=None): a log or a captured stderr gets no bar
    disable = None if progress else True
    bar = tqdm(total=steps, desc="train", unit="batch", disable=disable, mininterval=2)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        seen, loss_sum, correct = 0, 0.0, 0
        for s in batch_slices(len(order), batch_size):
            idx = order[s]
            x, y = as_input(images[idx], device), labels[idx].to(device)
            if augment_images:
                x = augment(x, generator)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                where = f"the loss became {loss.item()} in epoch {epoch}"
                allowed = f"a learning rate at which training converges: {where}"
                raise ParamError(lr_key, lr, allowed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.4f}", refresh=False)
        test_logits = logits_of(model, test["images"], eval_batch_size, device)
        test_acc, test_loss = accuracy_and_loss(test_logits, test["labels"])
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
            }
        )
        bar.write(f"epoch {epoch}: test accuracy {test_acc:.4f}, test loss {test_loss:.4f}")
        if test_acc <= chance and loss_sum / seen > uniform_loss:  # worse than knowing nothing
            reached = f"epoch {epoch} ended with train loss {loss_sum / seen:.3g} and test accuracy"
            reached += f" {test_acc:.4f}, at chance ({chance:.4f})"
            raise ParamError(lr_key, lr, f"a learning rate at which training converges: {reached}")
        if on_epoch is not None:
            on_epoch(history)
    bar.close()
    model.eval()
    if history[-1]["test_accuracy"] <= chance:
        reached = f"test accuracy {history[-1]['test_accuracy']:.4f} is at chance ({chance:.4f})"
        raise ParamError(lr_key, lr, f"a learning rate at which training learns: {reached}")
    return history


@dataclass(frozen=True)
class Fit:
    """How a network is fitted (params: the run's arch and train, and batch_size), and where."""

    arch: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    augment: bool
    eval_batch_size: int  # batch_size: images per pass when measuring the test split
    lr_key: str  # the learning rate's key, for the message of a diverged training
    arch_key: str  # the architecture's key, for the message of a builder that fails
    device: torch.device
    batch_key: str = "train.batch_size"  # the batch size's key, for a batch too big to fit


def fit(
    train: dict,
    test: dict,
    settings: Fit,
    generator: torch.Generator,
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> tuple[nn.Module, dict, list[dict]]:
    """A fresh model of `settings.arch` for the prepared splits, trained (the model's initial
    weights come from torch's global generator, the data order and augmentation from
    `generator`). Returns the model, the spec that rebuilds it (models.save_checkpoint) and the
    history; `on_epoch(history)` is called after every epoch."""
    spec = {
        "arch": settings.arch,
        "channels": train["images"].shape[1],
        "size": train["images"].shape[2],
        "classes": len(train["classes"]),
    }
    model = build_model(**spec, mean=train["mean"], std=train["std"], key=settings.arch_key)
    shape = (spec["channels"], spec["size"])
    check_batch_memory(model, *shape, settings.batch_size, settings.batch_key, settings.device)
    check_batch_memory(model, *shape, settings.eval_batch_size, "batch_size", settings.device)
    history = train_model(
        model,
        train,
        test,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        augment_images=settings.augment,
        device=settings.device,
        generator=generator,
        eval_batch_size=settings.eval_batch_size,
        lr_key=settings.lr_key,
        on_epoch=on_epoch,
    )
    return model, spec, history


def summary(model: nn.Module, history: list[dict]) -> dict:
    """What a fitted network reports (train.json, reference.json): the last epoch's test and
    train accuracy and loss, epochs, parameters; its `headline` (headline.py): the test
    accuracy."""
    last = history[-1]
    return {
        "headline": {"test_accuracy": last["test_accuracy"]},
        "test_accuracy": last["test_accuracy"],
        "test_loss": last["test_loss"],
        "train_accuracy": last["train_accuracy"],
        "train_loss": last["train_loss"],
        "epochs": len(history),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
