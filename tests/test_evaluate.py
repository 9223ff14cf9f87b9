"""Evaluation with controls (method.md section 6)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import gains_record

from fragile_neurons.attacks.adversarial import fgsm_sweep
from fragile_neurons.attacks.robustness import (
    Settings,
    attack_original,
    attack_variants,
    load_source,
)
from fragile_neurons.figures.evaluate import VARIANT_STYLES, robustness_figure
from fragile_neurons.network.gates import fold
from fragile_neurons.network.inference import as_input
from fragile_neurons.network.layers import find_scan_layer
from fragile_neurons.network.models import save_checkpoint
from fragile_neurons.pipeline import harden
from fragile_neurons.pipeline.correlate import json_ready
from fragile_neurons.pipeline.evaluate import (
    curves,
    folded_difference,
    load_hardened,
    summarise,
    variants,
    wide_curves,
)
from fragile_neurons.running.config import ATTACKS
from fragile_neurons.running.errors import DataError
from fragile_neurons.stats.measures import Curve, auc, measure_weights, measures, trapezoid_weights
from fragile_neurons.stats.paired import (
    BOOTSTRAP,
    margin_over_random,
    paired_gain,
    permutation_p,
    resamples,
)
from fragile_neurons.storage.records import Gains

CPU = torch.device("cpu")
EPS = [0.0, 0.1, 0.2]
LABELS = ["0", "0.1", "0.2"]


def _settings(**kw) -> Settings:
    args = {
        "epsilons": EPS,
        "epsilon_labels": LABELS,
        "batch_size": 64,
        "device": CPU,
        "label_mode": "true",
        "pgd_steps": 2,
        "pgd_samples": 32,
        "seed": 0,
        "autoattack_images": 0,
        "autoattack_steps": 2,
    }
    return Settings(**{**args, **kw})


def _attack(variants_: dict, images, labels, settings) -> dict:
    """attack_variants with the original's sweep computed here, as the attack stage does."""
    source = fgsm_sweep(variants_["original"], images, labels, EPS, batch_size=64, device=CPU)
    original = attack_original(variants_["original"], source, images, labels, settings)
    others = {name: model for name, model in variants_.items() if name != "original"}
    original["transfer"] = original["fgsm"]  # the source attacked with its own signs
    return {"original": original, **attack_variants(others, source, images, labels, settings)}


def random_gains(record: Gains, draws: int, generator: torch.Generator) -> torch.Tensor:
    """The harden stage's random controls for the sets and the rule of `record`."""
    rule = {"compress": record.compress, "mode": record.mode, "max_gain": record.max_gain}
    sets = (record.magnitude, record.phi, record.fragile, record.robust)
    return harden.random_gains(*sets, draws, generator, **rule).gains


def _case(model, splits, count: int):
    """The first `count` test images and labels, the scanned layer, and gains that amplify the
    first 8 neurons and compress the last 8."""
    images, labels = splits[1]["images"][:count], splits[1]["labels"][:count]
    layer = find_scan_layer(model, as_input(images[:1], CPU))
    gains = torch.ones(layer.channels)
    gains[:8], gains[-8:] = 2.0, 0.5
    return images, labels, layer, gains


def test_auc_by_hand():
    # trapezoid: 0.1 * (1 + 0.5) / 2 + 0.2 * (0.5 + 0.1) / 2 = 0.135, over a range of 0.3
    assert auc([0, 0.1, 0.3], [1.0, 0.5, 0.1]) == pytest.approx(0.45)
    assert auc([0.05, 0.1, 0.2], [0.7, 0.7, 0.7]) == pytest.approx(0.7)
    assert auc([0.1], [0.4]) == 0.4
    with pytest.raises(ValueError):
        auc([0.2, 0.1], [1.0, 0.5])
    # the weights behind it: half-intervals at the ends, over the range; one epsilon weighs 1
    assert trapezoid_weights([0, 0.1, 0.3]) == pytest.approx([1 / 6, 1 / 2, 1 / 3])
    assert trapezoid_weights([0.2]).tolist() == [1.0]


def _curve(clean: list[int], *attacked: list[int]) -> Curve:
    """A hand-made curve: per image, correct (1) or not on the clean image and at each epsilon."""
    return Curve(torch.tensor(clean).bool(), torch.tensor(list(attacked)).bool())


