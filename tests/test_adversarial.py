"""FGSM and PGD and the FGSM sweep over a split (adversarial.py): properties, and torchattacks'
implementations as the oracle, image for image."""

from __future__ import annotations

import os
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fragile_neurons.attacks.adversarial import (
    fgsm,
    fgsm_examples,
    fgsm_images,
    fgsm_sweep,
    gradient_signs,
    input_gradient,
    pgd,
)
from fragile_neurons.network.inference import accuracy_and_loss, as_input, logits_of

if os.environ.get("CI"):  # CI installs torchattacks (Makefile): a missing oracle fails there
    import torchattacks
else:
    torchattacks = pytest.importorskip("torchattacks")

CPU = torch.device("cpu")
EPSILONS = [0.0, 0.05, 0.1, 0.2, 0.3]
N = 64  # test images attacked in most tests: enough to see every property, and fast


@pytest.fixture(scope="module")
def batch(mnist_splits):
    _, test = mnist_splits
    return test["images"][:N], test["labels"][:N]


def no_parameter_grads(model: nn.Module) -> bool:
    return all(p.grad is None for p in model.parameters())


# --- FGSM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.03, 0.1, 0.3])
def test_fgsm_stays_in_the_ball_and_in_the_unit_box(trained_mnist, batch, eps):
    images, labels = batch
    x = as_input(images, CPU)
    adv = fgsm(trained_mnist, images, labels, eps, batch_size=16, device=CPU)
    assert adv.dtype == torch.float32 and adv.shape == x.shape
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    # the step is the full eps wherever the gradient is nonzero and the box does not clip
    signs = gradient_signs(trained_mnist, images, labels, batch_size=16, device=CPU)
    free = (signs != 0) & (x + eps * signs >= 0) & (x + eps * signs <= 1)
    assert free.any()
    assert torch.allclose((adv - x)[free], eps * signs[free].float(), atol=1e-6)


def test_epsilon_zero_is_the_identity(trained_mnist, batch):
    images, labels = batch
    x = as_input(images, CPU)
    assert torch.equal(fgsm(trained_mnist, images, labels, 0.0, batch_size=16, device=CPU), x)
    signs = torch.ones_like(x, dtype=torch.int8)
    out = fgsm_images(x, signs, 0.0)
    assert torch.equal(out, x) and out is not x


def test_gradient_signs_do_not_depend_on_the_batch_size(trained_mnist, batch):
    """Batches of 2 or more. (A batch of one image runs another CPU convolution kernel, whose
    rounding can flip the sign of a gradient that is zero up to rounding; the tiny model here is
    so confident that such gradients exist.)"""
    images, labels = batch
    signs = [
        gradient_signs(trained_mnist, images, labels, batch_size=b, device=CPU) for b in (2, 7, N)
    ]
    assert signs[0].dtype == torch.int8 and set(signs[0].unique().tolist()) <= {-1, 0, 1}
    assert torch.equal(signs[0], signs[1]) and torch.equal(signs[0], signs[2])


def test_gradient_is_of_the_summed_cross_entropy_on_the_logits(trained_mnist, batch):
    images, labels = batch
    x = as_input(images[:5], CPU).requires_grad_(True)
    F.cross_entropy(trained_mnist(x), labels[:5], reduction="sum").backward()
    ours = input_gradient(trained_mnist, x.detach(), labels[:5])
    # the parameters are frozen while ours is taken: the same input gradient bit for bit
    assert torch.equal(ours, x.grad)
    trained_mnist.zero_grad(set_to_none=True)


def test_no_parameter_gradient_is_left_behind(trained_mnist, batch):
    images, labels = batch
    trained_mnist.zero_grad(set_to_none=True)
    gradient_signs(trained_mnist, images, labels, batch_size=16, device=CPU)
    pgd(
        trained_mnist,
        images,
        labels,
        0.1,
        steps=2,
        batch_size=16,
        device=CPU,
        generator=torch.Generator().manual_seed(0),
    )
    fgsm_sweep(trained_mnist, images, labels, [0.0, 0.1], batch_size=16, device=CPU)
    assert no_parameter_grads(trained_mnist)
    # frozen only while the input gradient is taken: training still sees trainable parameters
    assert all(p.requires_grad for p in trained_mnist.parameters())


