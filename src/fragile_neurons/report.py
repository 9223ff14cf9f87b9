"""The headline results of the workspace's runs as Markdown tables (the README's results section).

python -m fragile_neurons.report            # every run of params.yaml that has its metrics
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import paths
from .config import load_params
from .io import read_json


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(value) -> str:
    return "n/a" if value is None else f"{value:.2g}"


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
            f"| {_fmt(train['test_accuracy'], 4)} "
            f"| {_fmt(corr['spearman_rho'])} ({_p(corr['spearman_p'])}) "
            f"| {_fmt(corr['jaccard'])} ({_p(corr['jaccard_p'])}) "
            f"| {_fmt(head['fgsm_auc_gain'])} / {_fmt(head['pgd_auc_gain'])} "
            f"| {_fmt(head['fgsm_margin_over_random'])} / {_fmt(head['pgd_margin_over_random'])} |"
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
            + " | ".join(_fmt(attack["fgsm_accuracy"][e], 4) for e in labels)
            + " |",
            "| success rate | "
            + " | ".join(_fmt(attack["success_rate"][e]) for e in labels)
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
        for attack in ("fgsm", "pgd", "transfer"):
            r = result[attack]
            std = r.get("auc_std")
            cells.append(_fmt(r["auc"]) + ("" if std is None else f" ± {_fmt(std)}"))
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