def test_auc_plus_and_relative_auc_on_hand_made_curves():
    # 10 images; accuracies 1.0, 0.5, 0.1 at epsilons 0, 0.1, 0.3
    curve = _curve([1] * 10, [1] * 10, [1] * 5 + [0] * 5, [1] + [0] * 9)
    got = measures(curve, [0, 0.1, 0.3])
    assert got["clean_accuracy"] == 1.0
    assert got["auc"] == pytest.approx(0.45)  # the trapezoid over E, as auc()
    assert got["auc_plus"] == pytest.approx(0.3)  # over E+ = {0.1, 0.3}: (0.5 + 0.1) / 2
    assert got["relative_auc"] == pytest.approx(0.3)  # over a clean accuracy of 1
    # half the images correct on clean inputs: AUC+ per unit of clean accuracy doubles
    half = _curve([1] * 5 + [0] * 5, [1] * 5 + [0] * 5, [1] * 3 + [0] * 7, [1] + [0] * 9)
    got = measures(half, [0, 0.1, 0.3])
    assert got["auc_plus"] == pytest.approx(0.2) and got["relative_auc"] == pytest.approx(0.4)
    # E+ of one epsilon: AUC+ is the accuracy there
    one = measures(_curve([1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]), [0, 0.2])
    assert one["auc_plus"] == 0.25 and one["auc"] == pytest.approx(0.625)
    # E without 0: AUC and AUC+ are the same area; the clean accuracy still divides
    no_zero = measures(_curve([1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]), [0.1, 0.2])
    assert no_zero["auc"] == no_zero["auc_plus"] == pytest.approx(0.125)
    assert no_zero["relative_auc"] == pytest.approx(0.25)
    # no image correct: the relative AUC is undefined
    assert measures(_curve([0, 0], [0, 0], [0, 0]), [0, 0.1])["relative_auc"] is None


def test_resamples_are_seeded_draws_with_replacement():
    weights = resamples(50, 200, seed=3)
    assert weights.shape == (200, 50)
    assert torch.allclose(weights.sum(dim=1), torch.ones(200, dtype=torch.float64))
    counts = weights * 50
    assert torch.allclose(counts, counts.round(), atol=1e-9) and (counts >= 0).all()
    assert (counts > 1).any()  # with replacement
    assert torch.equal(weights, resamples(50, 200, seed=3))
    assert not torch.equal(weights, resamples(50, 200, seed=4))


