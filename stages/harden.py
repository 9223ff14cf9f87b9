"""harden: compress robust neurons, amplify fragile ones; save the folded network (method.md 5)."""

from fragile_neurons import harden, io, paths
from fragile_neurons.figures.label import filters_figure
from fragile_neurons.gates import fold
from fragile_neurons.models import load_trained, save_checkpoint
from fragile_neurons.records import Labels, ScanLayer, Targeting
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Harden: hardened.pt, gains.pt, harden.json, gains.csv, filters.png (filters by label)."""
    model, spec = load_trained(ctx.name, ctx.run)
    layer = ScanLayer.load(paths.layer_record(ctx.name), model=model)
    labels = Labels.load(paths.labels_record(ctx.name), neurons=layer.channels)
    targeting = Targeting.load(paths.targeting_record(ctx.name), neurons=layer.channels)
    cfg = ctx.params["evaluate"]  # the random controls: how many, matched how closely
    args = (labels, targeting, layer, cfg["random_controls"], ctx.generator)
    gains, summary = harden.run(*args, **ctx.params["harden"], tolerance=cfg["match_tolerance"])
    save_checkpoint(paths.hardened(ctx.name), fold(model, layer, gains.gain), spec)
    gains.save(paths.gains_record(ctx.name))
    io.write_csv(paths.plot(ctx.name, "gains.csv"), harden.table(gains, labels))
    io.write_json(paths.metrics(ctx.name, "harden"), summary)
    title = f"{ctx.name}: {layer.conv_name}, phi = {labels.score} impact"
    figure = filters_figure(layer.conv(model), labels, title)
    io.save_figure(paths.plot(ctx.name, "filters.png"), figure)


if __name__ == "__main__":
    run_stage(main)
