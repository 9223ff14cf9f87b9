"""scan: every neuron of the scanned layer dropped in turn, measured clean and under FGSM (§3), on
the scan set S (the first `scan.samples` images of the selection split)."""

from fragile_neurons import io, paths, scan
from fragile_neurons.models import load_trained
from fragile_neurons.records import FGSMSweep, ScanLayer
from fragile_neurons.scanset import scan_set
from fragile_neurons.stage import Context, run_stage


def main(ctx: Context) -> None:
    """Scan: data/scan/<run>/measurements.pt, metrics/<run>/scan.json, plots/<run>/scan.csv."""
    selection = io.load_split(paths.prepared(ctx.name, "selection"), ctx.run["dataset"])
    model, _ = load_trained(ctx.name, ctx.run)
    layer = ScanLayer.load(paths.layer_record(ctx.name), model=model)
    settings = scan.Settings.from_params(ctx.params, ctx.name, ctx.device)
    scan_images, _ = scan_set(selection, settings.samples)
    sweep = FGSMSweep.load(paths.scan_sweep_record(ctx.name), images=scan_images)
    result = scan.run(model, layer, selection, sweep.signs, settings)
    result.save(paths.scan_record(ctx.name))
    io.write_csv(paths.plot(ctx.name, "scan.csv"), result.frame())
    io.write_json(paths.metrics(ctx.name, "scan"), {**scan.metrics(result, layer), **ctx.runtime()})


if __name__ == "__main__":
    run_stage(main)
