"""placebo: the second reference network f_ref2 (method.md section 2), trained as the train stage
trains f, with seed + 2000; with runs.<name>.placebo false, a file saying the run has none."""

from fragile_neurons.pipeline import placebo
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(placebo)
