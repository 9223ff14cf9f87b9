"""publish: copy each stage's files for people (details, CSVs, PNGs) to metrics/ and plots/."""

from fragile_neurons.pipeline import publish
from fragile_neurons.running.stage import run_stage

if __name__ == "__main__":
    run_stage(publish)
