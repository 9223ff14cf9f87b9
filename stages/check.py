"""check: validate all of params.yaml before any other stage runs (each depends on this one)."""

from fragile_neurons.pipeline import check
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(check)
