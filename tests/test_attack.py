"""The attack stage end to end on the synthetic digits: its files and records, the clean accuracy
at epsilon 0, identical bytes on a rerun, and a bad `scan.layer` as a one-line error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, run_script

from fragile_neurons import io, paths
from fragile_neurons.adversarial import gradient_signs
from fragile_neurons.inference import accuracy_and_loss, logits_of
from fragile_neurons.models import save_checkpoint
from fragile_neurons.records import FGSMSweep, ScanLayer, Targeting

CPU = torch.device("cpu")
SAMPLES, BATCH = 40, 64


@pytest.fixture
def workdir(tmp_path, monkeypatch, mnist_splits, trained_mnist):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    run = params["runs"]["mnist"]
    run["attack"]["epsilons"] = [0, 0.1, "1/5"]
    params["runs"] = {"mnist": run}
    params.update(device="cpu", batch_size=BATCH)
    params["scan"]["samples"] = SAMPLES
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _, test = mnist_splits
    monkeypatch.chdir(tmp_path)
    io.save_tensors(paths.prepared("mnist", "test"), test)
    spec = {"arch": "mnist_cnn", "channels": 1, "size": 28, "classes": 10}
    save_checkpoint(paths.model("mnist"), trained_mnist, spec)
    return tmp_path


OUTPUTS = [
    "plots/mnist/attack.csv",
    "plots/mnist/targeting.csv",
    "plots/mnist/examples.png",
    "metrics/mnist/attack.json",
    "data/attack/mnist/sweep.pt",
    "data/attack/mnist/layer.pt",
    "data/attack/mnist/targeting.pt",
]


def test_attack_stage_writes_the_contract(workdir, mnist_splits, trained_mnist):
    run_script("attack", "mnist")
    _, test = mnist_splits
    report = io.read_json("metrics/mnist/attack.json")
    logits = logits_of(trained_mnist, test["images"], BATCH, CPU)
    accuracy, _ = accuracy_and_loss(logits, test["labels"])
    assert report["fgsm_accuracy"]["0"] == accuracy == report["clean_accuracy"]
    assert list(report["fgsm_accuracy"]) == ["0", "0.1", "1/5"]
    for key in ("fgsm_loss", "success_rate", "linf_mean", "l2_mean"):
        assert list(report[key]) == ["0", "0.1", "1/5"]
    assert report["linf_mean"]["1/5"] == pytest.approx(0.2, abs=1e-6)
    assert report["layer"] == {"conv": "conv1", "neuron_module": "conv1", "neurons": 32}
    assert report["scan_samples"] == SAMPLES and report["labels"] == "true"

    curve = pd.read_csv("plots/mnist/attack.csv")
    assert curve["accuracy"].is_monotonic_decreasing
    targets = pd.read_csv("plots/mnist/targeting.csv")
    assert len(targets) == 32 * 2 and set(targets["epsilon_label"]) == {"0.1", "1/5"}
    assert targets.groupby("epsilon_label")["share"].sum().tolist() == pytest.approx([1, 1])

    # the records the later stages read, checked on load
    assert ScanLayer.load(paths.layer_record("mnist")) == ScanLayer("conv1", "conv1", 32)
    targeting = Targeting.load(paths.targeting_record("mnist"), neurons=32)
    assert targeting.epsilon_labels == ["0.1", "1/5"] and targeting.share.shape == (2, 32)
    sweep = FGSMSweep.load(paths.sweep_record("mnist"), images=test["images"])
    expected = gradient_signs(
        trained_mnist,
        test["images"][:SAMPLES],
        test["labels"][:SAMPLES],
        batch_size=BATCH,
        device=CPU,
    )
    assert sweep.signs.dtype == torch.int8 and torch.equal(sweep.signs[:SAMPLES], expected)
    assert sweep.signs.shape == test["images"].shape  # the whole split: evaluate's original
    assert sweep.accuracy == list(report["fgsm_accuracy"].values())
    assert (sweep.label_mode, sweep.batch_size) == ("true", BATCH)
    size = Path(paths.sweep_record("mnist")).stat().st_size
    assert size < 2 * sweep.signs.numel() + 2 * sweep.clean_logits.nbytes

    before = {p: Path(p).read_bytes() for p in OUTPUTS}
    run_script("attack", "mnist")
    assert all(Path(p).read_bytes() == before[p] for p in OUTPUTS)


def test_a_bad_scan_layer_is_one_line_and_exit_status_2(workdir, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scan"]["layer"] = "fc1"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as err:
        run_script("attack", "mnist")
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "scan.layer" in message and "'conv2'" in message
    assert not Path("metrics/mnist/attack.json").exists()
