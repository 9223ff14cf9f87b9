"""The publish stage: each stage's files for people, copied from the stage's cached folder
data/views/<run>/<stage>/ to where git, review and `dvc metrics`/`dvc plots` read them:
metrics/<run>/<stage>.json (the details) and plots/<run>/ (CSVs, figures as PNG and SVG, the
training curves).

Why a stage of its own: DVC's run-cache restores a stage only when each of its outputs is cached or
a metric or plot, and a details JSON is neither (it would flood `dvc metrics show`). So every
computing stage writes its files for people as a cached output, which the run-cache restores after
an interrupted queue or on the next day, and this stage, cheap and without torch, copies their
bytes (nothing is parsed; the details are never read back by a stage). The copies are committed
to git, so a change of a result shows in `git diff`, `dvc metrics diff` and `dvc plots diff`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..running.errors import DataError
from ..storage import io, paths

PER_RUN = True
TORCH = False  # copies files: the stage runs without torch, device or seeds


@dataclass(frozen=True)
class Settings:
    """Publishing reads nothing of params.yaml but the run's name."""

    @classmethod
    def from_params(cls, params: dict, name: str) -> Settings:
        return cls()


def load(ctx, settings: Settings) -> dict[Path, Path]:
    """{view file: its published path} for every file of every stage of the run (a folder's files
    one by one); a view that is missing is a DataError naming the stage that writes it."""
    copies = {}
    for stage, names in paths.PUBLISHED.items():
        for name in names:
            source = paths.view(ctx.name, stage, name)
            if source.is_dir():
                for file in sorted(p for p in source.rglob("*") if p.is_file()):
                    copies[file] = paths.published(ctx.name, name) / file.relative_to(source)
            elif source.is_file():
                copies[source] = paths.published(ctx.name, name)
            else:
                raise DataError(f"{source} is missing; {io.rerun_advice(source)}")
    return copies


def run(
    inputs: dict[Path, Path], settings: Settings, progress: Callable[[str], None] | None = None
) -> dict[Path, Path]:
    """Nothing to compute: the copies to make, {view file: its published path}."""
    return inputs


def write(ctx, outputs: dict[Path, Path]) -> None:
    """Each copy, written atomically (a folder's old files are gone: DVC removes a stage's outputs
    before it runs)."""
    for source, target in outputs.items():
        io.write_with(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
