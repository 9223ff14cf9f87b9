"""train: fit the run's architecture on its prepared data; save the checkpoint and curves."""

import pandas as pd

from fragile_neurons import io, paths, train
from fragile_neurons.models import save_checkpoint
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Train: models/<run>/model.pt, metrics/<run>/train.json, plots/<run>/train.csv."""
    train_split = io.load_split(paths.prepared(ctx.name, "train"))
    test_split = io.load_split(paths.prepared(ctx.name, "test"))
    settings = train.Settings.from_params(ctx.params, ctx.name, ctx.device)
    model, spec, history = train.run(train_split, test_split, settings, ctx.generator)
    save_checkpoint(paths.model(ctx.name), model, spec)
    io.write_csv(paths.plot(ctx.name, "train.csv"), pd.DataFrame(history))
    io.write_json(
        paths.metrics(ctx.name, "train"), {**train.metrics(model, history), **ctx.runtime()}
    )


if __name__ == "__main__":
    run_stage(main)
