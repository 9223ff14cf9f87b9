"""The primary's attack (adversarial.attack_correct, method.md section 6, "Strength of the
primary's attack"): APGD-CE against torchattacks' as the oracle, seeded and batch-size independent,
at least as strong as PGD; restarts as the worst case; fixed-step PGD with one restart is the PGD
of before, exactly; and the calibration table's arithmetic."""

from __future__ import annotations

import os

import pytest
import torch

from fragile_neurons.attacks.adversarial import (
    apgd_ce,
    attack_correct,
    attack_name,
    pgd_correct,
    restart_generator,
)
from fragile_neurons.attacks.robustness import CALIBRATION_GAP, calibration_table
from fragile_neurons.network.inference import as_input, logits_of

if os.environ.get("CI"):  # CI installs torchattacks (Makefile): a missing oracle fails there
    import torchattacks
else:
    torchattacks = pytest.importorskip("torchattacks")

CPU = torch.device("cpu")
N = 32
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch(mnist_splits):
    _, test = mnist_splits
    return test["images"][:N], test["labels"][:N]


def _options(**kw):
    return {"batch_size": N, "device": CPU, "seed": 0, **kw}


@pytest.mark.parametrize("steps", [5, 12])
def test_apgd_ce_agrees_with_torchattacks(trained_mnist, batch, steps):
    """Image for image, torchattacks.APGD(loss="ce") on one batch whose every image is classified
    as its label (torchattacks then attacks them all, drawing their starts as we do)."""
    images, _ = batch
    x = as_input(images, CPU)
    labels = logits_of(trained_mnist, x, N, CPU).argmax(1)  # every image correct
    eps, seed = 0.15, 3
    ours = apgd_ce(
        trained_mnist, images, labels, eps, steps=steps, batch_size=N, device=CPU,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    attack = torchattacks.APGD(
        trained_mnist, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce"
    )
    theirs = attack(x, labels)
    predicted = logits_of(trained_mnist, theirs, N, CPU).argmax(1)
    fooled = predicted != labels
    assert fooled.any() and not fooled.all()  # the attack does something here, not everything
    assert torch.equal(logits_of(trained_mnist, ours, N, CPU).argmax(1) != labels, fooled)
    # torchattacks returns the clean image where it fails, the misclassified iterate elsewhere
    assert torch.allclose(ours[fooled], theirs[fooled].detach(), atol=1e-6)


def test_apgd_ce_is_seeded_and_batch_size_independent(trained_mnist, batch):
    images, labels = batch
    options = {"attack": "apgd-ce", "steps": 5, "restarts": 1, "device": CPU}

    def run(batch_size, seed):
        return attack_correct(
            trained_mnist, images, labels, 0.2, seed=seed, batch_size=batch_size, **options
        )

    a = run(N, 0)
    assert torch.equal(a, run(7, 0)) and torch.equal(a, run(N, 0))
    advs = [
        apgd_ce(trained_mnist, images, labels, 0.2, steps=5, batch_size=b, device=CPU,
                generator=torch.Generator().manual_seed(s))
        for b, s in ((N, 0), (5, 0), (N, 1))
    ]  # fmt: skip
    assert torch.equal(advs[0], advs[1]) and not torch.equal(advs[0], advs[2])
    x = as_input(images, CPU)
    assert (advs[0] - x).abs().max() <= 0.2 + 1e-6 and advs[0].min() >= 0 and advs[0].max() <= 1


@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_apgd_ce_is_at_least_as_strong_as_pgd_with_the_same_steps(trained_mnist, batch, eps):
    """A sanity check with a margin: APGD-CE leaves no more than PGD's accuracy plus 2 images of
    32 (APGD keeps any misclassified iterate; PGD only its last)."""
    images, labels = batch
    common = {"steps": 10, "restarts": 1, **_options()}
    apgd = attack_correct(trained_mnist, images, labels, eps, attack="apgd-ce", **common)
    pgd = attack_correct(trained_mnist, images, labels, eps, attack="pgd", **common)
    assert int(apgd.sum()) <= int(pgd.sum()) + 2


def test_pgd_with_one_restart_is_the_pgd_of_before(trained_mnist, batch):
    images, labels = batch
    old = pgd_correct(trained_mnist, images, labels, 0.1, steps=3, **_options())
    new = attack_correct(
        trained_mnist, images, labels, 0.1, attack="pgd", steps=3, restarts=1, **_options()
    )
    assert torch.equal(old, new)


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce"])
def test_restarts_are_the_worst_case(trained_mnist, batch, attack):
    """Correct under 3 restarts exactly where correct under each restart's start alone."""
    images, labels = batch
    eps, steps = 0.15, 3
    three = attack_correct(
        trained_mnist, images, labels, eps, attack=attack, steps=steps, restarts=3, **_options()
    )
    each = []
    for r in range(3):
        g = restart_generator(0, r)
        fn = (
            apgd_ce
            if attack == "apgd-ce"
            else __import__("fragile_neurons.attacks.adversarial", fromlist=["pgd"]).pgd
        )
        adv = fn(trained_mnist, images, labels, eps, steps=steps, batch_size=N, device=CPU,
                 generator=g)  # fmt: skip
        each.append(logits_of(trained_mnist, adv, N, CPU).argmax(1) == labels)
    worst = each[0] & each[1] & each[2]
    if attack == "apgd-ce":
        worst &= logits_of(trained_mnist, images, N, CPU).argmax(1) == labels
    assert torch.equal(three, worst)
    assert int(three.sum()) <= min(int(e.sum()) for e in each)
    assert torch.equal(restart_generator(0, 0).initial_seed() * torch.ones(1),
                       torch.ones(1) * 0)  # fmt: skip
    assert restart_generator(0, 1).initial_seed() != restart_generator(1, 0).initial_seed()


def test_a_bad_attack_or_restart_is_a_clear_error(trained_mnist, batch):
    images, labels = batch
    with pytest.raises(ValueError, match="attack = 'cw'"):
        attack_correct(trained_mnist, images, labels, 0.1, attack="cw", steps=1, restarts=1,
                       **_options())  # fmt: skip
    with pytest.raises(ValueError, match="restarts = 0"):
        attack_correct(trained_mnist, images, labels, 0.1, attack="pgd", steps=1, restarts=0,
                       **_options())  # fmt: skip


def test_the_calibration_tables_gap_arithmetic():
    primary = [0.78, 0.268, 0.5]
    autoattack = [0.718, 0.262, 0.5]
    table = calibration_table(["0.1", "0.15", "0.2"], "pgd 10x1", primary, autoattack)
    assert [row["epsilon"] for row in table["calibration"]] == ["0.1", "0.15", "0.2"]
    assert all(row["attack"] == "pgd 10x1" for row in table["calibration"])
    gaps = [row["gap"] for row in table["calibration"]]
    assert gaps == pytest.approx([0.062, 0.006, 0.0])
    assert table["calibration_max_gap"] == pytest.approx(0.062)
    assert table["calibrated"] is False
    close = calibration_table(["0.1"], "apgd-ce 50x1", [0.738], [0.718])
    assert CALIBRATION_GAP < 0.738 - 0.718  # in floats: a gap of exactly 0.02 is within it
    assert close["calibrated"] is True
    assert calibration_table(["0.1"], "pgd 10x1", [0.739], [0.718])["calibrated"] is False
    assert calibration_table([], "pgd 10x1", [], []) == {
        "calibration": [], "calibration_max_gap": None, "calibrated": None
    }  # fmt: skip
    assert attack_name("apgd-ce", 50, 1) == "apgd-ce 50x1"


def _benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate_attack.py"
    spec = importlib.util.spec_from_file_location("calibrate_attack", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_calibration_benchmark_parses_and_measures(trained_mnist, batch, capsys):
    bench = _benchmark()
    args = bench.arguments(["mnist", "--images", "20", "--candidates", "pgd-3", "apgd-ce-4x2"])
    assert args.images == 20 and [bench.name_of(c) for c in args.candidates] == [
        "pgd-3", "apgd-ce-4x2"
    ]  # fmt: skip
    assert [bench.name_of(c) for c in bench.arguments(["cifar10"]).candidates] == list(
        bench.CANDIDATES
    )
    for bad in (["mnist", "--candidates", "cw-10"], ["mnist", "--images", "0"]):
        with pytest.raises(SystemExit):
            bench.arguments(bad)
    images, labels = batch
    rows = bench.calibrate(
        trained_mnist, images[:12], labels[:12], [0.0, 0.2], ["0", "0.2"], args.candidates,
        autoattack_steps=3, seed=0, batch_size=12, device=CPU, label_mode="true",
    )  # fmt: skip
    assert [r["candidate"] for r in rows] == ["autoattack-3", "pgd-3", "apgd-ce-4x2"]
    for r in rows:
        assert r["epsilon"] == "0.2" and r["seconds"] >= 0
        assert r["gap"] == pytest.approx(r["accuracy"] - r["autoattack"])
    verdicts = bench.verdicts(rows)
    assert set(verdicts) == {"pgd-3", "apgd-ce-4x2"}
    assert all(v["calibrated"] is (v["max_gap"] <= CALIBRATION_GAP) for v in verdicts.values())
