"""The answers to the paper's two claims: fragility against the attack share (scatter), and the
robustness curves of the hardened network and its controls."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

LABEL_COLOURS = {"fragile": "tab:red", "neutral": "tab:gray", "robust": "tab:blue"}
VARIANT_STYLES = {  # variant: (colour, line style, legend name)
    "original": ("black", "-", "original"),
    "hardened": ("tab:red", "-", "hardened"),
    "random": ("tab:gray", "--", "random sets (mean ± std)"),
    "inverse": ("tab:blue", ":", "inverse (roles swapped)"),
}
ATTACK_TITLES = {
    "fgsm": "FGSM, white-box",
    "pgd": "PGD, white-box",
    "transfer": "FGSM transferred from the original",
}


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def _fixed(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2g}"


def correlation_figure(table: pd.DataFrame, summary: dict, run: str):
    """Left: phi against the mean attack share D, one point per neuron coloured by its label
    (antifragile neurons hollow), the most targeted neurons ringed; the statistics in the title.
    Right: the three correlation coefficients per epsilon (filled where p < 0.05)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6), width_ratios=(1.35, 1))
    antifragile = table["antifragile"] if "antifragile" in table else pd.Series(False, table.index)
    for label, colour in LABEL_COLOURS.items():
        rows = table[table["label"] == label]
        hollow = antifragile[rows.index].astype(bool)
        if (~hollow).any():
            ax.scatter(rows["share"][~hollow], rows["phi"][~hollow], c=colour, s=30, label=label)
        if hollow.any():
            ax.scatter(rows["share"][hollow], rows["phi"][hollow], facecolors="none",
                       edgecolors=colour, s=30, label=f"{label}, antifragile")  # fmt: skip
    top = table[table["targeted"]]
    ax.scatter(top["share"], top["phi"], facecolors="none", edgecolors="black", s=110,
               linewidths=0.8, label="most targeted")  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("attack share D (mean over ε > 0)")
    ax.set_ylabel("fragility φ")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"{run}: ρ = {_number(summary['spearman_rho'])} (p = {_p(summary['spearman_p'])}), "
        f"τ = {_number(summary['kendall_tau'])} (p = {_p(summary['kendall_p'])}),\n"
        f"r = {_number(summary['pearson_r'])} (p = {_p(summary['pearson_p'])}); "
        f"fragile ∩ targeted: {summary['overlap']} of {summary['fragile']}, "
        f"Jaccard {_fixed(summary['jaccard'])} (p = {_p(summary['jaccard_p'])})",
        fontsize=9,
    )

    labels = list(summary["by_epsilon"])
    positions = range(len(labels))
    for key, p_key, name, marker in (
        ("spearman_rho", "spearman_p", "Spearman ρ", "o"),
        ("kendall_tau", "kendall_p", "Kendall τ", "s"),
        ("pearson_r", "pearson_p", "Pearson r", "^"),
    ):
        values = [summary["by_epsilon"][e][key] for e in labels]
        significant = [(summary["by_epsilon"][e][p_key] or 1.0) < 0.05 for e in labels]
        (line,) = bx.plot(positions, values, marker=marker, fillstyle="none", label=name)
        bx.plot([i for i, s in zip(positions, significant, strict=True) if s],
                [v for v, s in zip(values, significant, strict=True) if s],
                linestyle="none", marker=marker, color=line.get_color())  # fmt: skip
    bx.axhline(0, color="black", linewidth=0.5)
    bx.set_xticks(list(positions), labels)
    bx.set_ylim(-1, 1)
    bx.set_xlabel("ε")
    bx.set_ylabel("correlation of φ with D(ε)")
    bx.set_title("per ε (filled: p < 0.05)", fontsize=9)
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def robustness_figure(frame: pd.DataFrame, summary: dict, run: str):
    """Accuracy against epsilon for every variant, one panel per attack (FGSM, PGD, transfer);
    the random control as its mean with a band of one std over draws; AUCs in the legends."""
    attacks = [a for a in ATTACK_TITLES if a in set(frame["attack"])]
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.2 * len(attacks), 5.0), squeeze=False)
    for ax, attack in zip(axes[0], attacks, strict=True):
        for variant, (colour, style, name) in VARIANT_STYLES.items():
            rows = frame[(frame["variant"] == variant) & (frame["attack"] == attack)]
            if rows.empty:
                continue
            area = summary["variants"][variant][attack]["auc"]
            ax.plot(rows["epsilon"], rows["accuracy"], color=colour, linestyle=style,
                    marker="o", markersize=3, label=f"{name}: AUC {area:.3f}")  # fmt: skip
            std = rows["accuracy_std"].fillna(0.0)
            if std.any():
                ax.fill_between(rows["epsilon"], rows["accuracy"] - std, rows["accuracy"] + std,
                                color=colour, alpha=0.25, linewidth=0)  # fmt: skip
        eps = frame.drop_duplicates("epsilon")
        ax.set_xticks(eps["epsilon"], eps["epsilon_label"], fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ε (pixel units)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        margin = summary["margin_over_random"][attack]
        ax.set_title(
            f"{ATTACK_TITLES[attack]}\nhardening gain {_number(summary['gain'][attack], 3)}, "
            f"over random {_number(margin['mean'], 3)} ± {_p(margin['std'])}",
            fontsize=9,
        )
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    fig.suptitle(f"{run}: accuracy under attack (AUC: area under the curve / ε range)", fontsize=10)
    fig.tight_layout()
    return fig
