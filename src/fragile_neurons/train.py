"""The train stage: a classifier fitted with AdamW and a one-cycle learning-rate schedule, seeded
and repeatable."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .errors import ParamError
from .inference import accuracy_and_loss, as_input, batch_slices, logits_of
from .models import build_model


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


# The reference network f_ref (method.md, Notation) is trained as f with seed + this offset, so
# that no member of a seed sweep (seeds 0, 1, 2, ...) shares its seed.
REFERENCE_SEED_OFFSET = 1000


def reference_seed(seed: int) -> int:
    """The seed of the reference network of a run seeded with `seed`."""
    return seed + REFERENCE_SEED_OFFSET


@dataclass(frozen=True)
class Settings:
    """What the train stage reads of params.yaml (dvc.yaml: batch_size, the run's arch and
    train), and where it runs."""

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

    @classmethod
    def from_params(cls, params: dict, name: str, device: torch.device) -> Settings:
        run = params["runs"][name]
        cfg = run["train"]
        return cls(
            arch=run["arch"],
            epochs=cfg["epochs"],
            batch_size=cfg["batch_size"],
            lr=cfg["lr"],
            weight_decay=cfg["weight_decay"],
            augment=cfg["augment"],
            eval_batch_size=params["batch_size"],
            lr_key=f"runs.{name}.train.lr",
            arch_key=f"runs.{name}.arch",
            device=device,
        )


def run(
    train: dict,
    test: dict,
    settings: Settings,
    generator: torch.Generator,
    on_epoch: Callable[[nn.Module, list[dict]], None] | None = None,
) -> tuple[nn.Module, dict, list[dict]]:
    """The train stage: a fresh model of `settings.arch` for the prepared splits, trained.
    Returns the model, the spec that rebuilds it (models.save_checkpoint) and the history.
    `on_epoch(model, history)` is called after every epoch (the stage writes its curves)."""
    spec = {
        "arch": settings.arch,
        "channels": train["images"].shape[1],
        "size": train["images"].shape[2],
        "classes": len(train["classes"]),
    }
    model = build_model(**spec, mean=train["mean"], std=train["std"], key=settings.arch_key)
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
        on_epoch=None if on_epoch is None else partial(on_epoch, model),
    )
    return model, spec, history


# The curves DVCLive logs per epoch: plots/metrics/<split>/<measure>.tsv under its folder.
CURVES = tuple(
    f"{split}/{measure}" for split in ("train", "test") for measure in ("accuracy", "loss")
)


@contextmanager
def live_curves(folder: str | Path) -> Iterator[Callable[[nn.Module, list[dict]], None]]:
    """DVCLive's logger of the training curves, in the layout DVC, VS Code and Studio read:
    under `folder`, plots/metrics/{train,test}/{accuracy,loss}.tsv (a row per epoch, its step
    the epoch) and metrics.json (the last epoch's). Yields `run`'s `on_epoch`, which writes
    them after every epoch, so `dvc plots` follows a run while it trains. No timestamps, no
    report, no dvc.yaml of its own and no experiment saved: a rerun writes the same bytes. The
    folder is cleared when the first epoch ends, so a training that stops before (a diverging
    learning rate) leaves the last run's curves as they were."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    class Curves(Live):
        def _init_dvc(self):
            # a git repository without a commit yet: DVCLive 3 raises SCMError, and nothing of
            # the git side is needed to write these files
            with suppress(SCMError):
                super()._init_dvc()

    live = None

    def on_epoch(model: nn.Module, history: list[dict]) -> None:
        nonlocal live
        if live is None:
            live = Curves(str(folder), report=None, save_dvc_exp=False, dvcyaml=None)
        row = history[-1]
        live.step = row["epoch"]
        for name in CURVES:
            live.log_metric(name, row[name.replace("/", "_")], timestamp=False)
        live.sync()

    try:
        yield on_epoch
    finally:
        if live is not None:
            live.end()


def metrics(model: nn.Module, history: list[dict]) -> dict:
    """train.json: the last epoch's test and train accuracy and loss, epochs, parameters; its
    `headline` (headline.py): the test accuracy."""
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
