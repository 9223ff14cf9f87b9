"""label: fragility scores and labels from the scan's measurements (method.md section 3)."""

import sys

from fragile_neurons import headline, io, label, paths
from fragile_neurons.figures.label import impact_figure
from fragile_neurons.records import ScanLayer, ScanMeasurements
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Label: data/label/<run>/labels.pt, metrics/<run>/label.json and label/ (headline.py),
    plots/<run>/impact.png; why the labels are unresolved, if they are, on stderr. (label.csv,
    which joins the labels with the attack's targeting, is the correlate stage's; filters.png
    the harden stage's.)"""
    layer = ScanLayer.load(paths.layer_record(ctx.name))
    measured = ScanMeasurements.load(paths.scan_record(ctx.name), neurons=layer.channels)
    cfg = ctx.params["scan"]
    labels = label.run(measured, cfg["score"], cfg["label_fraction"])
    for warning in labels.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    labels.save(paths.labels_record(ctx.name))
    headline.write(ctx.name, "label", label.metrics(labels, measured, layer))
    title = f"{ctx.name}: {layer.conv_name}, phi = {labels.score} impact"
    io.save_figure(paths.plot(ctx.name, "impact.png"), impact_figure(measured, labels, title))


if __name__ == "__main__":
    run_stage(main)
