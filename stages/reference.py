"""reference: the reference network f_ref (method.md, Notation), trained as the train stage trains
f, with seed + 1000; with runs.<name>.reference false, a file saying the run has none."""

from fragile_neurons.pipeline import reference
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(reference)