def test_the_model_is_attacked_in_eval_mode(trained_mnist, batch):
    """Dropout would make the gradient random: a model handed over in train mode is switched."""
    images, labels = batch
    expected = gradient_signs(trained_mnist, images, labels, batch_size=N, device=CPU)
    trained_mnist.train()
    try:
        got = gradient_signs(trained_mnist, images, labels, batch_size=N, device=CPU)
        assert not trained_mnist.training
    finally:
        trained_mnist.eval()
    assert torch.equal(got, expected)


def test_predicted_labels_use_the_models_own_prediction(trained_mnist, batch):
    images, labels = batch
    predicted = trained_mnist(as_input(images, CPU)).argmax(1)
    wrong = (predicted + 1) % 10  # the true labels must not matter in this mode
    ours = gradient_signs(
        trained_mnist, images, wrong, batch_size=16, device=CPU, label_mode="predicted"
    )
    expected = gradient_signs(trained_mnist, images, predicted, batch_size=16, device=CPU)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, y: fgsm(m, x[0], y, 0.1, batch_size=4, device=CPU), "N x C x H x W"),
        (lambda m, x, y: fgsm(m, x, y[:-1], 0.1, batch_size=4, device=CPU), "labels"),
        (lambda m, x, y: fgsm(m, x, y, 1.5, batch_size=4, device=CPU), "epsilon"),
        (lambda m, x, y: fgsm(m, x, y, -0.1, batch_size=4, device=CPU), "epsilon"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, batch_size=4, device=CPU, label_mode="x"), "label"),
        (lambda m, x, y: fgsm(m, x.float(), y, 0.1, batch_size=4, device=CPU), r"\[0, 1\]"),
        (
            lambda m, x, y: pgd(
                m, x, y, 0.1, steps=0, batch_size=4, device=CPU, generator=torch.Generator()
            ),
            "steps",
        ),
    ],
)
def test_bad_inputs_are_clear_errors(trained_mnist, batch, call, message):
    images, labels = batch
    with pytest.raises(ValueError, match=message):
        call(trained_mnist, images[:8], labels[:8])


# --- PGD ------------------------------------------------------------------------------------


