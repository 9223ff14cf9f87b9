"""prepare: read (or download) the run's dataset, draw its splits, save uint8 tensors."""

from fragile_neurons import data, io, paths
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Prepare the run's dataset: data/prepared/<run>/{train,selection,test}.pt,
    metrics/<run>/data.json."""
    cfg = ctx.params["data"]
    train, selection, test, report = data.prepare(
        ctx.run["dataset"],
        cfg["root"],
        cfg["download"],
        cfg["accept_checksum_mismatch"],
        ctx.run["selection_size"],
        ctx.run["train_size"],
        ctx.run["test_size"],
        ctx.params["seed"],
        run=ctx.name,
    )
    io.save_tensors(paths.prepared(ctx.name, "train"), train)
    io.save_tensors(paths.prepared(ctx.name, "selection"), selection)
    io.save_tensors(paths.prepared(ctx.name, "test"), test)
    io.write_json(paths.metrics(ctx.name, "data"), report)


if __name__ == "__main__":
    run_stage(main)
