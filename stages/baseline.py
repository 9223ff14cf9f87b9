"""baseline: the original network attacked on the test split, once (method.md section 6)."""

from fragile_neurons.pipeline import baseline
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(baseline)
