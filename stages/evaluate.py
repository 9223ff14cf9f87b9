"""evaluate: the variants attacked beside the baseline stage's original (method.md section 6)."""

from fragile_neurons import evaluate, headline, io, models, paths, records
from fragile_neurons.figures.evaluate import robustness_figure
from fragile_neurons.robustness import Settings
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Evaluate: metrics/<run>/evaluate.json and its headline evaluate/ (headline.py),
    plots/<run>/evaluate.csv and robustness.png."""
    settings = Settings.from_params(ctx.params, ctx.name, ctx.device)
    test = io.load_split(paths.prepared(ctx.name, "test"), ctx.run["dataset"])
    model, _ = models.load_trained(ctx.name, ctx.run)
    layer = records.ScanLayer.load(paths.layer_record(ctx.name), model=model)
    gains = records.Gains.load(paths.gains_record(ctx.name), neurons=layer.channels)
    source, original = evaluate.load_original(ctx.name, test, settings)
    hardened, difference = evaluate.load_hardened(
        paths.hardened(ctx.name), ctx.run["arch"], model, layer, gains, test, settings
    )
    args = (model, hardened, layer, gains, original, source, test, settings, ctx.progress)
    summary, curves = evaluate.run(*args)
    io.write_csv(paths.plot(ctx.name, "evaluate.csv"), evaluate.wide_curves(curves))
    figure = robustness_figure(curves, summary, ctx.name)
    io.save_figure(paths.plot(ctx.name, "robustness.png"), figure)
    extra = {"hardened_checkpoint_difference": difference, **ctx.runtime()}
    headline.write(ctx.name, "evaluate", {**summary, **extra})


if __name__ == "__main__":
    run_stage(main)
