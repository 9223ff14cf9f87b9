"""label: fragility scores and labels from the scan's measurements (method.md section 3)."""

import pandas as pd

from fragile_neurons import io, paths
from fragile_neurons.errors import DataError
from fragile_neurons.figures.scan import filters_figure, impact_figure
from fragile_neurons.fragility import impact_scores, label_count, neuron_table
from fragile_neurons.models import load_checkpoint
from fragile_neurons.scan import ScanResult
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Label: metrics/<run>/scan.json, plots/<run>/neurons.csv, impact.png and filters.png."""
    blob = io.load_tensors(paths.scan_cache(ctx.name), keys=("epsilon_labels", "layer"))
    summary = io.read_json(paths.scan_cache(ctx.name).with_name("summary.json"))
    result, names, layer = ScanResult.from_dict(blob), blob["epsilon_labels"], blob["layer"]
    cfg = ctx.params["scan"]
    scores = impact_scores(
        result.intact_correct, result.dropped_correct, result.epsilons, result.samples
    )
    neurons = neuron_table(scores, cfg["score"], cfg["label_fraction"])

    # the attack stage's m_k (the same at every eps) and its share D_k, averaged over E+
    targeting = pd.read_csv(paths.plot(ctx.name, "targeting.csv"))
    targeting = targeting[targeting["epsilon"] > 0].groupby("neuron")
    attack = targeting.agg(magnitude=("magnitude", "first"), share=("share", "mean"))
    if list(attack.index) != list(neurons["neuron"]):
        raise DataError("targeting.csv and the scan disagree on the neurons: rerun attack and scan")
    neurons = neurons.join(attack, on="neuron")
    io.write_csv(paths.plot(ctx.name, "neurons.csv"), neurons)

    def members(mask):
        return [int(k) for k in neurons["neuron"][mask]]

    io.write_json(paths.metrics(ctx.name, "scan"), {
        "neurons": len(neurons), "fragile": members(neurons["label"] == "fragile"),
        "robust": members(neurons["label"] == "robust"),
        "antifragile": members(neurons["antifragile"]),
        "score": cfg["score"], "label_fraction": cfg["label_fraction"],
        "label_count": label_count(len(neurons), cfg["label_fraction"]),
        "intact_accuracy": summary["intact_accuracy"], "intact_loss": summary["intact_loss"],
        "layer": layer, "samples": result.samples, "adversarial": summary["adversarial"],
    })  # fmt: skip

    title = f"{ctx.name}: {layer['conv']}, phi = {cfg['score']} impact"
    model, _ = load_checkpoint(paths.model(ctx.name), arch=ctx.run["arch"])
    weights = model.get_submodule(layer["conv"]).weight.detach().numpy()
    labels, antifragile = list(neurons["label"]), list(neurons["antifragile"])
    impact = (result.intact_correct[None, :] - result.dropped_correct).numpy() / result.samples
    io.save_figure(paths.plot(ctx.name, "impact.png"),
                   impact_figure(impact, names, labels, antifragile, title))  # fmt: skip
    io.save_figure(paths.plot(ctx.name, "filters.png"),
                   filters_figure(weights, labels, antifragile, neurons["phi"], title))  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
