"""attack: FGSM over the run's epsilon grid on the test split, and how it targets the neurons."""

import dataclasses

from fragile_neurons import io, paths
from fragile_neurons.config import epsilon_labels, epsilon_values
from fragile_neurons.figures.attack import EXAMPLES, examples_figure
from fragile_neurons.inference import as_input
from fragile_neurons.layers import resolve_layer
from fragile_neurons.models import load_checkpoint
from fragile_neurons.robustness import fgsm_examples, fgsm_sweep
from fragile_neurons.stage import Context, run_stage
from fragile_neurons.targeting import targeting


def main(ctx: Context) -> None:
    """Attack: metrics/<run>/attack.json, plots/<run>/{attack,targeting}.csv and examples.png,
    data/attack/<run>/sweep.pt (the whole sweep: the scan's signs, evaluate's `original`)."""
    test = io.load_split(paths.prepared(ctx.name, "test"))
    model, _ = load_checkpoint(paths.model(ctx.name), arch=ctx.run["arch"])
    model.to(ctx.device)
    eps, names = epsilon_values(ctx.run), epsilon_labels(ctx.run)
    mode, batch = ctx.run["attack"]["labels"], ctx.params["batch_size"]
    scan_images = test["images"][: ctx.params["scan"]["samples"]]
    layer = resolve_layer(model, as_input(scan_images[:1], ctx.device), ctx.params["scan"]["layer"])

    sweep = fgsm_sweep(
        model, test["images"], test["labels"], eps, batch_size=batch, device=ctx.device,
        label_mode=mode,
    )  # fmt: skip
    signs = sweep.signs[: len(scan_images)]
    positive = [(e, n) for e, n in zip(eps, names, strict=True) if e > 0]
    target = targeting(
        model, layer, scan_images, signs, [e for e, _ in positive], batch_size=batch,
        device=ctx.device,
    )  # fmt: skip
    rows = [(0.0, "0")] + positive  # the clean images first, whether or not 0 is in the grid
    shown, predicted = fgsm_examples(
        model, scan_images[:EXAMPLES], signs[:EXAMPLES], [e for e, _ in rows], device=ctx.device
    )

    layer_info = {"conv": layer.conv_name, "neuron_module": layer.neuron_name,
                  "neurons": layer.channels}  # fmt: skip
    io.save_tensors(paths.attack_sweep(ctx.name), {
        "sweep": dataclasses.asdict(sweep), "label_mode": mode, "batch_size": batch,
    })  # fmt: skip
    io.write_csv(paths.plot(ctx.name, "attack.csv"), sweep.frame(names))
    io.write_csv(paths.plot(ctx.name, "targeting.csv"), target.frame([n for _, n in positive]))
    io.save_figure(paths.plot(ctx.name, "examples.png"), examples_figure(
        shown, predicted, test["labels"][:EXAMPLES], test["classes"], [e for e, _ in rows],
        [n for _, n in rows],
    ))  # fmt: skip

    def by_eps(values):
        return dict(zip(names, values, strict=True))

    io.write_json(paths.metrics(ctx.name, "attack"), {
        "fgsm_accuracy": by_eps(sweep.accuracy), "fgsm_loss": by_eps(sweep.loss),
        "success_rate": by_eps(sweep.success_rate), "linf_mean": by_eps(sweep.linf_mean),
        "l2_mean": by_eps(sweep.l2_mean), "clean_accuracy": sweep.clean_accuracy,
        "clean_loss": sweep.clean_loss, "layer": layer_info, "scan_samples": len(scan_images),
        "labels": mode, **ctx.runtime(),
    })  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