def test_paired_bootstrap_of_identical_variants_is_zero():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(200, generator=generator) < 0.9
    attacked = (torch.rand(3, 200, generator=generator) < 0.5) & clean
    curve = Curve(clean, attacked)
    gain = paired_gain(curve, curve, EPS, resamples(200, BOOTSTRAP, seed=0))
    assert set(gain) == {"clean_accuracy", "auc", "auc_plus", "relative_auc"}
    for value in gain.values():
        assert value == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_paired_bootstrap_of_a_known_shift():
    """The hardened variant is the original with 30 of 1000 images turned from wrong to right at
    every epsilon: a gain of 0.03 in every area. The paired interval reflects only those images
    (binomial standard error sqrt(0.03 * 0.97 / 1000) = 0.0054, so +-0.0106 at 95%), far
    narrower than the spread of either curve alone (standard error about 0.016)."""
    n = 1000
    generator = torch.Generator().manual_seed(1)
    original_row = torch.rand(n, generator=generator) < 0.5
    wrong = torch.nonzero(~original_row).flatten()[:30]
    hardened_row = original_row.clone()
    hardened_row[wrong] = True
    full = torch.ones(n, dtype=torch.bool)
    original = Curve(full, torch.stack([full, original_row, original_row]))
    hardened = Curve(full, torch.stack([full, hardened_row, hardened_row]))
    gain = paired_gain(hardened, original, EPS, resamples(n, BOOTSTRAP, seed=0))
    assert gain["clean_accuracy"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert gain["auc_plus"]["value"] == pytest.approx(0.03)
    assert gain["auc"]["value"] == pytest.approx(0.03 * 3 / 4)  # eps 0 weighs 1/4, unchanged
    assert gain["relative_auc"]["value"] == pytest.approx(0.03)
    low, high = gain["auc_plus"]["ci_low"], gain["auc_plus"]["ci_high"]
    assert 0 < low < 0.03 < high
    assert (high - low) / 2 == pytest.approx(1.96 * (0.03 * 0.97 / n) ** 0.5, rel=0.25)
    # the other order: the same interval, negated
    back = paired_gain(original, hardened, EPS, resamples(n, BOOTSTRAP, seed=0))["auc_plus"]
    assert back["ci_low"] == pytest.approx(-high) and back["ci_high"] == pytest.approx(-low)


def test_permutation_p_and_margin():
    assert permutation_p(0.5, [0.1, 0.2, 0.3]) == pytest.approx(1 / 4)  # beats every draw
    assert permutation_p(0.2, [0.1, 0.2, 0.3]) == pytest.approx(3 / 4)  # ties count against
    margin = margin_over_random(0.5, [0.1, 0.2, 0.6], images=7)
    assert margin == {
        "mean": pytest.approx(0.5 - 0.3),
        "std": pytest.approx(np.std([0.1, 0.2, 0.6], ddof=1)),
        "p_value": pytest.approx(2 / 4),
        "hardened_beats": 2,
        "draws": 3,
        "images": 7,
    }
    undefined = margin_over_random(None, [0.1, 0.2], images=7)
    assert undefined["mean"] is None and undefined["p_value"] is None and undefined["draws"] == 2


# Hand-made per-image results on 4 images at epsilons 0 and 0.1 (AUC = (clean + adv) / 2,
# AUC+ = adv accuracy, relative = adv / clean): the measures rank the draws differently.
HAND = {  # name: (clean, at 0.1) -> AUC, AUC+, relative
    "original": ([1, 1, 1, 1], [1, 0, 0, 0]),  # 0.625, 0.25, 0.25
    "hardened": ([1, 1, 0, 0], [1, 0, 0, 0]),  # 0.375, 0.25, 0.5
    "random_0": ([1, 1, 1, 1], [1, 1, 0, 0]),  # 0.75, 0.5, 0.5
    "random_1": ([1, 1, 1, 0], [0, 0, 0, 0]),  # 0.375, 0, 0
    "random_2": ([1, 1, 1, 1], [1, 0, 0, 0]),  # 0.625, 0.25, 0.25
    "inverse": ([1, 1, 1, 1], [1, 1, 1, 0]),  # 0.875, 0.75, 0.75
}
HEADLINE = [
    "clean_accuracy_change",
    "clean_accuracy_change_low",
    "clean_accuracy_change_high",
    *(
        f"{a}_{key}"
        for a in ("fgsm", "pgd", "transfer")
        for key in (
            "auc_plus_gain",
            "auc_plus_gain_low",
            "auc_plus_gain_high",
            "margin_over_random",
            "p_value",
        )
    ),
    *(
        f"{arm}_pgd_auc_plus_gain{end}"
        for arm in ("compress_only", "amplify_only", "recalibrated")
        for end in ("", "_low", "_high")
    ),  # the other arms' primary measure: None where the arm was not measured
]


def _hand_results() -> dict:
    results = {}
    for name, (clean, adversarial) in HAND.items():
        curve = _curve(clean, clean, adversarial)
        results[name] = dict.fromkeys(ATTACKS, curve)
    return results


def test_summary_measures_gains_and_p_values_per_measure():
    summary = summarise(_hand_results(), [0, 0.1], ["0", "0.1"], seed=0)
    v = summary["variants"]
    assert v["hardened"]["pgd"] == {
        "accuracy": {"0": 0.5, "0.1": 0.25},
        "auc": pytest.approx(0.375),
        "auc_plus": pytest.approx(0.25),
        "relative_auc": pytest.approx(0.5),
    }
    assert v["random"]["fgsm"]["auc_plus_draws"] == pytest.approx([0.5, 0.0, 0.25])
    assert v["random"]["fgsm"]["relative_auc"] == pytest.approx(0.25)
    gain = summary["gain"]["fgsm"]
    assert gain["auc"]["value"] == pytest.approx(-0.25)
    assert gain["auc_plus"]["value"] == pytest.approx(0.0)
    assert gain["relative_auc"]["value"] == pytest.approx(0.25)
    assert summary["clean_accuracy_change"]["value"] == pytest.approx(-0.5)
    assert summary["inverse_gain"]["pgd"]["auc_plus"]["value"] == pytest.approx(0.5)
    for interval in (*gain.values(), summary["clean_accuracy_change"]):
        assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]
    margin = summary["margin_over_random"]["transfer"]
    # AUC: hardened 0.375 against 0.75, 0.375, 0.625: 3 draws at least as large
    assert margin["auc"]["p_value"] == pytest.approx(4 / 4) and margin["auc"]["hardened_beats"] == 0
    assert margin["auc"]["mean"] == pytest.approx(0.375 - 1.75 / 3)
    # AUC+: 0.25 against 0.5, 0, 0.25; relative AUC: 0.5 against 0.5, 0, 0.25
    assert margin["auc_plus"]["p_value"] == pytest.approx(3 / 4)
    assert margin["auc_plus"]["hardened_beats"] == 1
    assert margin["relative_auc"]["p_value"] == pytest.approx(2 / 4)
    assert margin["relative_auc"]["hardened_beats"] == 2
    assert margin["auc_plus"]["images"] == 4 and margin["auc_plus"]["draws"] == 3
    head = summary["headline"]
    assert list(head) == HEADLINE  # exactly these keys, in this order
    assert head["fgsm_p_value"] == pytest.approx(3 / 4)
    assert head["pgd_margin_over_random"] == margin["auc_plus"]["mean"]
    assert summary["gain"]["transfer"]["relative_auc"]["value"] == pytest.approx(0.25)
    assert head["clean_accuracy_change_low"] == summary["clean_accuracy_change"]["ci_low"]
    assert summary["samples"] == {
        "fgsm": 4, "pgd": 4, "transfer": 4, "pgd_random": 4, "bootstrap": BOOTSTRAP
    }  # fmt: skip
    json.dumps(summary, allow_nan=False)
    # the bootstrap is seeded: the same seed, the same intervals; another seed, others
    assert summarise(_hand_results(), [0, 0.1], ["0", "0.1"], seed=0) == summary


