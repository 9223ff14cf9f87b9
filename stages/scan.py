"""scan: every neuron of the scanned layer dropped in turn, measured clean and under FGSM (§3), on
the scan set S (the first `scan.samples` images of the selection split)."""

from fragile_neurons.pipeline import scan
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(scan)
