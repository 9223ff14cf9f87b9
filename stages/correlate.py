"""correlate: fragility against the attack share across neurons (method.md section 4)."""

import pandas as pd

from fragile_neurons import io, paths
from fragile_neurons.correlate import correlate, json_ready
from fragile_neurons.figures.results import correlation_figure
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Correlate: metrics/<run>/correlate.json, plots/<run>/correlate.csv and correlate.png."""
    neurons = pd.read_csv(paths.plot(ctx.name, "neurons.csv"))
    targeting = pd.read_csv(paths.plot(ctx.name, "targeting.csv"), dtype={"epsilon_label": str})
    summary, table = correlate(neurons, targeting, ctx.params["correlate"]["top_fraction"])
    io.write_json(paths.metrics(ctx.name, "correlate"), json_ready(summary))
    io.write_csv(paths.plot(ctx.name, "correlate.csv"), table)
    io.save_figure(
        paths.plot(ctx.name, "correlate.png"), correlation_figure(table, summary, ctx.name)
    )


if __name__ == "__main__":
    run_stage(main)
