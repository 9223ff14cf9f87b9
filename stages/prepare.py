"""prepare: read (or download) the run's dataset, draw its splits, save uint8 tensors."""

from fragile_neurons.pipeline import prepare
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(prepare)
