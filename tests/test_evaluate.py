"""Evaluation with controls (method.md section 6)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fragile_neurons import harden
from fragile_neurons.adversarial import fgsm_sweep
from fragile_neurons.config import ATTACKS
from fragile_neurons.correlate import json_ready
from fragile_neurons.errors import DataError
from fragile_neurons.evaluate import (
    Settings,
    attack_variants,
    auc,
    curves,
    folded_difference,
    load_hardened,
    load_source,
    random_gains,
    summarise,
    variants,
    wide_curves,
)
from fragile_neurons.figures.evaluate import robustness_figure
from fragile_neurons.gates import fold
from fragile_neurons.inference import as_input
from fragile_neurons.layers import find_scan_layer
from fragile_neurons.models import save_checkpoint
from fragile_neurons.records import Gains

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
        "random_controls": 2,
        "seed": 0,
        "autoattack_images": 0,
        "autoattack_steps": 2,
    }
    return Settings(**{**args, **kw})


def _attack(variants_: dict, images, labels, settings) -> dict:
    """attack_variants with the original's sweep computed here, as the attack stage does."""
    source = fgsm_sweep(variants_["original"], images, labels, EPS, batch_size=64, device=CPU)
    return attack_variants(variants_, source, images, labels, settings)


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


def _gains_record(n=32, fragile=range(8), robust=range(24, 32), compress=0.5, max_gain=4.0):
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
        labels_resolved=True,
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
    record = _gains_record(n=8, fragile=[0, 1], robust=[6, 7])
    gates = variants(record, 3, torch.Generator().manual_seed(1))
    assert list(gates) == ["original", "hardened", "random_0", "random_1", "random_2", "inverse"]
    assert torch.equal(gates["original"], torch.ones(8, dtype=torch.float64))
    assert torch.equal(gates["hardened"], record.gain)
    assert torch.equal(gates["inverse"], record.inverse_gain)


def test_original_fgsm_is_the_attack_stages(trained_mnist, mnist_splits):
    _, test = mnist_splits
    images, labels = test["images"], test["labels"]
    sweep = fgsm_sweep(trained_mnist, images, labels, EPS, batch_size=64, device=CPU)
    result = attack_variants({"original": trained_mnist}, sweep, images, labels, _settings())
    result = result["original"]
    assert result["fgsm"] == sweep.accuracy
    assert result["clean"] == sweep.clean_accuracy
    assert result["transfer"] == result["fgsm"]  # the source attacked with its own signs
    assert result["fgsm"][2] < result["fgsm"][0]  # the attack does something
    assert result["pgd"][0] == pytest.approx(
        (trained_mnist(as_input(images[:32], CPU)).argmax(1) == labels[:32]).double().mean().item()
    )  # PGD at eps 0: the clean accuracy on the PGD subset
    assert result["pgd"][2] <= result["fgsm"][0]


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
    assert results["random_0"] == results["original"]
    # the hardened variant is attacked white-box, and with the original's signs for transfer
    hardened = models["hardened"]
    white_box = fgsm_sweep(hardened, images, labels, EPS, batch_size=64, device=CPU)
    assert results["hardened"]["fgsm"] == white_box.accuracy
    source = fgsm_sweep(trained_mnist, images, labels, EPS, batch_size=64, device=CPU)
    transferred = fgsm_sweep(
        hardened, images, labels, EPS, batch_size=64, device=CPU, signs=source.signs
    )
    assert results["hardened"]["transfer"] == transferred.accuracy
    assert results["hardened"]["transfer"] != results["hardened"]["fgsm"]

    m = np.linspace(0.5, 1.5, n)
    summary = summarise(results, EPS, LABELS, m, gates)
    v = summary["variants"]
    for attack in ("fgsm", "pgd", "transfer"):
        assert summary["gain"][attack] == pytest.approx(
            v["hardened"][attack]["auc"] - v["original"][attack]["auc"]
        )
        draws = v["random"][attack]["auc_draws"]
        assert v["random"][attack]["auc"] == pytest.approx(np.mean(draws))
        assert v["random"][attack]["auc_std"] == pytest.approx(np.std(draws, ddof=1))
        margin = summary["margin_over_random"][attack]
        assert margin["mean"] == pytest.approx(v["hardened"][attack]["auc"] - np.mean(draws))
        assert margin["hardened_beats"] == sum(v["hardened"][attack]["auc"] > d for d in draws)
        assert v["original"][attack]["auc"] == pytest.approx(
            auc(EPS, [v["original"][attack]["accuracy"][e] for e in LABELS])
        )
    assert summary["headline"]["fgsm_auc_gain"] == summary["gain"]["fgsm"]
    assert v["original"]["magnitude_ratio"] == pytest.approx(1.0)
    assert v["hardened"]["magnitude_ratio"] == pytest.approx((gains.numpy() * m).sum() / m.sum())
    json.dumps(json_ready(summary), allow_nan=False)

    frame = curves(summary, EPS, LABELS)
    assert len(frame) == 4 * 3 * len(EPS)
    assert frame["accuracy_std"].notna().sum() == 3 * len(EPS)  # random only
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
    curve = {
        "clean": 0.9,
        "fgsm": [0.9, 0.5, 0.1],
        "pgd": [0.9, 0.4, 0.0],
        "transfer": [0.9, 0.6, 0.2],
    }
    results = {name: curve for name in ("original", "hardened", "random_0", "inverse")}
    summary = summarise(results, EPS, LABELS)
    assert summary["variants"]["random"]["fgsm"]["auc_std"] is None
    assert summary["margin_over_random"]["pgd"] == {
        "mean": 0.0,
        "std": None,
        "hardened_beats": 0,
        "draws": 1,
        "p_value": 1.0,  # (1 + 1 draw at least as good) / (1 + 1): one draw can never say more
    }
    assert summary["gain"] == {"fgsm": 0.0, "pgd": 0.0, "transfer": 0.0}
    json.dumps(summary, allow_nan=False)
    frame = curves(summary, EPS, LABELS)
    assert frame["accuracy_std"].isna().all()


def test_wide_curves_has_one_column_per_attack_and_variant():
    frame = pd.DataFrame(
        [
            {
                "variant": v,
                "attack": a,
                "epsilon": e,
                "epsilon_label": str(e),
                "accuracy": acc,
                "accuracy_std": 0.01 if v == "random" else float("nan"),
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

    n = layer.channels
    record = Gains(
        gain=gains.double(),
        inverse_gain=gains.flip(0).double(),
        magnitude=torch.ones(n, dtype=torch.float64),
        phi=torch.zeros(n, dtype=torch.float64),
        fragile=torch.arange(0, dtype=torch.int64),
        robust=torch.arange(0, dtype=torch.int64),
        compress=0.5,
        mode="proportional",
        max_gain=4.0,
        labels_resolved=True,
    )
    spec = {"arch": "mnist_cnn", "channels": 1, "size": 28, "classes": 10}
    save_checkpoint("models/run/hardened.pt", fold(trained_mnist, layer, gains), spec)
    args = (trained_mnist, layer, record, test, settings)
    hardened, difference = load_hardened("models/run/hardened.pt", "mnist_cnn", *args)
    assert difference < 1e-5 and not hardened.training
    save_checkpoint("models/run/hardened.pt", trained_mnist, spec)  # not the hardened network
    with pytest.raises(DataError, match="does not hold the gains.*harden@run") as err:
        load_hardened("models/run/hardened.pt", "mnist_cnn", *args)
    assert "\n" not in str(err.value)
