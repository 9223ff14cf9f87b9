"""The control networks (method.md, Notation and section 2): networks trained exactly as f, whose
only difference is the seed of their initialisation and data order, so that their attacks are
attacks of "a network that is not f".

- the reference network f_ref (`runs.<name>.reference`, seed + 1000): its FGSM gives D^ref and
  claim 1's primary measure X^ref;
- the placebo network f_ref2 (`runs.<name>.placebo`, seed + 2000): its FGSM gives D^ref2 and
  X^plc = mean D^ref / mean D^ref2, the primary's empirical null (two networks that are not f).

The seed offsets keep every member of a seed sweep (seeds 0, 1, 2, ...) off them. A run that
leaves a control out gets a file that says so (DVC needs an output, and the attack stage must know
the control is absent on purpose). The reference and placebo stages fit them
(`network.control_training`) as the train stage fits f (`network.training`); the attack stage
loads them here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..running.errors import DataError
from ..storage import paths
from ..storage.io import admit, load_tensors, rerun_advice, save_tensors
from .models import load_checkpoint


@dataclass(frozen=True)
class Control:
    """A control network: its stage (and params key `runs.<name>.<key>`), its seed offset, its
    file and its symbol in method.md."""

    key: str
    seed_offset: int
    symbol: str

    def seed(self, seed: int) -> int:
        """The control's seed in a run seeded with `seed`."""
        return seed + self.seed_offset

    def path(self, run: str) -> Path:
        return paths.control(run, self.key)


REFERENCE = Control("reference", 1000, "f_ref")
PLACEBO = Control("placebo", 2000, "f_ref2")


def save_no_control(path: str | Path, why: str) -> None:
    """A control's output for a run that leaves it out: a file that says why."""
    save_tensors(path, {"absent": why})


def load_control(control: Control, name: str, run: dict) -> nn.Sequential | None:
    """Run `name`'s control network (models/<name>/<control>.pt, its stage's), or None where
    `run` leaves it out (runs.<name>.<control> false). A file that disagrees with the param is a
    DataError naming the stage to rerun."""
    path = control.path(name)
    blob = load_tensors(path)
    absent = isinstance(blob, dict) and isinstance(blob.get("absent"), str)
    wanted = bool(run[control.key])
    if absent == wanted:
        holds = f"no {control.key} network" if absent else f"a {control.key} network"
        raise DataError(
            f"{path} holds {holds}, but runs.{name}.{control.key} is {str(wanted).lower()}; "
            f"{rerun_advice(path)}"
        )
    if absent:
        admit(path, blob)
        return None
    arch, dataset = run["arch"], run["dataset"]
    return load_checkpoint(path, arch=arch, key=f"runs.{name}.arch", dataset=dataset)[0]
