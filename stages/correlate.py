"""correlate: fragility against the attack share across neurons (method.md section 4)."""

from fragile_neurons import correlate, headline, io, label, paths
from fragile_neurons.figures.correlate import correlation_figure
from fragile_neurons.records import Labels, Targeting
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Correlate: metrics/<run>/correlate.json and its headline correlate/ (headline.py),
    plots/<run>/correlate.csv, correlate.png and label.csv (the labels joined with the
    targeting, both of which this stage reads)."""
    labels = Labels.load(paths.labels_record(ctx.name))
    targeting = Targeting.load(paths.targeting_record(ctx.name), neurons=len(labels.phi))
    summary, table = correlate.run(labels, targeting, ctx.params["correlate"]["top_fraction"])
    headline.write(ctx.name, "correlate", correlate.json_ready(summary))
    io.write_csv(paths.plot(ctx.name, "correlate.csv"), table)
    io.write_csv(paths.plot(ctx.name, "label.csv"), label.table(labels, targeting))
    figure = correlation_figure(table, summary, ctx.name)
    io.save_figure(paths.plot(ctx.name, "correlate.png"), figure)


if __name__ == "__main__":
    run_stage(main)
