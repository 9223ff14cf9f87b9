"""evaluate: the variants attacked beside the baseline stage's original (method.md section 6)."""

from fragile_neurons.pipeline import evaluate
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(evaluate)
