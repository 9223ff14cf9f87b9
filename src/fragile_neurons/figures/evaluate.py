"""The evaluate stage's picture, robustness.png: accuracy under attack of the hardened network and
its controls (method.md section 6)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .formats import fixed, p_value, signed  # noqa: E402

VARIANT_STYLES = {  # variant: (colour, line style, legend name)
    "original": ("black", "-", "original"),
    "hardened": ("tab:red", "-", "hardened"),
    "random": ("tab:gray", "--", "random sets (mean ± std)"),
    "inverse": ("tab:blue", ":", "inverse (roles swapped)"),
    "compress_only": ("tab:orange", "-.", "compress-only"),
    "amplify_only": ("tab:purple", "-.", "amplify-only"),
    "recalibrated": ("tab:green", "-", "hardened+recalibrated"),
    "original_recalibrated": ("tab:olive", "-", "original recalibrated"),
}
ATTACK_TITLES = {
    "fgsm": "FGSM, white-box",
    "pgd": "PGD, white-box",
    "transfer": "FGSM transferred from the original",
}


def robustness_figure(frame: pd.DataFrame, summary: dict, run: str):
    """Accuracy against epsilon for every variant, one panel per attack (FGSM, PGD, transfer);
    the random control as its mean with a band of one std over draws; AUC+ in the legends; in
    the titles the hardening's AUC+ gain with its bootstrap 95% interval, and its margin over
    random with the permutation p-value. Sized to be read at the README's width (about 900
    pixels): the panels' text at 11 points or more of a 13-inch-wide figure, legends inside."""
    attacks = [a for a in ATTACK_TITLES if a in set(frame["attack"])]
    with plt.rc_context({"font.size": 12}):
        return _draw(frame, summary, run, attacks)


def _draw(frame: pd.DataFrame, summary: dict, run: str, attacks: list[str]):
    fig, axes = plt.subplots(
        1, len(attacks), figsize=(4.4 * len(attacks), 5.0), squeeze=False, sharey=True
    )
    for ax, attack in zip(axes[0], attacks, strict=True):
        for variant, (colour, style, name) in VARIANT_STYLES.items():
            rows = frame[(frame["variant"] == variant) & (frame["attack"] == attack)]
            if rows.empty:
                continue
            area = summary["variants"][variant][attack]["auc_plus"]
            ax.plot(
                rows["epsilon"],
                rows["accuracy"],
                color=colour,
                linestyle=style,
                marker="o",
                markersize=3,
                label=f"{name.split(' (')[0]}: {fixed(area, 3)}",
            )
            std = rows["accuracy_std"].fillna(0.0)
            if std.any():
                ax.fill_between(
                    rows["epsilon"],
                    rows["accuracy"] - std,
                    rows["accuracy"] + std,
                    color=colour,
                    alpha=0.25,
                    linewidth=0,
                )
        eps = frame.drop_duplicates("epsilon")
        ax.set_xticks(eps["epsilon"], eps["epsilon_label"], fontsize=10, rotation=45)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ε (pixel units)")
        ax.grid(alpha=0.3)
        gain = summary["gain"][attack]["auc_plus"]
        margin = summary["margin_over_random"][attack]["auc_plus"]
        samples = summary["samples"]
        images = f"{samples[attack]} images"
        if attack == "pgd" and samples["pgd_random"] != samples["pgd"]:
            images += f", random: {samples['pgd_random']}"
        ax.set_title(
            f"{ATTACK_TITLES[attack]}\n({images})\n"
            f"gain {signed(gain['value'], 3)} "
            f"[{signed(gain['ci_low'], 3)}, {signed(gain['ci_high'], 3)}]\n"
            f"vs random {signed(margin['mean'], 3)} (p = {p_value(margin['p_value'])})",
            fontsize=11,
        )
        ax.legend(fontsize=10, loc="upper right", title="AUC+", title_fontsize=10)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(
        f"{run}: accuracy under attack (AUC+: area under the curve over ε > 0 / its range;\n"
        "gain: hardened minus original AUC+, with its bootstrap 95% CI)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig
