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

from fragile_neurons.attacks import robustness
from fragile_neurons.attacks.adversarial import fgsm_sweep
from fragile_neurons.attacks.masking import (
    FLAGS,
    HEADLINE,
    Outcome,
    apgd_correct,
    check,
    compare,
    middle_epsilon,
    require_torchattacks,
)
from fragile_neurons.network.gates import fold
from fragile_neurons.network.inference import as_input, batch_slices
from fragile_neurons.network.layers import find_scan_layer
from fragile_neurons.pipeline import baseline, evaluate
from fragile_neurons.pipeline.correlate import json_ready
from fragile_neurons.running.config import load_params
from fragile_neurons.running.errors import ParamError
from fragile_neurons.stats.significance import mcnemar
from fragile_neurons.storage import headline

if os.environ.get("CI"):  # CI installs torchattacks (Makefile): a missing oracle fails there
    import torchattacks
else:
    torchattacks = pytest.importorskip("torchattacks")

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
EPS, LABELS = [0.0, 0.1, 0.2], ["0", "0.1", "0.2"]
N = 40  # images checked
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only spin


def _settings(**kw) -> robustness.Settings:
    args = {
        "epsilons": EPS,
        "epsilon_labels": LABELS,
        "batch_size": 16,
        "device": CPU,
        "label_mode": "true",
        "pgd_steps": 3,
        "pgd_samples": 16,
        "seed": 0,
        "autoattack_images": N,
        "autoattack_steps": 4,
    }
    return robustness.Settings(**{**args, **kw})


def check_models(models: dict, images, labels, settings, eps: float | None = None):
    """The masking check of models["original"] and models["hardened"] at one epsilon (the
    largest unless given), as the baseline and the evaluate stage make it: each network's
    outcome, then the comparison."""
    if settings.autoattack_images == 0:
        return check([], [], [], {})
    eps = settings.epsilons[-1] if eps is None else eps
    original, hardened = (
        robustness.masking_outcome(models[name], images, labels, settings, eps)
        for name in ("original", "hardened")
    )
    about = {"images": len(original.clean), "steps": settings.autoattack_steps}
    label = settings.epsilon_labels[settings.epsilons.index(eps)]
    return check([original], [hardened], [label], about)


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


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce"])
def test_the_checks_pgd_is_the_start_of_the_curves_row(trained_mnist, mnist_splits, attack):
    """The check's PGD results are the first entries of the PGD curve's row at that epsilon
    (made once, by the baseline's and evaluate's units): the same as attacking the check's
    images alone, for either primary attack, and the APGD results unchanged."""
    _, test = mnist_splits
    images, labels = test["images"][:48], test["labels"][:48]
    settings = _settings(pgd_samples=48, autoattack_images=20, pgd_attack=attack)
    eps = 0.1
    row, reused = robustness.original_at(trained_mnist, images, labels, settings, eps)
    fresh = robustness.masking_outcome(trained_mnist, images, labels, settings, eps)
    assert len(row) == 48 and len(reused.pgd) == 20
    for field in ("clean", "pgd", "apgd_ce", "apgd_dlr"):
        assert torch.equal(getattr(reused, field), getattr(fresh, field)), field
    assert torch.equal(reused.pgd, row[:20])
    # a curve that covers fewer images than the check is not used: the attack runs
    short = robustness.masking_outcome(trained_mnist, images, labels, settings, eps, pgd=row[:5])
    assert torch.equal(short.pgd, fresh.pgd)