def test_pgd_stays_in_the_ball_is_seeded_and_batch_size_independent(trained_mnist, batch):
    images, labels = batch[0][:16], batch[1][:16]
    x, eps = as_input(images, CPU), 0.1

    def run(batch_size, seed):
        return pgd(
            trained_mnist,
            images,
            labels,
            eps,
            steps=2,
            batch_size=batch_size,
            device=CPU,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(16, 0), run(5, 0), run(16, 1)
    assert (a - x).abs().max() <= eps + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_pgd_is_at_least_as_strong_as_fgsm(trained_mnist, batch):
    images, labels = batch
    eps = 0.2
    x_fgsm = fgsm(trained_mnist, images, labels, eps, batch_size=N, device=CPU)
    x_pgd = pgd(
        trained_mnist,
        images,
        labels,
        eps,
        steps=5,
        batch_size=N,
        device=CPU,
        generator=torch.Generator().manual_seed(0),
    )
    _, loss_fgsm = accuracy_and_loss(logits_of(trained_mnist, x_fgsm, N, CPU), labels)
    _, loss_pgd = accuracy_and_loss(logits_of(trained_mnist, x_pgd, N, CPU), labels)
    assert loss_pgd >= loss_fgsm


# --- torchattacks as the oracle ---------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_fgsm_agrees_with_torchattacks(trained_mnist, mnist_splits, eps):
    _, test = mnist_splits
    images, labels = test["images"], test["labels"]
    x = as_input(images, CPU)
    ours = fgsm(trained_mnist, images, labels, eps, batch_size=50, device=CPU)
    theirs = torchattacks.FGSM(trained_mnist, eps=eps)(x, labels)
    assert torch.allclose(ours, theirs, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(trained_mnist(ours).argmax(1), trained_mnist(theirs).argmax(1))
    assert no_parameter_grads(trained_mnist)


def test_fgsm_with_predicted_labels_agrees_with_torchattacks(trained_mnist, batch):
    images, labels = batch
    x = as_input(images, CPU)
    with torch.no_grad():
        predicted = trained_mnist(x).argmax(1)
    ours = fgsm(
        trained_mnist, images, labels, 0.1, batch_size=N, device=CPU, label_mode="predicted"
    )
    theirs = torchattacks.FGSM(trained_mnist, eps=0.1)(x, predicted)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_pgd_without_random_start_agrees_with_torchattacks(trained_mnist, batch):
    images, labels = batch[0][:32], batch[1][:32]
    eps, alpha, steps = 0.1, 0.025, 3
    x = as_input(images, CPU)
    ours = pgd(
        trained_mnist,
        images,
        labels,
        eps,
        steps=steps,
        step_size=alpha,
        batch_size=16,
        device=CPU,
        generator=torch.Generator(),
        random_start=False,
    )
    attack = torchattacks.PGD(trained_mnist, eps=eps, alpha=alpha, steps=steps, random_start=False)
    theirs = attack(x, labels)
    assert torch.allclose(ours, theirs, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(trained_mnist(ours).argmax(1), trained_mnist(theirs).argmax(1))


def test_pgd_from_the_same_random_start_agrees_with_torchattacks(trained_mnist, batch, monkeypatch):
    """torchattacks draws its start with torch.empty_like(x).uniform_(-eps, eps); here it is
    handed the start our seeded generator draws (uniform in [-eps, eps], then clipped)."""
    images, labels = batch[0][:32], batch[1][:32]
    eps, steps, seed = 0.1, 3, 3
    x = as_input(images, CPU)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    noise = noise.mul_(2 * eps).sub_(eps)

    class SameStart:
        def uniform_(self, low, high):
            assert (low, high) == (-eps, eps)
            return noise

    real_empty_like = torch.empty_like
    monkeypatch.setattr(
        torch,
        "empty_like",
        lambda t, *a, **k: SameStart() if t.shape == x.shape else real_empty_like(t, *a, **k),
    )
    theirs = torchattacks.PGD(trained_mnist, eps=eps, alpha=eps / 4, steps=steps)(x, labels)
    monkeypatch.undo()
    ours = pgd(
        trained_mnist,
        images,
        labels,
        eps,
        steps=steps,
        batch_size=16,
        device=CPU,
        generator=torch.Generator().manual_seed(seed),
    )
    assert torch.allclose(ours, theirs, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(trained_mnist(ours).argmax(1), trained_mnist(theirs).argmax(1))


# --- the sweep over a split -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(trained_mnist, mnist_splits):
    _, test = mnist_splits
    return fgsm_sweep(
        trained_mnist, test["images"], test["labels"], EPSILONS, batch_size=64, device=CPU
    )


def test_sweep_at_epsilon_zero_is_the_clean_evaluation_exactly(sweep, trained_mnist, mnist_splits):
    _, test = mnist_splits
    logits = logits_of(trained_mnist, test["images"], 64, CPU)
    accuracy, loss = accuracy_and_loss(logits, test["labels"])
    assert sweep.accuracy[0] == accuracy == sweep.clean_accuracy
    assert sweep.loss[0] == loss == sweep.clean_loss
    assert sweep.success_rate[0] == 0 and sweep.linf_mean[0] == 0 and sweep.l2_mean[0] == 0


def test_accuracy_does_not_rise_with_epsilon(sweep):
    assert sweep.accuracy[0] > 0.5  # the tiny model did learn
    assert all(b <= a for a, b in zip(sweep.accuracy, sweep.accuracy[1:], strict=False))
    assert sweep.accuracy[-1] < sweep.accuracy[0]
    assert all(b >= a for a, b in zip(sweep.success_rate, sweep.success_rate[1:], strict=False))


def test_sweep_measures_what_it_says(sweep, trained_mnist, mnist_splits):
    """Recompute one epsilon's numbers by hand from fgsm's images."""
    _, test = mnist_splits
    images, labels = test["images"], test["labels"]
    i = EPSILONS.index(0.1)
    x = as_input(images, CPU)
    adv = fgsm(trained_mnist, images, labels, 0.1, batch_size=200, device=CPU)
    with torch.no_grad():
        clean_right = trained_mnist(x).argmax(1) == labels
        adv_right = trained_mnist(adv).argmax(1) == labels
    assert sweep.accuracy[i] == adv_right.sum().item() / len(labels)
    assert sweep.success_rate[i] == pytest.approx(
        (clean_right & ~adv_right).sum().item() / clean_right.sum().item()
    )
    delta = (adv - x).flatten(1).double()
    assert sweep.linf_mean[i] == pytest.approx(delta.abs().amax(1).mean().item())
    assert sweep.l2_mean[i] == pytest.approx(delta.norm(dim=1).mean().item())
    assert torch.equal(
        sweep.signs, gradient_signs(trained_mnist, images, labels, batch_size=64, device=CPU)
    )


def test_sweep_with_given_signs_is_a_transferred_attack(sweep, trained_mnist, mnist_splits):
    """Another source's signs (here the flipped ones) make every epsilon's images; the model's
    own signs with its clean logits give its white-box sweep back."""
    _, test = mnist_splits
    images, labels = test["images"], test["labels"]
    run = partial(fgsm_sweep, trained_mnist, images, labels, EPSILONS, batch_size=64, device=CPU)
    other = -sweep.signs
    transfer = run(signs=other)
    x = as_input(images, CPU)
    with torch.no_grad():
        for i, eps in enumerate(EPSILONS):
            right = trained_mnist(fgsm_images(x, other, eps)).argmax(1) == labels
            assert transfer.accuracy[i] == right.sum().item() / len(labels)
    assert transfer.clean_accuracy == sweep.clean_accuracy and torch.equal(transfer.signs, other)
    assert run(signs=sweep.signs, clean_logits=sweep.clean_logits).accuracy == sweep.accuracy
    with pytest.raises(ValueError, match="signs have shape"):
        run(signs=other[:5])


def test_sweep_does_not_depend_on_the_batch_size(sweep, trained_mnist, mnist_splits):
    _, test = mnist_splits
    other = fgsm_sweep(
        trained_mnist, test["images"], test["labels"], EPSILONS, batch_size=37, device=CPU
    )
    assert other.accuracy == sweep.accuracy and other.success_rate == sweep.success_rate
    assert other.loss == pytest.approx(sweep.loss, rel=1e-6)
    assert other.linf_mean == pytest.approx(sweep.linf_mean, rel=1e-12)


def test_sweep_frame_has_the_contract_columns(sweep):
    frame = sweep.frame()
    assert list(frame["epsilon_label"]) == ["0", "0.05", "0.1", "0.2", "0.3"]  # named as numbers
    assert list(frame.columns) == [
        "epsilon",
        "epsilon_label",
        "accuracy",
        "loss",
        "success_rate",
        "linf_mean",
        "l2_mean",
    ]
    assert len(frame) == len(EPSILONS)
    assert sweep.label_mode == "true" and sweep.batch_size == 64  # how it was made, recorded


def test_examples_are_the_sweeps_images(trained_mnist, batch, sweep, mnist_splits):
    images, labels = batch
    shown, predicted = fgsm_examples(
        trained_mnist, images[:4], sweep.signs[:4], EPSILONS, device=CPU
    )
    assert shown.shape == (len(EPSILONS), 4, 1, 28, 28) and predicted.shape == (len(EPSILONS), 4)
    x = as_input(images[:4], CPU)
    assert torch.equal(shown[0], x)
    assert torch.equal(shown[2], fgsm_images(x, sweep.signs[:4], EPSILONS[2]))
