"""train: fit the run's architecture on its prepared data; save the checkpoint and curves."""

from fragile_neurons.pipeline import train
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(train)
