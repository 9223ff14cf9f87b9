"""train: fit the run's architecture on its prepared data; save the checkpoint and curves."""

import pandas as pd

from fragile_neurons import io, paths, train
from fragile_neurons.models import save_checkpoint
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Train: models/<run>/model.pt, metrics/<run>/train.json, plots/<run>/train.csv (rewritten
    after every epoch, so `dvc exp show` follows the run; the last once the model is saved)."""
    train_split = io.load_split(paths.prepared(ctx.name, "train"), ctx.run["dataset"])
    test_split = io.load_split(paths.prepared(ctx.name, "test"), ctx.run["dataset"])
    settings = train.Settings.from_params(ctx.params, ctx.name, ctx.device)

    def write_curves(model, history, saved=False):
        if len(history) < settings.epochs or saved:
            io.write_csv(paths.plot(ctx.name, "train.csv"), pd.DataFrame(history))
            metrics = {**train.metrics(model, history), **ctx.runtime()}
            io.write_json(paths.metrics(ctx.name, "train"), metrics)

    model, spec, history = train.run(train_split, test_split, settings, ctx.generator, write_curves)
    save_checkpoint(paths.model(ctx.name), model, spec)
    write_curves(model, history, saved=True)


if __name__ == "__main__":
    run_stage(main)
