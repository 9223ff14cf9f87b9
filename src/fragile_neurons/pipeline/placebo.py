"""The placebo stage: the second reference network f_ref2 (method.md section 2, v4), trained as
the train stage trains f, with seed + 2000 (`network.controls.PLACEBO`); its attack against the
reference network's gives X^plc, the empirical null of claim 1's primary. With
`runs.<name>.placebo` false, a file saying the run has none."""

from __future__ import annotations

from dataclasses import dataclass

from ..network.control_training import ControlSettings, Inputs, Trained, load, run, write
from ..network.controls import PLACEBO

__all__ = ["Inputs", "Settings", "Trained", "load", "run", "write"]


@dataclass(frozen=True)
class Settings(ControlSettings):
    CONTROL = PLACEBO
