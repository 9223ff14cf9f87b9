"""label: fragility scores and labels from the scan's measurements (method.md section 3)."""

from fragile_neurons.pipeline import label
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(label)