def test_margins_over_random_are_of_the_hardened_arm_only():
    """method.md section 6: the draws follow the hardened arm's rule, so only it has a margin over
    random; the other arms keep their gains against their baseline."""
    results = _hand_results()
    results["compress_only"] = results["inverse"]
    results["amplify_only"] = results["random_0"]
    summary = summarise(results, [0, 0.1], ["0", "0.1"], seed=0)
    assert set(summary["margin_over_random"]) == set(ATTACKS)
    for arm in ("compress_only", "amplify_only"):
        entry = summary["arms"][arm]
        assert set(entry) == {"baseline", "gain", "clean_accuracy_change"}
        assert entry["gain"]["pgd"]["auc_plus"]["value"] == pytest.approx(
            0.75 - 0.25 if arm == "compress_only" else 0.5 - 0.25
        )
        assert (
            summary["headline"][f"{arm}_pgd_auc_plus_gain"]
            == (entry["gain"]["pgd"]["auc_plus"]["value"])
        )
        assert not any(k.startswith(arm) and "margin" in k for k in summary["headline"])


def test_pgd_margin_uses_the_draws_images():
    """The random draws under PGD on the first 2 of 4 images: the hardened network's PGD
    measures for the margin are of those 2 images too."""
    results = _hand_results()
    for name in ("random_0", "random_1", "random_2"):
        results[name] = {**results[name], "pgd": results[name]["pgd"].head(2)}
    summary = summarise(results, [0, 0.1], ["0", "0.1"], seed=0)
    margin = summary["margin_over_random"]["pgd"]["auc_plus"]
    # hardened on images 0, 1: AUC+ 0.5; draws 1.0, 0.0, 0.5
    assert margin["mean"] == pytest.approx(0.5 - 0.5) and margin["images"] == 2
    assert margin["p_value"] == pytest.approx(3 / 4)
    assert summary["samples"]["pgd"] == 4 and summary["samples"]["pgd_random"] == 2
    assert summary["gain"]["pgd"] == summary["gain"]["fgsm"]  # the gain: all 4 images
    three = _hand_results()["random_1"]["pgd"].head(3)  # one draw on another number of images
    results["random_1"] = {**results["random_1"], "pgd": three}
    with pytest.raises(ValueError, match="random_1 is attacked on"):
        summarise(results, [0, 0.1], ["0", "0.1"], seed=0)


def _gains_record(
    n=32, fragile=range(8), robust=range(24, 32), compress=0.5, max_gain=4.0, draws=1
):
    """A harden stage's record: magnitudes 0.5..2, phi rising with the index, the rule applied."""
    magnitude = torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    phi = torch.linspace(-0.1, 0.3, n, dtype=torch.float64)
    fragile, robust = list(fragile), list(robust)
    phi[fragile] = torch.linspace(0.05, 0.4, len(fragile), dtype=torch.float64)
    rule = {"compress": compress, "mode": "proportional", "max_gain": max_gain}
    gain = harden.gains(magnitude.numpy(), phi.numpy(), fragile, robust, **rule).gains
    inverse = harden.gains(magnitude.numpy(), phi.numpy(), robust, fragile, **rule).gains
    return Gains(
        gain=torch.from_numpy(gain), inverse_gain=torch.from_numpy(inverse), magnitude=magnitude,
        phi=phi, fragile=torch.tensor(fragile), robust=torch.tensor(robust), **rule,
        labels_resolved=True, random_gain=torch.ones(draws, n, dtype=torch.float64),
        random_ratio=torch.ones(draws, dtype=torch.float64), random_matched=True,
        random_tolerance=0.1, compress_only_gain=torch.ones(n, dtype=torch.float64),
        amplify_only_gain=torch.ones(n, dtype=torch.float64),
    )  # fmt: skip


