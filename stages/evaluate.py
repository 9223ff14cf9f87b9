"""evaluate: the variants attacked beside the baseline stage's original (method.md section 6)."""

from fragile_neurons import evaluate, headline, io, paths
from fragile_neurons.figures.evaluate import robustness_figure
from fragile_neurons.robustness import Settings
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Evaluate: metrics/<run>/evaluate.json and its headline evaluate/ (headline.py),
    plots/<run>/evaluate.csv and robustness.png."""
    settings = Settings.from_params(ctx.params, ctx.name, ctx.device)
    inputs = evaluate.load_inputs(ctx.name, ctx.run, settings)
    summary, curves = evaluate.run(*inputs[:-1], ctx.progress)
    io.write_csv(paths.plot(ctx.name, "evaluate.csv"), evaluate.wide_curves(curves))
    figure = robustness_figure(curves, summary, ctx.name)
    io.save_figure(paths.plot(ctx.name, "robustness.png"), figure)
    extra = {"hardened_checkpoint_difference": inputs.hardened_difference, **ctx.runtime()}
    headline.write(ctx.name, "evaluate", {**summary, **extra})


if __name__ == "__main__":
    run_stage(main)
