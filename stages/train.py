"""train: fit the run's architecture on its prepared data; save the checkpoint and curves."""

import pandas as pd

from fragile_neurons import io, paths, train
from fragile_neurons.models import save_checkpoint
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Train: models/<run>/model.pt; plots/<run>/train.csv, rewritten after every epoch (DVC's
    plots follow the run); metrics/<run>/train.json once the model is saved."""
    train_split = io.load_split(paths.prepared(ctx.name, "train"), ctx.run["dataset"])
    test_split = io.load_split(paths.prepared(ctx.name, "test"), ctx.run["dataset"])
    settings = train.Settings.from_params(ctx.params, ctx.name, ctx.device)

    def write_curves(_, history):
        io.write_csv(paths.plot(ctx.name, "train.csv"), pd.DataFrame(history))

    model, spec, history = train.run(train_split, test_split, settings, ctx.generator, write_curves)
    save_checkpoint(paths.model(ctx.name), model, spec)
    metrics = {**train.metrics(model, history), **ctx.runtime()}
    io.write_json(paths.metrics(ctx.name, "train"), metrics)


if __name__ == "__main__":
    run_stage(main)