def test_worst_case_is_at_most_each_attack(trained_mnist, batch):
    images, labels = batch
    models = {"original": trained_mnist, "hardened": trained_mnist}
    block, headline = check_models(models, images, labels, _settings())
    (entry,) = block["checks"]
    for name in ("original", "hardened"):
        acc = entry[name]
        assert acc["worst"] <= min(acc["apgd_ce"], acc["apgd_dlr"])
        assert max(acc["pgd"], acc["apgd_ce"], acc["apgd_dlr"]) <= acc["clean"]
        assert acc["pgd_minus_worst"] == pytest.approx(acc["pgd"] - acc["worst"])
    assert entry["original"] == entry["hardened"]  # the same network: the same numbers
    assert entry["hardened_only"] == entry["original_only"] == 0 and entry["p_value"] == 1.0
    assert headline["masking"] is False  # equal gaps are not masking
    assert entry["epsilon"] == "0.2" and block["images"] == N and block["steps"] == 4
    json.dumps(json_ready(block), allow_nan=False)


def test_mcnemar_is_the_exact_one_sided_binomial_tail():
    assert mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_one_sided(5, 0) == pytest.approx(0.5**5)  # 1/32 < 0.05
    assert mcnemar_one_sided(4, 0) == pytest.approx(0.5**4)  # 1/16 > 0.05
    assert mcnemar_one_sided(3, 1) == pytest.approx(5 / 16)  # P(X >= 3), X ~ Bin(4, 1/2)
    assert mcnemar_one_sided(0, 3) == 1.0


def mcnemar_one_sided(b: int, c: int) -> float:
    return mcnemar(b, c, "greater")


def _gap(images: list[int], pgd_only: bool = True, n: int = 20) -> Outcome:
    """An outcome whose masking gap is `images` (correct under PGD, not under AutoAttack); every
    other image correct under both, or (pgd_only False) wrong under PGD."""
    correct = torch.ones(n, dtype=torch.bool) if pgd_only else torch.zeros(n, dtype=torch.bool)
    pgd = correct.clone()
    pgd[images] = True
    worst = correct.clone()
    worst[images] = False
    return Outcome(clean=torch.ones(n, dtype=torch.bool), pgd=pgd, apgd_ce=worst, apgd_dlr=worst)


def test_the_flag_needs_a_significant_excess_of_paired_gap_images():
    original = _gap([0, 1])
    five_more = compare(original, _gap([0, 1, 2, 3, 4, 5, 6]))  # b = 5, c = 0
    assert (five_more["hardened_only"], five_more["original_only"]) == (5, 0)
    assert five_more["p_value"] == pytest.approx(1 / 32) and five_more["flagged"] is True
    four_more = compare(original, _gap([0, 1, 2, 3, 4, 5]))  # b = 4: p = 1/16, not flagged
    assert four_more["flagged"] is False and four_more["testable"] is True
    # a larger gap in count that is not paired: the same images swapped are not an excess
    swapped = compare(_gap([0, 1, 2, 3, 4]), _gap([5, 6, 7, 8, 9, 10, 11]))  # b = 7, c = 5
    assert swapped["p_value"] == pytest.approx(mcnemar_one_sided(7, 5)) and not swapped["flagged"]
    # nothing correct under PGD on either network: not testable, never "not flagged"
    none = _gap([], pgd_only=False)
    vacuous = compare(none, none)
    assert vacuous["testable"] is False and vacuous["flagged"] is None
    assert vacuous["p_value"] is None
    with pytest.raises(ValueError, match="one set"):
        compare(original, _gap([0], n=21))


def test_the_middle_epsilon_is_where_pgd_leaves_half_correct():
    eps = [0.0, 0.1, 0.2, 0.3]
    assert middle_epsilon(eps, [1.0, 0.9, 0.45, 0.0]) == 2
    assert middle_epsilon(eps, [0.5, 0.6, 0.4, 0.0]) == 1  # a tie: the smaller epsilon; never 0
    assert middle_epsilon(eps, [1.0, 0.0, 0.0, 0.0]) == 1


