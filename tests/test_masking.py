"""The check for gradient masking (masking.py): torchattacks' APGD as the oracle, the worst case,
the flag on hand-made outcomes and on a network that masks its gradients on purpose, the check
switched off, torchattacks missing, and repeatability."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import gains_record
from torch import nn

from fragile_neurons import evaluate, headline
from fragile_neurons.adversarial import fgsm_sweep
from fragile_neurons.config import load_params
from fragile_neurons.correlate import json_ready
from fragile_neurons.errors import ParamError
from fragile_neurons.gates import fold
from fragile_neurons.inference import as_input, batch_slices
from fragile_neurons.layers import find_scan_layer
from fragile_neurons.masking import (
    FLAGS,
    HEADLINE,
    Outcome,
    apgd_correct,
    check,
    is_masking,
    require_torchattacks,
)

if os.environ.get("CI"):  # CI installs torchattacks (Makefile): a missing oracle fails there
    import torchattacks
else:
    torchattacks = pytest.importorskip("torchattacks")

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
EPS, LABELS = [0.0, 0.1, 0.2], ["0", "0.1", "0.2"]
N = 40  # images checked
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only spin


def _settings(**kw) -> evaluate.Settings:
    args = {
        "epsilons": EPS,
        "epsilon_labels": LABELS,
        "batch_size": 16,
        "device": CPU,
        "label_mode": "true",
        "pgd_steps": 3,
        "pgd_samples": 16,
        "random_controls": 1,
        "seed": 0,
        "autoattack_images": N,
        "autoattack_steps": 4,
    }
    return evaluate.Settings(**{**args, **kw})


@pytest.fixture(scope="module")
def batch(mnist_splits):
    _, test = mnist_splits
    return test["images"][:N], test["labels"][:N]


class SaturatedSoftmax(nn.Module):
    """`model`'s logits times 1e6: the same predictions, but the softmax saturates, so the
    cross-entropy's input gradient is exactly 0 on every image classified with a margin, while the
    DLR loss, invariant to the logits' scale, still guides APGD-DLR. Gradient masking on purpose."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e6


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_agrees_with_torchattacks(trained_mnist, batch, loss):
    """Image for image, the same as torchattacks.APGD called directly on the same batches."""
    images, labels = batch
    options = {"eps": 0.1, "steps": 4, "seed": 3}
    grads = [None if p.grad is None else p.grad.clone() for p in trained_mnist.parameters()]
    ours = apgd_correct(
        trained_mnist, images, labels, loss=loss, batch_size=16, device=CPU, **options
    )
    attack = torchattacks.APGD(trained_mnist, norm="Linf", n_restarts=1, loss=loss, **options)
    x = as_input(images, CPU)
    with torch.no_grad():
        theirs = torch.cat(
            [
                trained_mnist(attack(x[s], labels[s])).argmax(1) == labels[s]
                for s in batch_slices(N, 16)
            ]
        )
    assert ours.dtype == torch.bool and torch.equal(ours, theirs)
    clean = trained_mnist(x).argmax(1) == labels
    assert ours.sum() < clean.sum()  # the attack does something
    assert not (ours & ~clean).any()  # a misclassified image stays misclassified
    for p, grad in zip(trained_mnist.parameters(), grads, strict=True):  # left as they were
        assert p.requires_grad and (p.grad is grad is None or torch.equal(p.grad, grad))


def test_worst_case_is_at_most_each_attack(trained_mnist, batch):
    images, labels = batch
    models = {"original": trained_mnist, "hardened": trained_mnist}
    block, headline = check(models, images, labels, _settings())
    for name in ("original", "hardened"):
        acc = block[name]
        assert acc["worst"] <= min(acc["apgd_ce"], acc["apgd_dlr"])
        assert max(acc["pgd"], acc["apgd_ce"], acc["apgd_dlr"]) <= acc["clean"]
        assert acc["pgd_minus_worst"] == pytest.approx(acc["pgd"] - acc["worst"])
    assert block["original"] == block["hardened"]  # the same network: the same numbers
    assert headline["masking"] is False  # equal gaps are not masking
    assert block["epsilon"] == "0.2" and block["images"] == N and block["steps"] == 4
    json.dumps(json_ready(block), allow_nan=False)


def _outcome(pgd: int, worst: int, n: int = 10) -> Outcome:
    """pgd images correct after PGD, worst of them correct after both APGD attacks."""
    first = torch.arange(n)
    return Outcome(
        clean=torch.ones(n, dtype=torch.bool),
        pgd=first < pgd,
        apgd_ce=first < worst + 1,
        apgd_dlr=first < worst,
    )


