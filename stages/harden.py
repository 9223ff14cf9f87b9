"""harden: compress robust neurons, amplify fragile ones; save the folded network (method.md 5)."""

from fragile_neurons.pipeline import harden
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(harden)
