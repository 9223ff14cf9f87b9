"""attack: FGSM over the run's epsilon grid on the test split and on the scan set S (the first
`scan.samples` images of the selection split), and how the attack targets the neurons on S."""

from fragile_neurons.pipeline import attack
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(attack)
