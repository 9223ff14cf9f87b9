"""The correlate stage's picture, correlate.png: fragility phi against the attack share D, phi
against the excess share X with the band X falls in under random perturbations, and the
correlations per epsilon (method.md section 4)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..formats import fixed, p_value, signed  # noqa: E402

LABEL_COLOURS = {"fragile": "tab:red", "neutral": "tab:gray", "robust": "tab:blue"}


def correlation_figure(table: pd.DataFrame, summary: dict, run: str):
    """Left: phi against the mean attack share D, one point per neuron coloured by its label
    (antifragile neurons hollow), the most targeted neurons ringed; the statistics in the title.
    Middle: phi against the excess share X, with the band (2.5 to 97.5 percent over neurons) of
    X for a second random perturbation against the first, N's null: points outside it are aimed
    at (X > 1) or avoided (X < 1) by the attack more than noise would be. Right: the three
    correlation coefficients of phi with D per epsilon (filled where p < 0.05)."""
    fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(16, 4.6), width_ratios=(1.35, 1.2, 1))
    antifragile = table["antifragile"]
    for label, colour in LABEL_COLOURS.items():
        rows = table[table["label"] == label]
        hollow = antifragile[rows.index].astype(bool)
        if (~hollow).any():
            ax.scatter(rows["share"][~hollow], rows["phi"][~hollow], c=colour, s=30, label=label)
        if hollow.any():
            ax.scatter(
                rows["share"][hollow],
                rows["phi"][hollow],
                facecolors="none",
                edgecolors=colour,
                s=30,
                label=f"{label}, antifragile",
            )
    top = table[table["targeted"]]
    ax.scatter(
        top["share"],
        top["phi"],
        facecolors="none",
        edgecolors="black",
        s=110,
        linewidths=0.8,
        label="most targeted",
    )
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("attack share D (mean over ε > 0)")
    ax.set_ylabel("fragility φ")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"{run}: ρ = {signed(summary['spearman_rho'])} (p = {p_value(summary['spearman_p'])}), "
        f"τ = {signed(summary['kendall_tau'])} (p = {p_value(summary['kendall_p'])}),\n"
        f"r = {signed(summary['pearson_r'])} (p = {p_value(summary['pearson_p'])}); "
        f"fragile ∩ targeted: {summary['overlap']} of {summary['fragile']}, "
        f"Jaccard {fixed(summary['jaccard'])} (p = {p_value(summary['jaccard_p'])})",
        fontsize=9,
    )

    _excess_panel(cx, table, summary)

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
        bx.plot(
            [i for i, s in zip(positions, significant, strict=True) if s],
            [v for v, s in zip(values, significant, strict=True) if s],
            linestyle="none",
            marker=marker,
            color=line.get_color(),
        )
    bx.axhline(0, color="black", linewidth=0.5)
    bx.set_xticks(list(positions), labels)
    bx.set_ylim(-1, 1)
    bx.set_xlabel("ε")
    bx.set_ylabel("correlation of φ with D(ε)")
    bx.set_title("per ε (filled: p < 0.05)", fontsize=9)
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _excess_panel(ax, table: pd.DataFrame, summary: dict) -> None:
    """phi against X, coloured by label, with the null band of X and the line X = 1."""
    null = table["null_excess"].dropna()
    if len(null):
        low, high = null.quantile(0.025), null.quantile(0.975)
        band = f"X of random noise, 95%: {low:.3f} to {high:.3f}"
        ax.axvspan(low, high, color="tab:gray", alpha=0.25, label=band)
    ax.axvline(1.0, color="black", linewidth=0.5)
    for label, colour in LABEL_COLOURS.items():
        rows = table[table["label"] == label]
        ax.scatter(rows["excess_share"], rows["phi"], c=colour, s=30, label=label)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("excess share X = mean D / mean N")
    ax.set_ylabel("fragility φ")
    ax.legend(fontsize=8, loc="best")
    head = summary["headline"]
    ax.set_title(
        f"φ ({head['score']}) against X: ρ = {signed(head['excess_spearman_rho'])} "
        f"(p = {p_value(head['excess_spearman_p'])});\nagainst N: "
        f"ρ = {signed(head['noise_spearman_rho'])}, against G: "
        f"ρ = {signed(head['filter_gain_spearman_rho'])}",
        fontsize=9,
    )
