"""The attack stage end to end on the synthetic digits: its files, the clean accuracy at epsilon
0, identical bytes on a rerun, and a bad `scan.layer` as a one-line error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fragile_neurons import io, paths
from fragile_neurons.attacks import gradient_signs
from fragile_neurons.inference import evaluate
from fragile_neurons.models import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SAMPLES, BATCH = 40, 64


def load_stage():
    spec = importlib.util.spec_from_file_location("attack_stage", ROOT / "stages" / "attack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    "data/attack/mnist/sweep.pt",
]


def test_attack_stage_writes_the_contract(workdir, mnist_splits, trained_mnist):
    stage = load_stage()
    stage.run_stage(stage.main, ["mnist"])
    _, test = mnist_splits
    report = io.read_json("metrics/mnist/attack.json")
    accuracy, _ = evaluate(trained_mnist, test["images"], test["labels"], BATCH, CPU)
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

    cache = io.load_tensors("data/attack/mnist/sweep.pt")
    expected = gradient_signs(
        trained_mnist,
        test["images"][:SAMPLES],
        test["labels"][:SAMPLES],
        batch_size=BATCH,
        device=CPU,
    )
    signs = cache["sweep"]["signs"]
    assert signs.dtype == torch.int8 and torch.equal(signs[:SAMPLES], expected)
    assert signs.shape == test["images"].shape  # the whole split: evaluate's original under FGSM
    assert cache["sweep"]["accuracy"] == list(report["fgsm_accuracy"].values())
    logits = cache["sweep"]["clean_logits"]
    assert Path("data/attack/mnist/sweep.pt").stat().st_size < 2 * signs.numel() + 2 * logits.nbytes

    before = {p: Path(p).read_bytes() for p in OUTPUTS}
    stage.run_stage(stage.main, ["mnist"])
    assert all(Path(p).read_bytes() == before[p] for p in OUTPUTS)


def test_a_bad_scan_layer_is_one_line_and_exit_status_2(workdir, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scan"]["layer"] = "fc1"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    stage = load_stage()
    with pytest.raises(SystemExit) as err:
        stage.run_stage(stage.main, ["mnist"])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "scan.layer" in message and "'conv2'" in message
    assert not Path("metrics/mnist/attack.json").exists()