def test_the_flag_compares_gaps_in_images():
    original = _outcome(pgd=5, worst=3)  # gap 2 images
    assert _outcome(pgd=5, worst=3).gap == 2 and original.worst.sum() == 3
    assert is_masking(original, _outcome(pgd=4, worst=1))  # gap 3 > 2
    assert not is_masking(original, _outcome(pgd=3, worst=1))  # gap 2: not more
    assert not is_masking(original, _outcome(pgd=1, worst=0))  # gap 1
    assert not is_masking(original, _outcome(pgd=0, worst=0))  # both at zero: nothing to see
    # gaps of 2 images in 10 whose differences of accuracies differ in floats
    assert 0.2 - 0.0 > 0.3 - 0.1
    assert not is_masking(_outcome(pgd=3, worst=1), _outcome(pgd=2, worst=0))
    with pytest.raises(ValueError, match="one set"):
        is_masking(original, _outcome(pgd=1, worst=0, n=11))


def test_a_network_that_masks_its_gradients_is_flagged(trained_mnist, batch):
    """PGD on the cross-entropy gets no gradient from the saturated network and leaves most
    images correct; APGD-DLR does not need that gradient and breaks them: masking."""
    images, labels = batch
    models = {"original": trained_mnist, "hardened": SaturatedSoftmax(trained_mnist)}
    block, headline = check(models, images, labels, _settings())
    original, hardened = block["original"], block["hardened"]
    assert hardened["clean"] == original["clean"]  # the same predictions
    assert hardened["pgd"] > original["pgd"]  # PGD is fooled by the masking
    assert hardened["apgd_ce"] > original["apgd_ce"] + 0.5  # so is APGD on the cross-entropy
    assert hardened["apgd_dlr"] < hardened["pgd"] - 0.5  # APGD-DLR is not
    assert headline["masking"] is True
    assert headline["masking_gap_hardened"] == pytest.approx(hardened["pgd_minus_worst"])
    assert headline["masking_gap_hardened"] > headline["masking_gap_original"]
    assert headline["masking_testable"] is True


def test_the_check_repeats_and_leaves_the_global_generator_alone(trained_mnist, batch):
    images, labels = batch
    models = {"original": trained_mnist, "hardened": SaturatedSoftmax(trained_mnist)}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = check(models, images, labels, _settings())
    assert torch.equal(torch.get_rng_state(), state)  # APGD's reseeding undone
    assert check(models, images, labels, _settings()) == first


def test_zero_images_is_off_and_imports_nothing(trained_mnist, batch, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # any import of it now fails
    assert require_torchattacks(0) is None
    images, labels = batch
    models = {"original": trained_mnist, "hardened": trained_mnist}
    block, headline = check(models, images, labels, _settings(autoattack_images=0))
    assert block is None
    assert headline == {
        "masking": None,
        "masking_testable": None,
        "masking_gap_original": None,
        "masking_gap_hardened": None,
    }


def _params(images: int) -> dict:
    params = load_params(ROOT / "params.yaml")
    params["evaluate"]["autoattack"]["images"] = images
    return params


def test_missing_torchattacks_is_one_line_before_any_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(ParamError) as err:
        evaluate.Settings.from_params(_params(8), "mnist", CPU)
    message = str(err.value)
    assert message.startswith("params: evaluate.autoattack.images = 8 is not allowed; expected 0")
    assert "`make setup`" in message and "pip install --no-deps 'torchattacks" in message
    assert "\n" not in message
    settings = evaluate.Settings.from_params(_params(0), "mnist", CPU)  # off: not needed
    assert settings.autoattack_images == 0


def _evaluate(model, mnist_splits, settings):
    """evaluate.run on 48 test images with a hardened network that amplifies 8 neurons."""
    _, test = mnist_splits
    test = {"images": test["images"][:48], "labels": test["labels"][:48]}
    layer = find_scan_layer(model, as_input(test["images"][:1], CPU))
    gains = torch.ones(layer.channels, dtype=torch.float64)
    gains[:8], gains[-8:] = 2.0, 0.5
    record = gains_record(gains)
    source = fgsm_sweep(model, test["images"], test["labels"], EPS, batch_size=16, device=CPU)
    hardened = fold(model, layer, gains)
    generator = torch.Generator().manual_seed(0)
    args = (model, hardened, layer, record, source, test, settings, generator)
    return evaluate.run(*args)[0]


def test_evaluate_reports_the_check_or_nulls(trained_mnist, mnist_splits, monkeypatch):
    on = _evaluate(trained_mnist, mnist_splits, _settings(autoattack_images=12))
    assert on["autoattack"]["images"] == 12
    assert set(on["autoattack"]["hardened"]) == {
        "clean",
        "pgd",
        "apgd_ce",
        "apgd_dlr",
        "worst",
        "pgd_minus_worst",
    }
    assert isinstance(on["headline"]["masking"], bool)
    assert list(on["headline"])[0] == "clean_accuracy_change"  # the headline's order is kept
    assert list(on["headline"])[-2:] == list(FLAGS)  # then the check's flags
    assert list(on["masking"]) == list(HEADLINE)  # all its entries in the details
    assert on["labels_resolved"] is True
    headline.check("evaluate", on["headline"])  # the declared keys and types
    json.dumps(json_ready(on), allow_nan=False)
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    off = _evaluate(trained_mnist, mnist_splits, _settings(autoattack_images=0))
    assert off["autoattack"] is None and off["headline"]["masking"] is None
    assert off["variants"] == on["variants"]  # the check changes nothing else