def test_random_controls_apply_the_rule_to_random_sets_and_conserve_magnitude():
    record = _gains_record()
    m = record.magnitude
    draws = random_gains(record, 400, torch.Generator().manual_seed(0))
    assert draws.shape == (400, 32)
    # each draw compresses 8 neurons by c and amplifies 8 others: disjoint sets, sizes of F and R
    assert ((draws == 0.5).sum(dim=1) == 8).all() and ((draws > 1).sum(dim=1) == 8).all()
    assert ((draws == 1).sum(dim=1) == 16).all()
    # without the cap, total magnitude is conserved, as for the hardened network
    assert (draws.max(dim=1).values < 4.0).all()
    assert torch.allclose(draws @ m, torch.full((400,), float(m.sum()), dtype=m.dtype), atol=1e-6)
    assert float(record.gain @ m) == pytest.approx(float(m.sum()), abs=1e-6)
    # the freed magnitude of each draw goes to F' with F's weights, in random order
    for g in draws[:20]:
        amplified = torch.nonzero(g > 1).flatten()
        compressed = torch.nonzero(g == 0.5).flatten()
        freed = 0.5 * m[compressed].sum()
        given = ((g[amplified] - 1) * m[amplified] / freed).sort().values
        weights = record.phi[record.fragile] / record.phi[record.fragile].sum()
        assert torch.allclose(given, weights.sort().values, atol=1e-9)
    # sets drawn at random, never by score: amplified neurons land on F at the rate of chance
    # (8 of 32: hypergeometric mean overlap 2, sd ~1.1, so the mean of 400 is 2 +- 0.15)
    hits = (draws[:, record.fragile] > 1).sum(dim=1).double()
    assert hits.mean().item() == pytest.approx(2.0, abs=0.3)
    per_neuron = (draws > 1).double().mean(dim=0)
    assert per_neuron.min().item() > 0.1 and per_neuron.max().item() < 0.4
    # seeded: the same generator seed gives the same draws
    assert torch.equal(draws, random_gains(record, 400, torch.Generator().manual_seed(0)))


def test_random_controls_keep_the_cap():
    record = _gains_record(compress=0.0, max_gain=1.5)
    draws = random_gains(record, 50, torch.Generator().manual_seed(3))
    assert draws.max().item() <= 1.5 and ((draws == 0).sum(dim=1) == 8).all()


def test_variants_names_and_gates():
    record = _gains_record(n=8, fragile=[0, 1], robust=[6, 7], draws=3)
    gates = variants(record)
    assert list(gates) == [
        "original", "hardened", "random_0", "random_1", "random_2", "inverse", "compress_only",
        "amplify_only",
    ]  # fmt: skip
    assert torch.equal(gates["original"], torch.ones(8, dtype=torch.float64))
    assert torch.equal(gates["hardened"], record.gain)
    assert torch.equal(gates["inverse"], record.inverse_gain)
    assert torch.equal(torch.stack([gates[f"random_{i}"] for i in range(3)]), record.random_gain)


def test_original_fgsm_is_the_attack_stages(trained_mnist, mnist_splits):
    _, test = mnist_splits
    images, labels = test["images"], test["labels"]
    sweep = fgsm_sweep(trained_mnist, images, labels, EPS, batch_size=64, device=CPU)
    result = _attack({"original": trained_mnist}, images, labels, _settings())["original"]
    assert result["fgsm"].accuracy() == sweep.accuracy  # the same passes, image by image
    assert result["fgsm"].clean.double().mean().item() == sweep.clean_accuracy
    assert result["transfer"] is result["fgsm"]  # the source attacked with its own signs
    assert result["fgsm"].accuracy()[2] < result["fgsm"].accuracy()[0]  # the attack does something
    clean = trained_mnist(as_input(images[:32], CPU)).argmax(1) == labels[:32]
    assert torch.equal(result["pgd"].clean, clean) and torch.equal(result["pgd"].attacked[0], clean)
    assert len(result["pgd"]) == 32  # PGD at eps 0: the clean results on the PGD subset
    assert result["pgd"].accuracy()[2] <= result["fgsm"].accuracy()[0]


def test_image_counts_slice_the_test_split(trained_mnist, mnist_splits):
    """FGSM and transfer on the first `images`, PGD on the first `pgd_samples`, the random draws'
    PGD on the first `random_samples` of those, from the same starts: each a head of the
    results on more images."""
    images, labels, layer, gains = _case(trained_mnist, mnist_splits, 64)
    settings = _settings(images=40, pgd_samples=24, random_samples=8)
    assert settings.image_counts(64) == {"fgsm": 40, "transfer": 40, "pgd": 24, "pgd_random": 8}
    assert settings.image_counts(20) == {"fgsm": 20, "transfer": 20, "pgd": 20, "pgd_random": 8}
    assert _settings().image_counts(64)["fgsm"] == 64  # images None: all
    hardened = fold(trained_mnist, layer, gains)
    models = {"original": trained_mnist, "hardened": hardened, "random_0": hardened}
    sliced = _attack(models, images, labels, settings)
    every = _attack(models, images, labels, _settings(pgd_samples=64))
    for name in models:
        for attack in ATTACKS:
            n = 8 if (name, attack) == ("random_0", "pgd") else 24 if attack == "pgd" else 40
            assert len(sliced[name][attack]) == n
            assert torch.equal(sliced[name][attack].attacked, every[name][attack].head(n).attacked)
            assert torch.equal(sliced[name][attack].clean, every[name][attack].head(n).clean)
    # PGD on more images than FGSM: the clean results of the rest are computed
    wide = _attack(models, images, labels, _settings(images=16, pgd_samples=48))
    assert len(wide["hardened"]["fgsm"]) == 16 and len(wide["hardened"]["pgd"]) == 48
    assert torch.equal(wide["hardened"]["pgd"].clean, every["hardened"]["pgd"].head(48).clean)


