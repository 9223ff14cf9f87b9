"""label: fragility scores and labels from the scan's measurements (method.md section 3)."""

import sys

from fragile_neurons import headline, io, label, paths
from fragile_neurons.figures.label import filters_figure, impact_figure
from fragile_neurons.models import load_trained
from fragile_neurons.records import ScanLayer, ScanMeasurements, Targeting
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Label: data/label/<run>/labels.pt, metrics/<run>/label.json and label/ (headline.py),
    plots/<run>/label.csv, impact.png and filters.png; why the labels are unresolved, on stderr."""
    model, _ = load_trained(ctx.name, ctx.run)
    layer = ScanLayer.load(paths.layer_record(ctx.name), model=model)
    measured = ScanMeasurements.load(paths.scan_record(ctx.name), neurons=layer.channels)
    targeting = Targeting.load(paths.targeting_record(ctx.name), neurons=layer.channels)
    cfg = ctx.params["scan"]
    labels = label.run(measured, cfg["score"], cfg["label_fraction"])
    for warning in labels.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    labels.save(paths.labels_record(ctx.name))
    io.write_csv(paths.plot(ctx.name, "label.csv"), label.table(labels, targeting))
    headline.write(ctx.name, "label", label.metrics(labels, measured, layer))
    title = f"{ctx.name}: {layer.conv_name}, phi = {labels.score} impact"
    io.save_figure(paths.plot(ctx.name, "impact.png"), impact_figure(measured, labels, title))
    filters = filters_figure(layer.conv(model), labels, title)
    io.save_figure(paths.plot(ctx.name, "filters.png"), filters)


if __name__ == "__main__":
    run_stage(main)
