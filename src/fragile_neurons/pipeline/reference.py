"""The reference stage: the reference network f_ref (method.md, Notation), trained as the train
stage trains f, with seed + 1000 (`network.controls.REFERENCE`); with `runs.<name>.reference`
false, a file saying the run has none (so DVC has an output, and the attack stage knows the
reference is absent on purpose)."""

from __future__ import annotations

from dataclasses import dataclass

from ..network.control_training import ControlSettings, Inputs, Trained, load, run, write
from ..network.controls import REFERENCE

__all__ = ["Inputs", "Settings", "Trained", "load", "run", "write"]


@dataclass(frozen=True)
class Settings(ControlSettings):
    CONTROL = REFERENCE
