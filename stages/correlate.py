"""correlate: fragility against the attack share across neurons (method.md section 4)."""

from fragile_neurons.pipeline import correlate
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(correlate)
