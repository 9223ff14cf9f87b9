"""The headline results of the workspace's runs as Markdown tables (the README's results section).

python -m fragile_neurons.report            # every run of params.yaml that has its metrics
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import paths
from .config import ATTACKS, load_params
from .formats import fixed, p_value
from .io import read_json


def headline_table(runs: dict[str, dict]) -> str:
    lines = [
        "| run | data (checksums) | model | test accuracy | Spearman rho (p) | "
        "fragile vs most targeted: Jaccard (p) | AUC gain FGSM / PGD | "
        "margin over random FGSM / PGD |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run, settings in runs.items():
        data = read_json(paths.metrics(run, "data"))
        train = read_json(paths.metrics(run, "train"))
        corr = read_json(paths.metrics(run, "correlate"))
        head = read_json(paths.metrics(run, "evaluate"))["headline"]
        verified = "verified" if data["checksums_verified"] else "NOT verified"
        lines.append(
            f"| {run} | {data['dataset']} ({verified}) | {settings['arch']} "
            f"| {fixed(train['test_accuracy'], 4)} "
            f"| {fixed(corr['spearman_rho'], 3)} ({p_value(corr['spearman_p'])}) "
            f"| {fixed(corr['jaccard'], 3)} ({p_value(corr['jaccard_p'])}) "
            f"| {fixed(head['fgsm_auc_gain'], 3)} / {fixed(head['pgd_auc_gain'], 3)} "
            f"| {fixed(head['fgsm_margin_over_random'], 3)} / "
            f"{fixed(head['pgd_margin_over_random'], 3)} |"
        )
    return "\n".join(lines)


def attack_table(run: str) -> str:
    attack = read_json(paths.metrics(run, "attack"))
    labels = list(attack["fgsm_accuracy"])
    return "\n".join(
        [
            f"| {run}: epsilon | " + " | ".join(labels) + " |",
            "| --- |" + " --- |" * len(labels),
            "| FGSM accuracy | "
            + " | ".join(fixed(attack["fgsm_accuracy"][e], 4) for e in labels)
            + " |",
            "| success rate | "
            + " | ".join(fixed(attack["success_rate"][e], 3) for e in labels)
            + " |",
        ]
    )


def evaluate_table(run: str) -> str:
    variants = read_json(paths.metrics(run, "evaluate"))["variants"]
    lines = [
        f"| {run}: AUC | FGSM | PGD | FGSM transferred |",
        "| --- | --- | --- | --- |",
    ]
    for name, result in variants.items():
        cells = []
        for attack in ATTACKS:
            r = result[attack]
            std = r.get("auc_std")
            cells.append(fixed(r["auc"], 3) + ("" if std is None else f" ± {fixed(std, 3)}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    runs = {
        name: run
        for name, run in load_params(args.params)["runs"].items()
        if Path(paths.metrics(name, "evaluate")).is_file()
    }
    print(headline_table(runs))
    for run in runs:
        print()
        print(attack_table(run))
        print()
        print(evaluate_table(run))


if __name__ == "__main__":
    main()