def test_not_testable_checks_are_none_in_the_headline():
    none = _gap([], pgd_only=False)
    block, headline = check([none, none], [none, none], ["0.1", "0.3"], {})
    assert headline["masking"] is None and headline["masking_testable"] is False
    assert headline["masking_mid_flagged"] is None and headline["masking_max_p"] is None
    original, hardened = _gap([0]), _gap([0, 1, 2, 3, 4, 5])
    block, headline = check([original, none], [hardened, none], ["0.1", "0.3"], {})
    assert headline["masking"] is True and headline["masking_testable"] is True
    assert headline["masking_mid_flagged"] is True and headline["masking_max_testable"] is False
    assert [c["epsilon"] for c in block["checks"]] == ["0.1", "0.3"]
    assert list(headline) == list(HEADLINE)


def test_a_network_that_masks_its_gradients_is_flagged(trained_mnist, batch):
    """PGD on the cross-entropy gets no gradient from the saturated network and leaves most
    images correct; APGD-DLR does not need that gradient and breaks them: masking."""
    images, labels = batch
    models = {"original": trained_mnist, "hardened": SaturatedSoftmax(trained_mnist)}
    block, headline = check_models(models, images, labels, _settings())
    original, hardened = block["checks"][0]["original"], block["checks"][0]["hardened"]
    assert hardened["clean"] == original["clean"]  # the same predictions
    assert hardened["pgd"] > original["pgd"]  # PGD is fooled by the masking
    assert hardened["apgd_ce"] > original["apgd_ce"] + 0.5  # so is APGD on the cross-entropy
    assert hardened["apgd_dlr"] < hardened["pgd"] - 0.5  # APGD-DLR is not
    assert headline["masking"] is True and headline["masking_max_flagged"] is True
    assert headline["masking_max_p"] < 0.05 and headline["masking_testable"] is True
    entry = block["checks"][0]
    assert entry["gap_hardened"] > entry["gap_original"]
    # the network compared with itself: not flagged
    itself = {"original": trained_mnist, "hardened": trained_mnist}
    assert check_models(itself, images, labels, _settings())[1]["masking"] is False


def test_the_check_repeats_and_leaves_the_global_generator_alone(trained_mnist, batch):
    images, labels = batch
    models = {"original": trained_mnist, "hardened": SaturatedSoftmax(trained_mnist)}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = check_models(models, images, labels, _settings())
    assert torch.equal(torch.get_rng_state(), state)  # APGD's reseeding undone
    assert check_models(models, images, labels, _settings()) == first


