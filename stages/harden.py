"""harden: compress robust neurons, amplify fragile ones; save the folded network (method.md 5)."""

from fragile_neurons import harden, io, paths
from fragile_neurons.figures.label import filters_figure
from fragile_neurons.gates import fold
from fragile_neurons.models import load_trained, save_checkpoint
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Harden: hardened.pt, gains.pt, harden.json, gains.csv, filters.png (filters by label)."""
    model, spec = load_trained(ctx.name, ctx.run)
    layer, labels, targeting, s = harden.load_inputs(ctx.name, model, ctx.params["scan"]["samples"])
    cfg = ctx.params["evaluate"]  # the random controls: how many, matched how closely
    args = (labels, targeting, layer, cfg["random_controls"], ctx.generator, cfg["match_tolerance"])
    gains, summary = harden.run(*args, **ctx.params["harden"])
    gains = harden.recalibrated(gains, model, layer, s, ctx.params["batch_size"], ctx.device)
    save_checkpoint(paths.hardened(ctx.name), fold(model, layer, gains.gain), spec)
    gains.save(paths.gains_record(ctx.name))
    io.write_csv(paths.plot(ctx.name, "gains.csv"), harden.table(gains, labels))
    io.write_json(paths.metrics(ctx.name, "harden"), summary)
    title = f"{ctx.name}: {layer.conv_name}, phi = {labels.score} impact"
    io.save_figure(
        paths.plot(ctx.name, "filters.png"), filters_figure(layer.conv(model), labels, title)
    )


if __name__ == "__main__":
    run_stage(main)
