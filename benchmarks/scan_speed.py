"""Benchmark: the fast nodal-dropout scan against the naive one, on a run's real data and model.

    .venv/bin/python benchmarks/scan_speed.py [run] [--samples N] [--threads T] [--naive-batch B]
                                              [--rev COMMIT_OR_EXPERIMENT]

Both scans measure every dropped network of the run's scanned layer on the same scan set (the
first `scan.samples` images of the selection split; --samples to use fewer) at every epsilon of
the run, with the FGSM signs the attack stage saved (computed here when that stage has not run
yet). The naive scan runs the whole network once per neuron and epsilon, the neuron dropped by
a forward hook, on batches of params `batch_size` images (--naive-batch to change). Prints
wall-clock and CPU seconds, the speed-up, and whether the per-neuron accuracies and clean
discordant counts (images lost and gained against the intact network) agree exactly (exit
status 1 if not). Needs the prepared data and the trained model (`dvc repro train@<run>`);
writes nothing. `--rev` takes the params, the prepared selection split, the model and the scan
sweep of another commit or DVC experiment instead of the workspace's, read from DVC's cache:
`--rev mnist-resnet18-s0` benchmarks the ResNet-18 of that experiment (docs/guide.md: "The paper's
ResNet-18 configurations"). Timings on a shared machine are noisy: when other processes keep
the cores busy, --threads 1 or OMP_WAIT_POLICY=PASSIVE in the environment give steadier numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import naive_scan  # noqa: E402  (the tests' oracle: the whole network per neuron)

from fragile_neurons.attacks.adversarial import gradient_signs
from fragile_neurons.attacks.dropout import scan, with_clean
from fragile_neurons.network.inference import as_input
from fragile_neurons.network.layers import resolve_layer
from fragile_neurons.network.models import load_checkpoint
from fragile_neurons.running.config import epsilon_labels, epsilon_values, get_run, load_params
from fragile_neurons.running.runtime import keep_freed_memory, seed_everything, select_device
from fragile_neurons.storage import io, paths
from fragile_neurons.storage.records import FGSMSweep


def commit_of(rev: str) -> str:
    """The commit of a git revision or of a DVC experiment's name (refs/exps/.../<name>)."""
    found = subprocess.run(["git", "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    if found:
        return found
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)",
                           "refs/exps"], capture_output=True, text=True).stdout  # fmt: skip
    named = [line.split()[0] for line in refs.splitlines() if line.endswith(f"/{rev}")]
    if len(named) != 1:
        raise SystemExit(f"--rev {rev}: not a commit, nor the name of one DVC experiment")
    return named[0]


def checkout(rev: str, run: str, folder: Path) -> None:
    """Write into `folder` the files of `run` that the benchmark reads, as they are at `rev`."""
    import dvc.api

    commit = commit_of(rev)
    params = subprocess.run(["git", "show", f"{commit}:params.yaml"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    (folder / "params.yaml").write_text(params)
    wanted = [paths.prepared(run, "selection"), paths.model(run), paths.scan_sweep_record(run)]
    for path in wanted:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with dvc.api.open(str(path), repo=".", rev=commit, mode="rb") as source:
                target.write_bytes(source.read())
        except FileNotFoundError:
            if path != wanted[-1]:  # the scan sweep is optional: computed here when absent
                raise SystemExit(f"--rev {rev}: {path} is not in that commit's outputs") from None


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="mnist", help="a key of `runs` (mnist)")
    parser.add_argument("--samples", type=int, default=None, help="scan images (scan.samples)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--naive-batch", type=int, default=None, help="naive batch (batch_size)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--rev", default=None, help="a commit or DVC experiment whose files to use (its params)"
    )
    args = parser.parse_args()
    if args.rev:
        with tempfile.TemporaryDirectory(prefix="scan-speed-") as folder:
            checkout(args.rev, args.run, Path(folder))
            os.chdir(folder)
            benchmark(args)
    else:
        benchmark(args)


def benchmark(args: argparse.Namespace) -> None:
    keep_freed_memory()  # as the stages do
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    run = get_run(params, args.run)
    device = select_device(params["device"])
    seed_everything(params["seed"], device)
    for path in (paths.prepared(args.run, "selection"), paths.model(args.run)):
        if not Path(path).exists():
            raise SystemExit(f"{path} is missing: run `dvc repro train@{args.run}` first")

    selection = io.load_split(paths.prepared(args.run, "selection"))
    model, _ = load_checkpoint(paths.model(args.run), arch=run["arch"])
    samples = args.samples or params["scan"]["samples"]
    images, labels = selection["images"][:samples], selection["labels"][:samples]
    layer = resolve_layer(model, as_input(images[:1], device), params["scan"]["layer"])
    batch = params["batch_size"]
    cache = paths.scan_sweep_record(args.run)
    sweep = FGSMSweep.load(cache) if cache.exists() else None
    if sweep is not None and len(sweep.signs) >= len(images):
        signs, source = sweep.signs[: len(images)], str(cache)
    else:
        mode = run["attack"]["labels"]
        signs = gradient_signs(
            model, images, labels, batch_size=batch, device=device, label_mode=mode
        )
        source = "computed here"
    eps, _ = with_clean(epsilon_values(run), epsilon_labels(run))

    fast, fast_wall, fast_cpu = timed(
        lambda: scan(model, layer, images, labels, signs, eps, batch_size=batch, device=device)
    )
    naive_batch = args.naive_batch or batch
    naive, naive_wall, naive_cpu = timed(
        lambda: naive_scan(
            model, layer, images, labels, signs, eps, batch_size=naive_batch, device=device
        )
    )
    same = all(
        torch.equal(getattr(fast, name), getattr(naive, name))
        for name in ("intact_correct", "dropped_correct", "dropped_lost", "dropped_gained")
    )
    loss_gap = (fast.dropped_loss - naive.dropped_loss).abs().max().item()

    print(
        f"run {args.run}: {layer.conv_name} ({layer.channels} neurons), {len(images)} images, "
        f"{len(eps)} epsilons, {torch.get_num_threads()} threads on {device.type}; "
        f"signs: {source}"
    )
    print(f"{'scan':<22}{'wall s':>9}{'cpu s':>9}")
    print(f"{'fast (' + fast.path + ')':<22}{fast_wall:>9.1f}{fast_cpu:>9.1f}")
    print(f"{f'naive (batch {naive_batch})':<22}{naive_wall:>9.1f}{naive_cpu:>9.1f}")
    print(f"speed-up: {naive_wall / fast_wall:.1f}x wall, {naive_cpu / fast_cpu:.1f}x cpu")
    print(
        f"per-neuron accuracies and clean discordant counts identical: {same}; largest loss "
        f"difference {loss_gap:.2e}"
    )
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
