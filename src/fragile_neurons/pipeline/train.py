"""The train stage: the run's network f fitted on its train split (`network.training`), with
its curves written through DVCLive after every epoch, so `dvc plots` and DVC's VS Code plots
follow the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..network.models import save_checkpoint
from ..network.training import Fit, fit, summary
from ..running.config import fit_settings
from ..running.runtime import select_device
from ..storage import headline, io, paths


@dataclass(frozen=True)
class Settings:
    """What the train stage reads of params.yaml: `seed` (data order and augmentation), the
    run's arch and train, batch_size; and where it runs."""

    fit: Fit
    seed: int

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        device = select_device(params["device"])
        return cls(Fit(**fit_settings(params, name), device=device), params["seed"])


class Inputs(NamedTuple):
    train: dict  # the prepared train split
    test: dict  # the prepared test split (the per-epoch test curves)


class Trained(NamedTuple):
    model: nn.Module
    spec: dict  # what rebuilds it (models.save_checkpoint)
    history: list[dict]  # a row per epoch


def load(ctx, settings: Settings) -> Inputs:
    return Inputs(*io.load_training_splits(ctx.name, ctx.run["dataset"]))


def run(inputs: Inputs, settings: Settings, progress: Callable | None = None) -> Trained:
    """f: a fresh network fitted with a generator seeded by `seed`; `progress(step, row)` after
    every epoch, with the epoch's row of the history."""
    generator = torch.Generator().manual_seed(settings.seed)

    def on_epoch(history: list[dict]) -> None:
        if progress is not None:
            progress(f"epoch {history[-1]['epoch']}", history[-1])

    return Trained(*fit(inputs.train, inputs.test, settings.fit, generator, on_epoch))


def write(ctx, outputs: Trained) -> None:
    """models/<run>/model.pt, the headline metrics/<run>/train/ (headline.py) and the details
    data/views/<run>/train/train.json. (The curves, data/views/<run>/train/train/, were written
    after every epoch by `watch`.)"""
    save_checkpoint(paths.model(ctx.name), outputs.model, outputs.spec)
    headline.write(ctx.name, "train", {**summary(outputs.model, outputs.history), **ctx.runtime()})


def watch(ctx) -> Iterator[Callable[[str, dict], None]]:
    """The stage's progress: DVCLive's curves in data/views/<run>/train/train/ (publish copies
    them to plots/<run>/train/), after every epoch."""
    return live_curves(paths.view(ctx.name, "train", "train"))


# The curves DVCLive logs per epoch: plots/metrics/<split>/<measure>.tsv under its folder.
CURVES = tuple(
    f"{split}/{measure}" for split in ("train", "test") for measure in ("accuracy", "loss")
)


@contextmanager
def live_curves(folder: str | Path) -> Iterator[Callable[[str, dict], None]]:
    """DVCLive's logger of the training curves, in the layout DVC, VS Code and Studio read:
    under `folder`, plots/metrics/{train,test}/{accuracy,loss}.tsv (a row per epoch, its step
    the epoch) and metrics.json (the last epoch's). Yields `run`'s `progress(step, row)`, which
    writes them after every epoch (`row`: the epoch's row of the history), so `dvc plots`
    follows a run while it trains. No timestamps, no
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

    def on_epoch(step: str, row: dict) -> None:
        nonlocal live
        if live is None:
            live = Curves(str(folder), report=None, save_dvc_exp=False, dvcyaml=None)
        live.step = row["epoch"]
        for name in CURVES:
            live.log_metric(name, row[name.replace("/", "_")], timestamp=False)
        live.sync()

    try:
        yield on_epoch
    finally:
        if live is not None:
            live.end()