def test_variants_are_attacked_white_box_with_common_starts(trained_mnist, mnist_splits):
    images, labels, layer, gains = _case(trained_mnist, mnist_splits, 64)
    settings, n = _settings(), layer.channels
    inverse = torch.ones(n)
    inverse[:8], inverse[-8:] = 0.5, 2.0
    gates = {
        "original": torch.ones(n),
        "hardened": gains,
        "random_0": torch.ones(n),
        "random_1": gains.flip(0),
        "inverse": inverse,
    }
    models = {name: fold(trained_mnist, layer, g) for name, g in gates.items()}
    models["original"] = trained_mnist
    results = _attack(models, images, labels, settings)
    # an identity gate attacked afresh gives the original's results, which reuse the source
    # sweep; PGD starts from the same points every time
    for attack in ATTACKS:
        assert torch.equal(
            results["random_0"][attack].attacked, results["original"][attack].attacked
        )
    # the hardened variant is attacked white-box, and with the original's signs for transfer
    hardened = models["hardened"]
    white_box = fgsm_sweep(hardened, images, labels, EPS, batch_size=64, device=CPU)
    assert results["hardened"]["fgsm"].accuracy() == white_box.accuracy
    source = fgsm_sweep(trained_mnist, images, labels, EPS, batch_size=64, device=CPU)
    transferred = fgsm_sweep(
        hardened, images, labels, EPS, batch_size=64, device=CPU, signs=source.signs
    )
    assert results["hardened"]["transfer"].accuracy() == transferred.accuracy
    assert results["hardened"]["transfer"].accuracy() != results["hardened"]["fgsm"].accuracy()

    m = np.linspace(0.5, 1.5, n)
    summary = summarise(results, EPS, LABELS, 0, m, gates)
    v = summary["variants"]
    for attack in ATTACKS:
        for measure in ("auc", "auc_plus", "relative_auc"):
            gain = summary["gain"][attack][measure]
            assert gain["value"] == pytest.approx(
                v["hardened"][attack][measure] - v["original"][attack][measure]
            )
            assert gain["ci_low"] <= gain["value"] <= gain["ci_high"]
            draws = v["random"][attack][f"{measure}_draws"]
            assert v["random"][attack][measure] == pytest.approx(np.mean(draws))
            assert v["random"][attack][f"{measure}_std"] == pytest.approx(np.std(draws, ddof=1))
            margin = summary["margin_over_random"][attack][measure]
            hardened_value = v["hardened"][attack][measure]
            assert margin["mean"] == pytest.approx(hardened_value - np.mean(draws))
            assert margin["hardened_beats"] == sum(hardened_value > d for d in draws)
            assert margin["p_value"] == pytest.approx(
                (1 + sum(d >= hardened_value for d in draws)) / (1 + len(draws))
            )
        accuracy = [v["original"][attack]["accuracy"][e] for e in LABELS]
        assert v["original"][attack]["auc"] == pytest.approx(auc(EPS, accuracy))
        assert v["original"][attack]["auc_plus"] == pytest.approx(auc(EPS[1:], accuracy[1:]))
    assert v["original"]["magnitude_ratio"] == pytest.approx(1.0)
    assert v["hardened"]["magnitude_ratio"] == pytest.approx((gains.numpy() * m).sum() / m.sum())
    json.dumps(json_ready(summary), allow_nan=False)

    frame = curves(summary, EPS, LABELS)
    assert len(frame) == 4 * 3 * len(EPS)
    for column in ("accuracy_std", "accuracy_low", "accuracy_high"):
        assert frame[column].notna().sum() == 3 * len(EPS)  # random only
    random = frame[frame["variant"] == "random"]
    assert (random["accuracy_low"] <= random["accuracy"]).all()
    assert (random["accuracy"] <= random["accuracy_high"]).all()
    robustness_figure(frame, summary, "test")  # draws without error