def test_zero_images_is_off_and_imports_nothing(trained_mnist, batch, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # any import of it now fails
    assert require_torchattacks(0) is None
    images, labels = batch
    models = {"original": trained_mnist, "hardened": trained_mnist}
    block, headline = check_models(models, images, labels, _settings(autoattack_images=0))
    assert block is None
    assert headline == dict.fromkeys(HEADLINE) and "masking_mid_p" in headline


def _params(images: int) -> dict:
    params = load_params(ROOT / "params.yaml")
    params["evaluate"]["autoattack"]["images"] = images
    return params


def test_missing_torchattacks_is_one_line_before_any_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(ParamError) as err:
        robustness.Settings.from_params(_params(8), "mnist")
    message = str(err.value)
    assert message.startswith("params: evaluate.autoattack.images = 8 is not allowed; expected 0")
    assert "`make setup`" in message and "pip install --no-deps 'torchattacks" in message
    assert "\n" not in message
    settings = robustness.Settings.from_params(_params(0), "mnist")  # off: not needed
    assert settings.autoattack_images == 0


def _evaluate(model, mnist_splits, settings):
    """evaluate.run on 48 test images with a hardened network that amplifies 8 neurons."""
    _, test = mnist_splits
    test = {"images": test["images"][:48], "labels": test["labels"][:48]}
    layer = find_scan_layer(model, as_input(test["images"][:1], CPU))
    gains = torch.ones(layer.channels, dtype=torch.float64)
    gains[:8], gains[-8:] = 2.0, 0.5
    record = gains_record(gains, draws=1)
    source = fgsm_sweep(model, test["images"], test["labels"], EPS, batch_size=16, device=CPU)
    hardened = fold(model, layer, gains)
    original = baseline.run(baseline.Inputs(model, source, test), settings)
    inputs = evaluate.Inputs(model, hardened, layer, record, original, source, test, 0.0)
    return evaluate.run(inputs, settings).summary


def test_evaluate_reports_the_check_or_nulls(trained_mnist, mnist_splits, monkeypatch):
    on = _evaluate(trained_mnist, mnist_splits, _settings(autoattack_images=12))
    assert on["autoattack"]["images"] == 12
    checks = on["autoattack"]["checks"]
    assert 1 <= len(checks) <= 2 and checks[-1]["epsilon"] == "0.2"  # the largest last
    assert set(on["autoattack"]["original_pgd_accuracy"]) == set(LABELS)
    assert set(checks[0]["hardened"]) == {
        "clean",
        "pgd",
        "apgd_ce",
        "apgd_dlr",
        "worst",
        "pgd_minus_worst",
    }
    assert isinstance(on["headline"]["masking"], bool)
    assert list(on["headline"])[0] == "clean_accuracy_change"  # the headline's order is kept
    assert list(on["masking"]) == list(HEADLINE)  # all its entries in the details
    assert on["labels_resolved"] is True
    headline.check("evaluate", on["headline"])  # the declared keys and types
    hardened_keys = [k for k in on["headline"] if k[:3] in ("cle", "fgs", "pgd", "tra")]
    assert list(on["headline"])[len(hardened_keys) :][-len(FLAGS) :] == list(FLAGS)  # the flags
    assert on["calibrated"] is on["headline"]["calibrated"]
    assert [row["epsilon"] for row in on["calibration"]] == LABELS[1:]  # every epsilon of E+
    for row in on["calibration"]:
        assert row["attack"] == "pgd 3x1"
        assert row["gap"] == pytest.approx(row["accuracy"] - row["autoattack"])
        assert row["accuracy"] == on["autoattack"]["original_pgd_accuracy"][row["epsilon"]]
    for arm in ("compress_only", "amplify_only", "recalibrated"):  # each arm: its PGD AUC+ gain
        assert [k for k in on["headline"] if k.startswith(f"{arm}_")] == [
            f"{arm}_pgd_auc_plus_gain{end}" for end in ("", "_low", "_high")
        ]
    for arm in ("compress_only", "amplify_only"):
        assert on["arms"][arm]["baseline"] == "original"
    assert on["random_matching"]["tolerance"] == 0.1 and len(on["random_matching"]["ratio"]) == 1
    json.dumps(json_ready(on), allow_nan=False)
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    off = _evaluate(trained_mnist, mnist_splits, _settings(autoattack_images=0))
    assert off["autoattack"] is None and off["headline"]["masking"] is None
    assert off["calibration"] == [] and off["headline"]["calibrated"] is None
    assert off["variants"] == on["variants"]  # the check changes nothing else


def test_two_workers_give_the_bytes_one_gives(trained_mnist, mnist_splits, monkeypatch):
    """The baseline stage's epsilons, the evaluate stage's variants and its masking check, run in
    two worker processes (`workers`): the same per-image results as in this one."""
    made = []
    real = evaluate.attack_variants

    def attack_variants(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(evaluate, "attack_variants", attack_variants)
    records, summaries = [], []
    run_baseline = baseline.run
    monkeypatch.setattr(baseline, "run", lambda *a: records.append(run_baseline(*a)) or records[-1])
    for workers in (1, 2):
        settings = _settings(autoattack_images=12, workers=workers)
        summaries.append(json.dumps(json_ready(_evaluate(trained_mnist, mnist_splits, settings))))
    assert summaries[0] == summaries[1]  # the masking check of the hardened network too
    one, two = made
    assert list(one) == list(two) and len(one) >= 5
    for name in one:
        for attack, curve in one[name].items():
            assert torch.equal(curve.clean, two[name][attack].clean)
            assert torch.equal(curve.attacked, two[name][attack].attacked)
    for field, value in vars(records[0]).items():
        other = getattr(records[1], field)
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
