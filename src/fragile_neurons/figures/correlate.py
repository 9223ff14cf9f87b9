"""The correlate stage's picture, correlate.png: fragility phi against the attack share D, and
phi against the excess share X with what X is under random perturbations (method.md section 4).
(The correlations per epsilon are in correlate.json's `by_epsilon`.)"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .formats import fixed, p_value, signed  # noqa: E402

# One marker per label, the same in both panels (matplotlib scatter's keywords and the legend's
# name); antifragile: the robust neurons with phi < 0, the robust marker hollow, in the colour
# impact.png and filters.png give them.
LABEL_STYLES = {
    "fragile": {"marker": "^", "c": "tab:red", "label": "fragile"},
    "neutral": {"marker": "o", "c": "tab:gray", "label": "neutral"},
    "robust": {"marker": "s", "c": "tab:blue", "label": "robust"},
    "antifragile": {"marker": "s", "facecolors": "none", "edgecolors": "tab:green",
                    "label": "robust, antifragile (φ < 0)"},
}  # fmt: skip


def label_styles(table: pd.DataFrame) -> pd.Series:
    """Each neuron's key of LABEL_STYLES: its label, or antifragile."""
    return table["label"].where(~table["antifragile"].astype(bool), "antifragile")


def _scatter_by_label(ax, table: pd.DataFrame, x: str) -> None:
    """phi against the column `x`, one marker per label (LABEL_STYLES)."""
    styles = label_styles(table)
    for key, style in LABEL_STYLES.items():
        rows = table[styles == key]
        if len(rows):
            ax.scatter(rows[x], rows["phi"], s=30, linewidths=1, **style)


def correlation_figure(table: pd.DataFrame, summary: dict, run: str):
    """Left: phi against the mean attack share D, one point per neuron marked by its label
    (LABEL_STYLES, as in the right panel), the most targeted neurons ringed; the statistics in
    the title. Right: phi against the excess share X, with X of a second random perturbation
    against the first (N's null) for each neuron and its band (2.5 to 97.5 percent over
    neurons): points outside it are aimed at (X > 1) or avoided (X < 1) by the attack more than
    noise would be. One legend for both panels, below them."""
    fig, (ax, cx) = plt.subplots(
        1, 2, figsize=(12, 4.8), width_ratios=(1.3, 1.2), layout="constrained"
    )
    _scatter_by_label(ax, table, "share")
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
    ax.set_title(
        f"{run}: ρ = {signed(summary['spearman_rho'])} (p = {p_value(summary['spearman_p'])}), "
        f"τ = {signed(summary['kendall_tau'])} (p = {p_value(summary['kendall_p'])}),\n"
        f"r = {signed(summary['pearson_r'])} (p = {p_value(summary['pearson_p'])}); "
        f"fragile ∩ targeted: {summary['overlap']} of {summary['fragile']}, "
        f"Jaccard {fixed(summary['jaccard'])} (p = {p_value(summary['jaccard_p'])})",
        fontsize=9,
    )

    _excess_panel(cx, table, summary)
    entries = {}  # legend name: handle, each once, the labels' markers first
    for panel in (ax, cx):
        handles, names = panel.get_legend_handles_labels()
        entries |= {n: h for h, n in zip(handles, names, strict=True) if n not in entries}
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=4, fontsize=8,
               frameon=False)  # fmt: skip
    return fig


def _excess_panel(ax, table: pd.DataFrame, summary: dict) -> None:
    """phi against X, marked by label, with the null band of X and the line X = 1."""
    null = table["null_excess"].dropna()
    if len(null):
        low, high = null.quantile(0.025), null.quantile(0.975)
        band = f"X of random noise, 95%: {low:.3f} to {high:.3f}"
        ax.axvspan(low, high, color="gold", alpha=0.45, label=band, zorder=0)
        for edge in (low, high):
            ax.axvline(edge, color="goldenrod", linewidth=1, linestyle="--", zorder=1)
        rows = table.loc[null.index]
        ax.scatter(null, rows["phi"], marker="x", c="goldenrod", s=18, linewidths=0.8,
                   label="X of random noise, per neuron", zorder=2)  # fmt: skip
    ax.axvline(1.0, color="black", linewidth=0.5)
    _scatter_by_label(ax, table, "excess_share")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("excess share X = mean D / mean N")
    ax.set_ylabel("fragility φ")
    head = summary["headline"]
    ax.set_title(
        f"φ ({summary['score']}) against X: ρ = {signed(head['excess_spearman_rho'])} "
        f"(p = {p_value(head['excess_spearman_p'])});\nagainst N: "
        f"ρ = {signed(head['noise_spearman_rho'])}, against G: "
        f"ρ = {signed(head['filter_gain_spearman_rho'])}",
        fontsize=9,
    )