def test_folded_difference_detects_a_wrong_checkpoint(trained_mnist, mnist_splits):
    _, test = mnist_splits
    images = test["images"][:32]
    layer = find_scan_layer(trained_mnist, as_input(images[:1], CPU))
    gains = torch.linspace(0.5, 2.0, layer.channels)
    settings = _settings()
    right = fold(trained_mnist, layer, gains)
    wrong = fold(trained_mnist, layer, gains.flip(0))
    right = folded_difference(right, trained_mnist, layer, gains, images, settings)
    wrong = folded_difference(wrong, trained_mnist, layer, gains, images, settings)
    assert right < 1e-5 < 1e-2 < wrong


def test_one_random_draw_has_no_std():
    curve = _curve([1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0])
    results = {
        name: dict.fromkeys(ATTACKS, curve)
        for name in ("original", "hardened", "random_0", "inverse")
    }
    summary = summarise(results, EPS, LABELS, seed=0)
    assert summary["variants"]["random"]["fgsm"]["auc_std"] is None
    assert summary["margin_over_random"]["pgd"]["auc_plus"] == {
        "mean": 0.0,
        "std": None,
        "hardened_beats": 0,
        "draws": 1,
        "images": 4,
        "p_value": 1.0,  # (1 + 1 draw at least as good) / (1 + 1): one draw can never say more
    }
    zero = {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert summary["gain"] == {a: dict.fromkeys(("auc", "auc_plus", "relative_auc"), zero)
                               for a in ATTACKS}  # fmt: skip
    json.dumps(summary, allow_nan=False)
    frame = curves(summary, EPS, LABELS)
    assert frame["accuracy_std"].isna().all()
    random = frame[frame["variant"] == "random"]  # one draw: its range is the draw itself
    assert random["accuracy_low"].tolist() == random["accuracy_high"].tolist()
    assert random["accuracy_low"].tolist() == random["accuracy"].tolist()


def test_wide_curves_has_one_column_per_attack_and_variant():
    frame = pd.DataFrame(
        [
            {
                "variant": v,
                "attack": a,
                "epsilon": e,
                "epsilon_label": str(e),
                "accuracy": acc,
                **{
                    f"accuracy_{spread}": value if v == "random" else float("nan")
                    for spread, value in (("std", 0.01), ("low", 0.7), ("high", 0.85))
                },
            }
            for a in ATTACKS
            for v, acc in (("original", 0.9), ("random", 0.8))
            for e in (0, 0.1)
        ]
    )
    wide = wide_curves(frame)
    assert list(wide["epsilon"]) == [0, 0.1]
    assert list(wide["fgsm_original"]) == [0.9, 0.9] and list(wide["pgd_random"]) == [0.8, 0.8]
    assert "transfer_random_std" in wide and "fgsm_original_std" not in wide
    assert list(wide["pgd_random_low"]) == [0.7, 0.7]
    assert list(wide["pgd_random_high"]) == [0.85, 0.85]
    assert "fgsm_original_low" not in wide and "fgsm_original_high" not in wide


def _every_arm() -> dict:
    """A summary of the hand-made results with every arm: compress-only, amplify-only, and the
    recalibrated arm with its baseline."""
    results = _hand_results()
    results |= {
        "compress_only": results["inverse"],
        "amplify_only": results["random_0"],
        "recalibrated": results["hardened"],
        "original_recalibrated": results["original"],
    }
    return summarise(results, [0, 0.1], ["0", "0.1"], seed=0, bootstrap=100)


def test_the_random_draws_range_is_their_lowest_and_highest_accuracy():
    summary = _every_arm()
    random = summary["variants"]["random"]["pgd"]
    # the draws' accuracy: clean 1, 0.75, 1; at 0.1: 0.5, 0, 0.25
    assert random["accuracy_low"] == {"0": 0.75, "0.1": 0.0}
    assert random["accuracy_high"] == {"0": 1.0, "0.1": 0.5}
    assert random["accuracy"] == pytest.approx({"0": 2.75 / 3, "0.1": 0.25})
    wide = wide_curves(curves(summary, [0, 0.1], ["0", "0.1"]))
    assert list(wide["fgsm_random_low"]) == [0.75, 0.0]
    assert list(wide["fgsm_random_high"]) == [1.0, 0.5]


def test_the_robustness_figure_draws_every_arm_and_the_draws_range(tmp_path):
    """Every variant of the CSV a line in every panel, the random draws' mean with a band from
    their lowest to their highest accuracy (named in the legend), one legend below the panels
    with each variant's AUC+ under each attack; PNG and SVG, the same bytes twice."""
    from test_figures import check_saved, legends_overlapping_axes

    summary = _every_arm()
    frame = curves(summary, [0, 0.1], ["0", "0.1"])
    assert set(frame["variant"]) == set(VARIANT_STYLES)  # every arm evaluate writes
    fig = robustness_figure(frame, summary, "test")
    assert len(fig.axes) == len(ATTACKS)
    for ax, attack in zip(fig.axes, ATTACKS, strict=True):
        lines = {(line.get_color(), line.get_linestyle()): line for line in ax.lines}
        assert len(lines) == len(ax.lines) == len(VARIANT_STYLES)
        for variant, (colour, style, _) in VARIANT_STYLES.items():
            rows = frame[(frame["variant"] == variant) & (frame["attack"] == attack)]
            drawn = lines[(colour, style)].get_ydata()
            assert list(drawn) == rows["accuracy"].tolist(), variant
        (band,) = ax.collections  # the random draws' range, and no other band
        rows = frame[(frame["variant"] == "random") & (frame["attack"] == attack)]
        edge = {tuple(v) for v in band.get_paths()[0].vertices.round(9).tolist()}
        for column in ("accuracy_low", "accuracy_high"):
            assert set(zip(rows["epsilon"], rows[column], strict=True)) <= edge, column
        assert ax.get_legend() is None
    (legend,) = fig.legends
    shown = [text.get_text() for text in legend.get_texts()]
    assert len(shown) == len(VARIANT_STYLES)
    assert "random sets: mean of 3 draws, band min to max: 0.250 / 0.250 / 0.250" in shown
    assert "compress-only: 0.750 / 0.750 / 0.750" in shown
    assert legends_overlapping_axes(fig) == []
    check_saved(lambda: robustness_figure(frame, summary, "test"), tmp_path, "robustness")
    with pytest.raises(ValueError, match="no style for the variants"):
        robustness_figure(frame.replace({"variant": {"inverse": "new_arm"}}), summary, "test")


def test_stale_inputs_are_one_line_data_errors(trained_mnist, mnist_splits, tmp_path, monkeypatch):
    """evaluate's inputs must fit together: the attack stage's sweep of this test split at these
    settings, and a hardened checkpoint that holds the gains record's gains."""
    monkeypatch.chdir(tmp_path)
    images, labels, layer, gains = _case(trained_mnist, mnist_splits, 48)
    test, settings = {"images": images, "labels": labels}, _settings()
    sweep = fgsm_sweep(trained_mnist, images, labels, EPS, batch_size=64, device=CPU)
    sweep.save("data/attack/run/sweep.pt")
    assert load_source("data/attack/run/sweep.pt", test, settings).accuracy == sweep.accuracy
    with pytest.raises(DataError, match="not of the images read with it"):
        load_source("data/attack/run/sweep.pt", {"images": images[:40]}, settings)
    other = _settings(epsilons=[0.0, 0.1], epsilon_labels=["0", "0.1"])
    with pytest.raises(DataError, match=r"made at epsilons .* `dvc repro --force attack@run`"):
        load_source("data/attack/run/sweep.pt", test, other)

    record = gains_record(gains)
    spec = {"arch": "mnist_cnn", "channels": 1, "size": 28, "classes": 10}
    save_checkpoint("models/run/hardened.pt", fold(trained_mnist, layer, gains), spec)
    args = (trained_mnist, layer, record, test, settings)
    hardened, difference = load_hardened("models/run/hardened.pt", "mnist_cnn", *args)
    assert difference < 1e-5 and not hardened.training
    save_checkpoint("models/run/hardened.pt", trained_mnist, spec)  # not the hardened network
    with pytest.raises(DataError, match="does not hold the gains.*harden@run") as err:
        load_hardened("models/run/hardened.pt", "mnist_cnn", *args)
    assert "\n" not in str(err.value)


def test_paired_bootstrap_agrees_with_scipy():
    """The interval of the AUC+ gain is scipy.stats.bootstrap's paired percentile interval of
    the mean per-image difference (an oracle with its own resamples: the two agree to the
    Monte Carlo error of 20000 resamples each, a few 1e-3 here)."""
    from scipy.stats import bootstrap

    generator = torch.Generator().manual_seed(5)
    n = 120
    clean = torch.rand(n, generator=generator) < 0.9
    a = Curve(clean, (torch.rand(3, n, generator=generator) < 0.6) & clean)
    b = Curve(clean, (torch.rand(3, n, generator=generator) < 0.4) & clean)
    ours = paired_gain(a, b, EPS, resamples(n, 20000, seed=0))["auc_plus"]
    per_image = [measure_weights(EPS)["auc_plus"] @ c.attacked.double().numpy() for c in (a, b)]
    theirs = bootstrap(
        tuple(per_image),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        paired=True,
        method="percentile",
        n_resamples=20000,
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert ours["value"] == pytest.approx(float(np.mean(per_image[0] - per_image[1])))
    assert ours["ci_low"] == pytest.approx(theirs.low, abs=0.006)
    assert ours["ci_high"] == pytest.approx(theirs.high, abs=0.006)
    assert ours["ci_high"] - ours["ci_low"] > 0.1  # an interval of real width, not a point
