"""evaluate: attack the original, hardened, random and inverse variants (method.md section 6)."""

import sys
import time

import pandas as pd
import torch

from fragile_neurons import evaluate, io, paths
from fragile_neurons.config import epsilon_labels, epsilon_values
from fragile_neurons.errors import DataError
from fragile_neurons.figures.results import robustness_figure
from fragile_neurons.layers import resolve_layer
from fragile_neurons.models import load_checkpoint
from fragile_neurons.robustness import FGSMSweep
from fragile_neurons.stage import Context, run_stage

FOLD_TOLERANCE = 1e-4  # relative logit difference allowed between folded and gated hardening


def main(ctx: Context) -> None:
    """Evaluate: metrics/<run>/evaluate.json, plots/<run>/evaluate.csv and robustness.png."""
    start = time.perf_counter()
    test = io.load_split(paths.prepared(ctx.name, "test"))
    model, spec = load_checkpoint(paths.model(ctx.name), arch=ctx.run["arch"])
    folded, _ = load_checkpoint(paths.hardened(ctx.name), arch=ctx.run["arch"])
    model.to(ctx.device)
    folded.to(ctx.device)
    example = torch.zeros(1, spec["channels"], spec["size"], spec["size"], device=ctx.device)
    layer = resolve_layer(model, example, ctx.params["scan"]["layer"])
    table = pd.read_csv(paths.plot(ctx.name, "gains.csv")).sort_values("neuron")
    gains = torch.tensor(table["gain"].tolist(), dtype=torch.float32)
    inverse = torch.tensor(table["inverse_gain"].tolist(), dtype=torch.float32)

    cfg = ctx.params["evaluate"]
    eps, names = epsilon_values(ctx.run), epsilon_labels(ctx.run)
    setup = evaluate.Setup(
        epsilons=eps, batch_size=ctx.params["batch_size"], device=ctx.device,
        label_mode=ctx.run["attack"]["labels"], pgd_steps=cfg["pgd"]["steps"],
        pgd_samples=cfg["samples"], seed=ctx.params["seed"],
    )  # fmt: skip
    images, labels = test["images"], test["labels"]
    difference = evaluate.folded_difference(
        folded, model, layer, gains, images[: cfg["samples"]], setup
    )
    if difference > FOLD_TOLERANCE:
        raise DataError(f"{paths.hardened(ctx.name)} does not hold gains.csv's gains (relative "
                        f"logit difference {difference:.2g}): rerun harden")  # fmt: skip

    attack = io.load_tensors(
        paths.attack_sweep(ctx.name), keys=("sweep", "label_mode", "batch_size")
    )  # the original under FGSM
    made_with = (attack["label_mode"], attack["batch_size"])
    try:
        source = FGSMSweep(**attack["sweep"])
        evaluate.check_sweep(source, images, setup)
    except (TypeError, ValueError) as err:
        raise DataError(f"{paths.attack_sweep(ctx.name)}: {err}; rerun attack") from err
    if made_with != (setup.label_mode, setup.batch_size):
        raise DataError(f"{paths.attack_sweep(ctx.name)} was made with labels {made_with[0]!r} "
                        f"and batch size {made_with[1]}; rerun attack")  # fmt: skip
    gates = evaluate.variants(gains, inverse, cfg["random_controls"], ctx.generator)

    def progress(name):
        print(f"evaluate {ctx.name}: {name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    results = evaluate.attack_variants(model, layer, gates, images, labels, setup, progress, source)
    summary = evaluate.summarize(results, eps, names, table["magnitude"].to_numpy(), gates)
    frame = pd.DataFrame(evaluate.curves(summary, eps, names))
    io.write_csv(paths.plot(ctx.name, "evaluate.csv"), evaluate.wide_curves(frame))
    io.save_figure(
        paths.plot(ctx.name, "robustness.png"), robustness_figure(frame, summary, ctx.name)
    )
    io.write_json(paths.metrics(ctx.name, "evaluate"), {
        **summary, "epsilons": names, "labels": setup.label_mode,
        "samples": {"fgsm": len(images), "transfer": len(images),
                    "pgd": min(cfg["samples"], len(images))},
        "pgd_steps": setup.pgd_steps, "random_controls": cfg["random_controls"],
        "hardened_checkpoint_difference": difference, **ctx.runtime(),
    })  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
