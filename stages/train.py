"""train: fit the run's architecture on its prepared data; save the checkpoint and curves."""

from fragile_neurons import headline, io, paths, train
from fragile_neurons.models import save_checkpoint
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Train: models/<run>/model.pt, metrics/<run>/train.json and train/ (headline.py), and the
    curves through DVCLive in plots/<run>/train/, written after every epoch (train.live_curves),
    so `dvc plots` and DVC's VS Code plots follow the run."""
    train_split = io.load_split(paths.prepared(ctx.name, "train"), ctx.run["dataset"])
    test_split = io.load_split(paths.prepared(ctx.name, "test"), ctx.run["dataset"])
    settings = train.Settings.from_params(ctx.params, ctx.name, ctx.device)
    with train.live_curves(paths.plot(ctx.name, "train")) as on_epoch:
        model, spec, history = train.run(train_split, test_split, settings, ctx.generator, on_epoch)
    save_checkpoint(paths.model(ctx.name), model, spec)
    headline.write(ctx.name, "train", {**train.metrics(model, history), **ctx.runtime()})


if __name__ == "__main__":
    run_stage(main)
