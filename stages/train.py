"""train: fit the run's architecture on its prepared data; save the checkpoint and curves."""

import pandas as pd

from fragile_neurons import io, paths
from fragile_neurons.models import build_model, save_checkpoint
from fragile_neurons.stage import Context, run_stage
from fragile_neurons.train import train_model


def main(ctx: Context) -> None:
    """Train: models/<run>/model.pt, metrics/<run>/train.json, plots/<run>/train.csv."""
    train = io.load_split(paths.prepared(ctx.name, "train"))
    test = io.load_split(paths.prepared(ctx.name, "test"))
    channels, size = train["images"].shape[1], train["images"].shape[2]
    spec = {
        "arch": ctx.run["arch"],
        "channels": channels,
        "size": size,
        "classes": len(train["classes"]),
    }
    model = build_model(**spec, mean=train["mean"], std=train["std"])
    cfg = ctx.run["train"]
    history = train_model(
        model,
        train,
        test,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        augment_images=cfg["augment"],
        device=ctx.device,
        generator=ctx.generator,
        eval_batch_size=ctx.params["batch_size"],
        lr_key=f"runs.{ctx.name}.train.lr",
    )
    save_checkpoint(paths.model(ctx.name), model, spec)
    io.write_csv(paths.plot(ctx.name, "train.csv"), pd.DataFrame(history))
    last = history[-1]
    io.write_json(
        paths.metrics(ctx.name, "train"),
        {
            "test_accuracy": last["test_accuracy"],
            "test_loss": last["test_loss"],
            "train_accuracy": last["train_accuracy"],
            "train_loss": last["train_loss"],
            "epochs": cfg["epochs"],
            "parameters": sum(p.numel() for p in model.parameters()),
            **ctx.runtime(),
        },
    )


if __name__ == "__main__":
    run_stage(main)
