"""Benchmark: which primary's attack is strong enough (method.md section 6, "Strength of the
primary's attack"), measured on a run's trained network against AutoAttack.

    PYTHONPATH=src python benchmarks/calibrate_attack.py mnist --images 500 \
        --out /tmp/cal_mnist.json
    PYTHONPATH=src python benchmarks/calibrate_attack.py cifar10 --candidates pgd-10 apgd-ce-50

On the first `--images` images of the prepared test split (default 500; the PGD images are the
first `evaluate.samples` of them), at every epsilon of E+ of the run (params.yaml), the original
network's accuracy under AutoAttack (APGD-CE and APGD-DLR as the masking check runs them,
`evaluate.autoattack.steps` iterations, default 100 as AutoAttack's standard; an image is correct
only if correct under both) and under each candidate (`--candidates`; default every one of
CANDIDATES): `pgd-<steps>[x<restarts>]` (fixed-step PGD, step eps/4, random start) or
`apgd-ce-<steps>[x<restarts>]` (APGD-CE), run as the evaluate stage runs the primary's attack
(`adversarial.attack_correct`: the run's labels, seed `seed`, params' batch size and device),
each with its wall time. Prints the table (eps, candidate, accuracy, AutoAttack, gap = accuracy
minus AutoAttack, seconds) and which candidates meet the bound (every gap <= CALIBRATION_GAP);
`--out` writes it as JSON. Needs models/<run>/model.pt and data/prepared/<run>/test.pt (`dvc
repro train@<run>`); uses torch threads and the device as params.yaml says (`--threads` to
override); writes nothing else.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from fragile_neurons.attacks import masking
from fragile_neurons.attacks.adversarial import attack_correct
from fragile_neurons.attacks.robustness import CALIBRATION_GAP, calibration_table
from fragile_neurons.network.models import load_trained
from fragile_neurons.running.config import epsilon_labels, epsilon_values, get_run, load_params
from fragile_neurons.running.runtime import seed_everything, select_device, use_threads
from fragile_neurons.storage import io, paths
from fragile_neurons.storage.io import write_json

CANDIDATES = ("pgd-10", "pgd-100", "pgd-20x3", "apgd-ce-20", "apgd-ce-50", "apgd-ce-100")
CANDIDATE = re.compile(r"(pgd|apgd-ce)-([1-9][0-9]*)(?:x([1-9][0-9]*))?")


def parse_candidate(text: str) -> dict:
    """`pgd-20x3` -> {"attack": "pgd", "steps": 20, "restarts": 3}; argparse's error otherwise."""
    match = CANDIDATE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected pgd-<steps>[x<restarts>] or apgd-ce-<steps>[x<restarts>], "
            "e.g. pgd-20x3 or apgd-ce-50"
        )
    attack, steps, restarts = match.groups()
    return {"attack": attack, "steps": int(steps), "restarts": int(restarts or 1)}


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run of params.yaml (mnist | cifar10)")
    parser.add_argument("--images", type=int, default=500, help="the first N test images")
    parser.add_argument(
        "--candidates", nargs="+", type=parse_candidate, default=None,
        help=f"the attacks to measure (default: {' '.join(CANDIDATES)})",
    )  # fmt: skip
    parser.add_argument(
        "--autoattack-steps",
        type=int,
        default=None,
        help="APGD iterations per loss (default: evaluate.autoattack.steps)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "params.yaml's `threads`)")  # fmt: skip
    parser.add_argument("--params", default="params.yaml", help="the params file")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images {args.images}: expected an integer >= 1")
    if args.autoattack_steps is not None and args.autoattack_steps < 1:
        parser.error(f"--autoattack-steps {args.autoattack_steps}: expected an integer >= 1")
    if args.candidates is None:
        args.candidates = [parse_candidate(c) for c in CANDIDATES]
    return args


def name_of(candidate: dict) -> str:
    """A candidate as `--candidates` names it: pgd-10, pgd-20x3, apgd-ce-50."""
    restarts = candidate["restarts"]
    return f"{candidate['attack']}-{candidate['steps']}" + (f"x{restarts}" if restarts > 1 else "")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def calibrate(
    model, images, labels, epsilons: list[float], names: list[str], candidates: list[dict], *,
    autoattack_steps: int, seed: int, batch_size: int, device: torch.device, label_mode: str,
) -> list[dict]:  # fmt: skip
    """The rows of the table: per epsilon of E+ (AutoAttack first, then each candidate) and
    candidate, {epsilon, candidate, accuracy, autoattack, gap, seconds}."""
    options = {"seed": seed, "batch_size": batch_size, "device": device}
    model.eval().to(device)
    rows = []
    for eps, label in zip(epsilons, names, strict=True):
        if eps == 0:
            continue

        def autoattack(eps=eps):
            apgd = [
                masking.apgd_correct(
                    model, images, labels, eps, loss=loss, steps=autoattack_steps, **options
                )  # fmt: skip
                for loss in masking.LOSSES
            ]
            return apgd[0] & apgd[1]

        worst, seconds = timed(autoattack)
        reference = worst.double().mean().item()
        rows.append({"epsilon": label, "candidate": f"autoattack-{autoattack_steps}",
                     "accuracy": reference, "autoattack": reference, "gap": 0.0,
                     "seconds": seconds})  # fmt: skip
        for candidate in candidates:
            correct, seconds = timed(
                lambda c=candidate, eps=eps: attack_correct(
                    model, images, labels, eps, label_mode=label_mode, **c, **options
                )
            )
            accuracy = correct.double().mean().item()
            rows.append({"epsilon": label, "candidate": name_of(candidate), "accuracy": accuracy,
                         "autoattack": reference, "gap": accuracy - reference,
                         "seconds": seconds})  # fmt: skip
    return rows


def verdicts(rows: list[dict]) -> dict[str, dict]:
    """Per candidate: its largest gap and whether every gap is within the bound, by the rule the
    baseline applies (`robustness.calibration_table`), and its seconds summed over the epsilons."""
    by_candidate: dict[str, list[dict]] = {}
    for row in rows:
        if not row["candidate"].startswith("autoattack"):
            by_candidate.setdefault(row["candidate"], []).append(row)
    out = {}
    for name, mine in by_candidate.items():
        table = calibration_table(
            [r["epsilon"] for r in mine],
            name,
            [r["accuracy"] for r in mine],
            [r["autoattack"] for r in mine],
        )
        out[name] = {
            "max_gap": table["calibration_max_gap"],
            "calibrated": table["calibrated"],
            "seconds": sum(r["seconds"] for r in mine),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    params = load_params(args.params)
    run = get_run(params, args.run)
    use_threads(params["threads"] if args.threads is None else args.threads)
    device = select_device(params["device"])
    seed_everything(params["seed"], device)
    test = io.load_split(paths.prepared(args.run, "test"), run["dataset"])
    model, _ = load_trained(args.run, run)
    masking.require_torchattacks(1)
    n = min(args.images, len(test["labels"]))
    images, labels = test["images"][:n], test["labels"][:n]
    steps = args.autoattack_steps or params["evaluate"]["autoattack"]["steps"]
    rows = calibrate(
        model, images, labels, epsilon_values(run), epsilon_labels(run), args.candidates,
        autoattack_steps=steps, seed=params["seed"], batch_size=params["batch_size"],
        device=device, label_mode=run["attack"]["labels"],
    )  # fmt: skip
    print(f"{args.run}: {n} test images, {torch.get_num_threads()} threads on {device.type}, "
          f"bound: every gap <= {CALIBRATION_GAP}")  # fmt: skip
    print(f"{'eps':>6}  {'candidate':<16}{'accuracy':>9}{'AutoAttack':>11}{'gap':>8}{'seconds':>9}")
    for r in rows:
        print(f"{r['epsilon']:>6}  {r['candidate']:<16}{r['accuracy']:>9.3f}"
              f"{r['autoattack']:>11.3f}{r['gap']:>+8.3f}{r['seconds']:>9.1f}")  # fmt: skip
    summary = verdicts(rows)
    for name, entry in summary.items():
        mark = "meets" if entry["calibrated"] else "misses"
        print(f"{name:<16} max gap {entry['max_gap']:+.3f} ({mark} the bound), "
              f"{entry['seconds']:.1f} s")  # fmt: skip
    if args.out is not None:
        write_json(args.out, {
            "run": args.run, "images": n, "autoattack_steps": steps, "bound": CALIBRATION_GAP,
            "threads": torch.get_num_threads(), "device": device.type,
            "rows": rows, "candidates": summary,
        })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
