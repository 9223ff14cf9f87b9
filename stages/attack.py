"""attack: FGSM over the run's epsilon grid on the test split and on the scan set S (the first
`scan.samples` images of the selection split), and how the attack targets the neurons on S."""

from fragile_neurons import attack, io, paths
from fragile_neurons.figures.attack import examples_figure
from fragile_neurons.models import load_reference, load_trained
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Attack: data/attack/<run>/{sweep,scan_sweep,layer,targeting}.pt, metrics/<run>/attack.json,
    plots/<run>/{attack,targeting}.csv and examples.png."""
    selection = io.load_split(paths.prepared(ctx.name, "selection"), ctx.run["dataset"])
    test = io.load_split(paths.prepared(ctx.name, "test"), ctx.run["dataset"])
    model, _ = load_trained(ctx.name, ctx.run)
    settings = attack.Settings.from_params(ctx.params, ctx.name, ctx.device)
    reference = load_reference(ctx.name, ctx.run)
    result = attack.run(model, selection, test, settings, reference)
    result.sweep.save(paths.sweep_record(ctx.name))
    result.scan_sweep.save(paths.scan_sweep_record(ctx.name))
    result.layer.save(paths.layer_record(ctx.name))
    result.targeting.save(paths.targeting_record(ctx.name))
    io.write_csv(paths.plot(ctx.name, "attack.csv"), result.sweep.frame())
    io.write_csv(paths.plot(ctx.name, "targeting.csv"), result.targeting.frame())
    io.save_figure(paths.plot(ctx.name, "examples.png"), examples_figure(result.examples))
    io.write_json(paths.metrics(ctx.name, "attack"), {**attack.metrics(result), **ctx.runtime()})


if __name__ == "__main__":
    run_stage(main)
