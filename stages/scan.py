"""scan: every neuron of the scanned layer dropped in turn, measured clean and under FGSM (§3)."""

from fragile_neurons import io, paths
from fragile_neurons.config import epsilon_labels, epsilon_values
from fragile_neurons.errors import DataError
from fragile_neurons.inference import as_input
from fragile_neurons.layers import resolve_layer
from fragile_neurons.models import load_checkpoint
from fragile_neurons.scan import adaptive_scan, scan, scan_table, with_clean
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Scan: data/scan/<run>/{measurements.pt,summary.json}, plots/<run>/scan.csv."""
    test = io.load_split(paths.prepared(ctx.name, "test"))
    model, _ = load_checkpoint(paths.model(ctx.name), arch=ctx.run["arch"])
    cfg = ctx.params["scan"]
    images, labels = test["images"][: cfg["samples"]], test["labels"][: cfg["samples"]]
    layer = resolve_layer(model, as_input(images[:1], ctx.device), cfg["layer"])
    # the signs crafted on the intact model: the attack stage's sweep of the whole test split
    signs = io.load_tensors(paths.attack_sweep(ctx.name), keys=("sweep",))["sweep"]["signs"]
    if signs.shape != test["images"].shape:
        raise DataError(f"{paths.attack_sweep(ctx.name)} is not this test split's: rerun attack")
    signs = signs[: cfg["samples"]]
    eps, names = with_clean(epsilon_values(ctx.run), epsilon_labels(ctx.run))
    batch, mode = ctx.params["batch_size"], cfg["adversarial"]

    if mode == "transfer":
        result = scan(model, layer, images, labels, signs, eps, batch_size=batch,
                      device=ctx.device)  # fmt: skip
    else:
        result = adaptive_scan(model, layer, images, labels, signs, eps,
                               batch_size=batch, device=ctx.device,
                               label_mode=ctx.run["attack"]["labels"])  # fmt: skip

    layer_info = {"conv": layer.conv_name, "neuron_module": layer.neuron_name,
                  "neurons": layer.channels}  # fmt: skip
    io.save_tensors(paths.scan_cache(ctx.name),
                    {**result.to_dict(), "epsilon_labels": names, "layer": layer_info})  # fmt: skip
    io.write_csv(paths.plot(ctx.name, "scan.csv"), scan_table(result, names))
    io.write_json(paths.scan_cache(ctx.name).with_name("summary.json"), {
        "intact_accuracy": dict(zip(names, result.intact_accuracy.tolist(), strict=True)),
        "intact_loss": dict(zip(names, result.intact_loss.tolist(), strict=True)),
        "layer": layer_info, "neurons": layer.channels, "samples": result.samples,
        "adversarial": mode, "path": result.path, **ctx.runtime(),
    })  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
