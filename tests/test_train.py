"""Training is seeded and repeatable, and learns."""

import hashlib
import json

import pytest
import torch
from conftest import prepare_splits

from fragile_neurons.network.inference import accuracy_and_loss, logits_of
from fragile_neurons.network.models import build_model, save_checkpoint
from fragile_neurons.network.training import Fit, augment, train_model
from fragile_neurons.running.runtime import seed_everything, select_device


def train_once(splits, arch, tmp_path, name, seed=0, augment_images=False):
    train, test = splits
    generator = seed_everything(seed)
    spec = {
        "arch": arch,
        "channels": train["images"].shape[1],
        "size": train["images"].shape[2],
        "classes": 10,
    }
    model = build_model(**spec, mean=train["mean"], std=train["std"])
    history = train_model(
        model,
        train,
        test,
        epochs=1,
        batch_size=50,
        lr=0.003,
        weight_decay=0.0,
        augment_images=augment_images,
        device=torch.device("cpu"),
        generator=generator,
        progress=False,
    )
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model, spec)
    return hashlib.sha256(path.read_bytes()).hexdigest(), history


def test_same_seed_same_checkpoint_bytes(mnist_splits, tmp_path):
    a, hist_a = train_once(mnist_splits, "mnist_cnn", tmp_path, "a")
    b, hist_b = train_once(mnist_splits, "mnist_cnn", tmp_path, "b")
    c, _ = train_once(mnist_splits, "mnist_cnn", tmp_path, "c", seed=1)
    assert a == b and hist_a == hist_b
    assert a != c


def test_augmented_training_is_repeatable_too(synthetic_root, synthetic_pins, tmp_path):

    train, _, test, _ = prepare_splits(
        "cifar10", synthetic_root, False, synthetic_pins, 50, 100, 50, 0
    )
    a, _ = train_once((train, test), "cifar_cnn", tmp_path, "a", augment_images=True)
    b, _ = train_once((train, test), "cifar_cnn", tmp_path, "b", augment_images=True)
    assert a == b


def test_trained_model_learns(trained_mnist, mnist_splits):
    _, test = mnist_splits
    logits = logits_of(trained_mnist, test["images"], 64, torch.device("cpu"))
    accuracy, _ = accuracy_and_loss(logits, test["labels"])
    assert accuracy >= 0.9


def test_augment_crops_and_flips_keep_pixels():
    x = torch.rand(64, 3, 8, 8)
    out = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    for i in range(len(x)):
        candidates = [x[i], x[i].flip(2)]
        padded = [torch.nn.functional.pad(c, (2, 2, 2, 2)) for c in candidates]
        assert any(
            torch.equal(out[i], p[:, dy : dy + 8, dx : dx + 8])
            for p in padded
            for dy in range(5)
            for dx in range(5)
        )
    assert not torch.equal(out, x)


def test_auto_device_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected


def test_every_epoch_reports_its_curves(mnist_splits):
    """The train stage rewrites its curves after every epoch (dvc exp show follows a run)."""
    from fragile_neurons.pipeline import train

    seen = []
    fit = Fit(
        arch="mnist_cnn", epochs=2, batch_size=64, lr=0.003, weight_decay=0.0, augment=False,
        device=torch.device("cpu"), eval_batch_size=200, lr_key="runs.t.train.lr",
        arch_key="runs.t.arch",
    )  # fmt: skip
    progress = lambda step, row: seen.append((step, dict(row)))  # noqa: E731
    model, _, history = train.run(train.Inputs(*mnist_splits), train.Settings(fit, 0), progress)
    assert [step for step, _ in seen] == ["epoch 1", "epoch 2"]
    assert [row for _, row in seen] == history


def test_the_live_curves_are_dvclive_s_layout_and_the_same_bytes_on_rerun(tmp_path):
    from fragile_neurons.pipeline.train import CURVES, live_curves

    def log(folder):
        history = []
        with live_curves(folder) as on_epoch:
            for epoch in (1, 2, 3):
                history.append(
                    {
                        "epoch": epoch,
                        "train_loss": 1 / epoch,
                        "test_loss": 1.1 / epoch,
                        "train_accuracy": 0.3 * epoch,
                        "test_accuracy": 0.29 * epoch,
                    }
                )
                on_epoch(f"epoch {epoch}", history[-1])
        return {p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip

    first = log(tmp_path / "a")
    assert first == log(tmp_path / "b") == log(tmp_path / "a")  # a rerun clears and rewrites
    assert set(first) == {"metrics.json"} | {f"plots/metrics/{c}.tsv" for c in CURVES}
    rows = first["plots/metrics/test/accuracy.tsv"].decode().splitlines()
    assert rows[0] == "step\taccuracy"  # no timestamp column
    assert [r.split("\t")[0] for r in rows[1:]] == ["1", "2", "3"]  # the step is the epoch
    summary = json.loads(first["metrics.json"])
    assert summary["step"] == 3 and summary["test"]["accuracy"] == 0.29 * 3


def test_the_live_curves_are_written_in_a_git_repository_without_a_commit(tmp_path, monkeypatch):
    import subprocess

    from fragile_neurons.pipeline.train import live_curves

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    row = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.1,
           "test_accuracy": 0.4}  # fmt: skip
    with live_curves("curves") as on_epoch:
        on_epoch("epoch 1", row)
    assert json.loads((tmp_path / "curves/metrics.json").read_text())["test"]["accuracy"] == 0.4


def test_a_training_that_stops_before_an_epoch_ends_keeps_the_last_curves(tmp_path):
    from fragile_neurons.pipeline.train import live_curves

    row = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.1,
           "test_accuracy": 0.4}  # fmt: skip
    with live_curves(tmp_path / "curves") as on_epoch:
        on_epoch("epoch 1", row)
    before = {p: p.read_bytes() for p in sorted((tmp_path / "curves").rglob("*")) if p.is_file()}
    with pytest.raises(RuntimeError), live_curves(tmp_path / "curves"):
        raise RuntimeError("diverged in epoch 1")
    after = {p: p.read_bytes() for p in sorted((tmp_path / "curves").rglob("*")) if p.is_file()}
    assert after == before and len(before) == 5
