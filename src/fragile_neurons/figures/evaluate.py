"""The evaluate stage's picture, robustness.png: accuracy under attack of the hardened network and
its controls (method.md section 6)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .formats import fixed, p_value, signed  # noqa: E402

VARIANT_STYLES = {  # every variant evaluate writes: (colour, line style, legend name)
    "original": ("black", "-", "original"),
    "hardened": ("tab:red", "-", "hardened"),
    "random": ("tab:gray", "--", "random sets"),
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
ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD", "transfer": "transfer"}
BAND_ALPHA = 0.25


def robustness_figure(frame: pd.DataFrame, summary: dict, run: str):
    """Accuracy against epsilon for every variant in `frame` (`evaluate.curves`), one panel per
    attack (FGSM, PGD, transfer); the random control as the mean of its draws with a band from
    the lowest to the highest draw (`accuracy_low`, `accuracy_high`); in the titles the
    hardening's AUC+ gain with its bootstrap 95% interval, and its margin over random with the
    permutation p-value. One legend below the panels, outside the data: each variant's line and
    its AUC+ under each attack. Sized to be read at the README's width (about 900 pixels): the
    panels' text at 11 points or more of a 13-inch-wide figure."""
    attacks = [a for a in ATTACK_TITLES if a in set(frame["attack"])]
    unknown = set(frame["variant"]) - set(VARIANT_STYLES)
    if unknown:
        raise ValueError(f"no style for the variants {sorted(unknown)}: add them to VARIANT_STYLES")
    with plt.rc_context({"font.size": 12}):
        return _draw(frame, summary, run, attacks)


def _draw(frame: pd.DataFrame, summary: dict, run: str, attacks: list[str]):
    fig, axes = plt.subplots(
        1, len(attacks), figsize=(4.4 * len(attacks), 5.0), squeeze=False, sharey=True,
        layout="constrained",
    )  # fmt: skip
    present = [v for v in VARIANT_STYLES if v in set(frame["variant"])]
    for ax, attack in zip(axes[0], attacks, strict=True):
        for variant in present:
            colour, style, _ = VARIANT_STYLES[variant]
            rows = frame[(frame["variant"] == variant) & (frame["attack"] == attack)]
            ax.plot(rows["epsilon"], rows["accuracy"], color=colour, linestyle=style,
                    marker="o", markersize=3)  # fmt: skip
            if variant == "random":
                ax.fill_between(rows["epsilon"], rows["accuracy_low"], rows["accuracy_high"],
                                color=colour, alpha=BAND_ALPHA, linewidth=0)  # fmt: skip
        eps = frame.drop_duplicates("epsilon")
        ax.set_xticks(eps["epsilon"], eps["epsilon_label"], fontsize=10, rotation=45)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ε (pixel units)")
        ax.grid(alpha=0.3)
        ax.set_title(_title(summary, attack), fontsize=11)
    axes[0][0].set_ylabel("accuracy")
    handles, labels = _legend(summary, present, attacks)
    fig.legend(
        handles, labels, loc="outside lower center", ncol=2 if len(attacks) > 1 else 1,
        fontsize=10, title=f"AUC+ under {' / '.join(ATTACK_NAMES[a] for a in attacks)}",
        title_fontsize=10, frameon=False,
    )  # fmt: skip
    fig.suptitle(
        f"{run}: accuracy under attack (AUC+: area under the curve over ε > 0 / its range;\n"
        "gain: hardened minus original AUC+, with its bootstrap 95% CI)",
        fontsize=11,
    )
    return fig


def _title(summary: dict, attack: str) -> str:
    gain = summary["gain"][attack]["auc_plus"]
    margin = summary["margin_over_random"][attack]["auc_plus"]
    samples = summary["samples"]
    images = f"{samples[attack]} images"
    if attack == "pgd" and samples["pgd_random"] != samples["pgd"]:
        images += f", random: {samples['pgd_random']}"
    return (
        f"{ATTACK_TITLES[attack]}\n({images})\n"
        f"gain {signed(gain['value'], 3)} "
        f"[{signed(gain['ci_low'], 3)}, {signed(gain['ci_high'], 3)}]\n"
        f"vs random {signed(margin['mean'], 3)} (p = {p_value(margin['p_value'])})"
    )


def _legend(summary: dict, variants: list[str], attacks: list[str]) -> tuple[list, list[str]]:
    """A legend entry per variant, its line and its AUC+ under each attack; the random sets' entry
    is their mean's line over the band and names the band (the range over the draws)."""
    handles, labels = [], []
    for variant in variants:
        colour, style, name = VARIANT_STYLES[variant]
        line = Line2D([], [], color=colour, linestyle=style, marker="o", markersize=3)
        areas = " / ".join(fixed(summary["variants"][variant][a]["auc_plus"], 3) for a in attacks)
        if variant == "random":
            draws = summary["variants"]["random"]["draws"]
            band = Patch(color=colour, alpha=BAND_ALPHA, linewidth=0)
            handles.append((band, line))
            labels.append(f"{name}: mean of {draws} draws, band min to max: {areas}")
        else:
            handles.append(line)
            labels.append(f"{name}: {areas}")
    return handles, labels
