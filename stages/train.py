"""train: fit the run's architecture on its prepared data; save the checkpoint and curves."""

import pandas as pd

from fragile_neurons import headline, io, paths, train
from fragile_neurons.models import save_checkpoint
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Train: models/<run>/model.pt, metrics/<run>/train.json, plots/<run>/train.csv (the curves
    are rewritten after every epoch, so `dvc exp show` and DVC's VS Code plots follow the run)."""
    train_split = io.load_split(paths.prepared(ctx.name, "train"))
    test_split = io.load_split(paths.prepared(ctx.name, "test"))
    settings = train.Settings.from_params(ctx.params, ctx.name, ctx.device)

    def write_curves(model, history):
        io.write_csv(paths.plot(ctx.name, "train.csv"), pd.DataFrame(history))
        metrics = {**train.metrics(model, history), **ctx.runtime()}
        headline.write(ctx.name, "train", metrics)

    model, spec, _ = train.run(train_split, test_split, settings, ctx.generator, write_curves)
    save_checkpoint(paths.model(ctx.name), model, spec)


if __name__ == "__main__":
    run_stage(main)
