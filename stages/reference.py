"""reference: the reference network f_ref (method.md, Notation), trained as the train stage trains
f, with seed + 1000; with runs.<name>.reference false, a file saying the run has none."""

from fragile_neurons import headline, io, paths, train
from fragile_neurons.models import save_checkpoint, save_no_reference
from fragile_neurons.runtime import seed_everything
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Reference: models/<run>/reference.pt, metrics/<run>/reference.json and reference/."""
    if not ctx.run["reference"]:
        save_no_reference(paths.reference(ctx.name), f"runs.{ctx.name}.reference is false")
        summary = {"headline": {"test_accuracy": None}, "reference": False}
        headline.write(ctx.name, "reference", summary)
        return
    train_split = io.load_split(paths.prepared(ctx.name, "train"), ctx.run["dataset"])
    test_split = io.load_split(paths.prepared(ctx.name, "test"), ctx.run["dataset"])
    settings = train.Settings.from_params(ctx.params, ctx.name, ctx.device)
    seed = train.reference_seed(ctx.params["seed"])
    generator = seed_everything(seed, ctx.device, ctx.params["deterministic"])
    model, spec, history = train.run(train_split, test_split, settings, generator)
    save_checkpoint(paths.reference(ctx.name), model, spec)
    summary = {"reference": True, "seed": seed, **train.metrics(model, history), **ctx.runtime()}
    headline.write(ctx.name, "reference", summary)


if __name__ == "__main__":
    run_stage(main)
