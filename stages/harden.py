"""harden: compress robust neurons, amplify fragile ones; save the folded network (method.md 5)."""

import pandas as pd
import torch

from fragile_neurons import harden, io, paths
from fragile_neurons.errors import DataError
from fragile_neurons.gates import fold
from fragile_neurons.layers import resolve_layer
from fragile_neurons.models import load_checkpoint, save_checkpoint
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Harden: models/<run>/hardened.pt, plots/<run>/gains.csv, metrics/<run>/harden.json."""
    model, spec = load_checkpoint(paths.model(ctx.name), arch=ctx.run["arch"])
    example = torch.zeros(1, spec["channels"], spec["size"], spec["size"])  # only its shape counts
    layer = resolve_layer(model, example, ctx.params["scan"]["layer"])
    neurons = pd.read_csv(paths.plot(ctx.name, "neurons.csv")).sort_values("neuron")
    if list(neurons["neuron"]) != list(range(layer.channels)):
        last = layer.channels - 1
        raise DataError(
            f"neurons.csv must list neurons 0..{last} of {layer.conv_name}: rerun label"
        )
    cfg = ctx.params["harden"]
    m, phi, labels = neurons["magnitude"].to_numpy(), neurons["phi"].to_numpy(), neurons["label"]
    settings = {"compress": cfg["compress"], "mode": cfg["mode"], "max_gain": cfg["max_gain"]}
    hardened = harden.hardening(m, phi, labels, **settings)
    inverse = harden.hardening(m, phi, labels, **settings, inverse=True)

    gains = torch.as_tensor(hardened.gains, dtype=torch.float32)
    save_checkpoint(paths.hardened(ctx.name), fold(model, layer, gains), spec)
    io.write_csv(paths.plot(ctx.name, "gains.csv"), neurons[["neuron", "label"]].assign(
        magnitude=m, phi=phi, gain=hardened.gains, inverse_gain=inverse.gains,
    ))  # fmt: skip
    io.write_json(paths.metrics(ctx.name, "harden"), {
        **harden.summary(hardened, m), **settings, "layer": layer.conv_name,
        "inverse": harden.summary(inverse, m),
    })  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
