"""baseline: the original network attacked on the test split, once (method.md section 6)."""

from fragile_neurons import baseline, io, models, paths
from fragile_neurons.robustness import Settings, load_source
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Baseline: data/baseline/<run>/original.pt, the original's attacks as evaluate makes them."""
    settings = Settings.from_params(ctx.params, ctx.name, ctx.device)
    test = io.load_split(paths.prepared(ctx.name, "test"))
    model, _ = models.load_trained(ctx.name, ctx.run)
    source = load_source(paths.sweep_record(ctx.name), test, settings)
    baseline.run(model, source, test, settings).save(paths.original_attacks_record(ctx.name))


if __name__ == "__main__":
    run_stage(main)
