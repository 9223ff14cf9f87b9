"""The attack stage end to end on the synthetic digits: its files and records (the test split's
sweep, and the scan set's on the selection split, whose signs the targeting uses), the clean
accuracy at epsilon 0, identical bytes on a rerun, and a bad `scan.layer` or `scan.samples` as a
one-line error; and the scan stage after it, which reads the scan set and never the test split."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, run_script

from fragile_neurons.attacks.adversarial import gradient_signs
from fragile_neurons.attacks.targeting import targeting
from fragile_neurons.datasets.splits import scan_set
from fragile_neurons.network.inference import accuracy_and_loss, logits_of
from fragile_neurons.network.models import save_checkpoint
from fragile_neurons.pipeline import attack
from fragile_neurons.running import origin
from fragile_neurons.running.errors import ParamError
from fragile_neurons.storage import io, paths
from fragile_neurons.storage.records import FGSMSweep, ScanLayer, ScanMeasurements, Targeting

CPU = torch.device("cpu")
SAMPLES, BATCH = 40, 64


@pytest.fixture
def workdir(tmp_path, monkeypatch, mnist_prepared, trained_mnist):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    run = params["runs"]["mnist"]
    run["attack"]["epsilons"] = [0, 0.1, "1/5"]
    params["runs"] = {"mnist": run}
    params.update(device="cpu", batch_size=BATCH)
    params["scan"]["samples"] = SAMPLES
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _, selection, test = mnist_prepared
    monkeypatch.chdir(tmp_path)
    with origin.within("mnist", "mnist"):  # written as the run's prepare and train stages would
        io.save_tensors(paths.prepared("mnist", "selection"), selection)
        io.save_tensors(paths.prepared("mnist", "test"), test)
        spec = {"arch": "mnist_cnn", "channels": 1, "size": 28, "classes": 10}
        save_checkpoint(paths.model("mnist"), trained_mnist, spec)
        save_checkpoint(paths.reference("mnist"), scrambled(trained_mnist), spec)
        save_checkpoint(paths.placebo("mnist"), scrambled(trained_mnist, transpose=False), spec)
    return tmp_path


def scrambled(model: torch.nn.Module, transpose: bool = True) -> torch.nn.Module:
    """A copy of `model` whose first-layer filters are flipped (and transposed): another network
    of the same architecture, whose FGSM has another spatial structure."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        weight = other.conv1.weight.flip(2)
        other.conv1.weight.copy_(weight.transpose(2, 3) if transpose else weight)
    return other


def test_the_reference_excess_is_one_when_the_reference_is_the_network_itself(
    mnist_selection, trained_mnist
):
    """D^ref of f's own attack is D, so X^ref = 1 for every neuron; a reference with scrambled
    filters attacks otherwise, and X^ref moves away from 1."""
    settings = attack.Settings(
        epsilons=[0.0, 0.1, 0.2], epsilon_labels=["0", "0.1", "0.2"], label_mode="true",
        layer=None, samples=SAMPLES, seed=3, batch_size=BATCH, device=CPU,
    )  # fmt: skip
    test = {k: mnist_selection[k][:8] for k in ("images", "labels")}
    itself_ = copy.deepcopy(trained_mnist)
    inputs = attack.Inputs(trained_mnist, mnist_selection, test, itself_, None)
    itself = attack.run(inputs, settings)
    same = itself.targeting
    assert same.reference and torch.equal(same.reference_share, same.share)
    assert torch.allclose(same.reference_excess, torch.ones(32, dtype=torch.float64))
    other_ = scrambled(trained_mnist)
    inputs = attack.Inputs(trained_mnist, mnist_selection, test, other_, None)
    other = attack.run(inputs, settings)
    moved = (other.targeting.reference_excess - 1).abs()
    assert torch.isfinite(moved).all() and moved.max() > 0.01
    assert torch.equal(other.targeting.share, same.share)  # f's own attack does not change
    none = attack.run(attack.Inputs(trained_mnist, mnist_selection, test, None, None), settings)
    none = none.targeting
    assert not none.reference and torch.isnan(none.reference_excess).all()
    # the surrogate: seeded, aimed nowhere, so X^sur is defined and differs from 1
    assert torch.equal(none.surrogate_share, same.surrogate_share) and none.surrogate_seed == 4
    assert torch.isfinite(none.surrogate_excess).all()


def test_the_placebo_excess_is_one_when_the_placebo_is_the_reference(
    mnist_selection, trained_mnist
):
    """X^plc = mean D^ref / mean D^ref2: where f_ref2 is f_ref, D^ref2 is D^ref and X^plc = 1 for
    every neuron; another placebo moves it. X^ref is measured on each half of S too, and all of
    S is their weighted mean."""
    settings = attack.Settings(
        epsilons=[0.0, 0.1, 0.2], epsilon_labels=["0", "0.1", "0.2"], label_mode="true",
        layer=None, samples=SAMPLES, seed=3, batch_size=BATCH, device=CPU,
    )  # fmt: skip
    test = {k: mnist_selection[k][:8] for k in ("images", "labels")}
    reference = scrambled(trained_mnist)
    same = attack.Inputs(trained_mnist, mnist_selection, test, reference, copy.deepcopy(reference))
    target = attack.run(same, settings).targeting
    assert target.placebo and torch.equal(target.placebo_share, target.reference_share)
    assert torch.allclose(target.placebo_excess, torch.ones(32, dtype=torch.float64))
    halves = target.reference_excess_halves
    assert halves.shape == (2, 32) and torch.isfinite(halves).all()
    assert not torch.equal(halves[0], halves[1])  # two halves of S, two measurements
    placebo = scrambled(trained_mnist, transpose=False)
    other = attack.Inputs(trained_mnist, mnist_selection, test, reference, placebo)
    moved = attack.run(other, settings).targeting
    assert (moved.placebo_excess - 1).abs().max() > 0.01
    assert torch.equal(moved.reference_excess, target.reference_excess)  # the primary stays
    with pytest.raises(ValueError, match="needs the reference"):
        attack.run(attack.Inputs(trained_mnist, mnist_selection, test, None, placebo), settings)


OUTPUTS = [
    "data/views/mnist/attack/attack.csv",
    "data/views/mnist/attack/targeting.csv",
    "data/views/mnist/attack/examples.png",
    "data/views/mnist/attack/examples.svg",
    "data/views/mnist/attack/attack.json",
    "data/attack/mnist/sweep.pt",
    "data/attack/mnist/scan_sweep.pt",
    "data/attack/mnist/layer.pt",
    "data/attack/mnist/targeting.pt",
]


def test_attack_stage_writes_the_contract(workdir, mnist_prepared, trained_mnist):
    run_script("attack", "mnist")
    _, selection, test = mnist_prepared
    scan_images, scan_labels = selection["images"][:SAMPLES], selection["labels"][:SAMPLES]
    report = io.read_json(paths.details("mnist", "attack"))
    logits = logits_of(trained_mnist, test["images"], BATCH, CPU)
    accuracy, _ = accuracy_and_loss(logits, test["labels"])
    assert report["fgsm_accuracy"]["0"] == accuracy == report["clean_accuracy"]
    assert list(report["fgsm_accuracy"]) == ["0", "0.1", "1/5"]
    for key in ("fgsm_loss", "success_rate", "linf_mean", "l2_mean"):
        assert list(report[key]) == ["0", "0.1", "1/5"]
    assert report["linf_mean"]["1/5"] == pytest.approx(0.2, abs=1e-6)
    assert report["layer"] == {"conv": "conv1", "neuron_module": "conv1", "neurons": 32}
    assert report["scan_samples"] == SAMPLES and report["labels"] == "true"
    assert report["reference"] is True
    scan_accuracy, _ = accuracy_and_loss(
        logits_of(trained_mnist, scan_images, BATCH, CPU), scan_labels
    )
    assert report["scan_clean_accuracy"] == scan_accuracy

    curve = pd.read_csv(paths.view("mnist", "attack", "attack.csv"))
    assert curve["accuracy"].is_monotonic_decreasing
    targets = pd.read_csv(paths.view("mnist", "attack", "targeting.csv"))
    assert len(targets) == 32 * 2 and set(targets["epsilon_label"]) == {"0.1", "1/5"}
    assert targets.groupby("epsilon_label")["share"].sum().tolist() == pytest.approx([1, 1])

    # the records the later stages read, checked on load
    assert ScanLayer.load(paths.layer_record("mnist")) == ScanLayer("conv1", "conv1", 32)
    targeting_record = Targeting.load(paths.targeting_record("mnist"), neurons=32)
    assert targeting_record.epsilon_labels == ["0.1", "1/5"]
    assert targeting_record.share.shape == (2, 32)
    sweep = FGSMSweep.load(paths.sweep_record("mnist"), images=test["images"])
    expected = gradient_signs(
        trained_mnist, test["images"], test["labels"], batch_size=BATCH, device=CPU
    )
    assert sweep.signs.dtype == torch.int8 and torch.equal(sweep.signs, expected)
    assert sweep.signs.shape == test["images"].shape  # the whole split: evaluate's original
    # the scan set S: the first SAMPLES images of the selection split, never a test image
    scan_sweep = FGSMSweep.load(paths.scan_sweep_record("mnist"), images=scan_images)
    expected = gradient_signs(trained_mnist, scan_images, scan_labels, batch_size=BATCH, device=CPU)
    assert torch.equal(scan_sweep.signs, expected)
    assert scan_sweep.clean_accuracy == scan_accuracy
    layer = ScanLayer("conv1", "conv1", 32)
    again = targeting(
        trained_mnist, layer, scan_images, expected, [0.1, 0.2], batch_size=BATCH, device=CPU
    )
    assert torch.equal(again.share, targeting_record.share)
    reference_signs = gradient_signs(
        scrambled(trained_mnist), scan_images, scan_labels, batch_size=BATCH, device=CPU
    )
    again = targeting(
        trained_mnist,
        layer,
        scan_images,
        reference_signs,
        [0.1, 0.2],
        batch_size=BATCH,
        device=CPU,
    )  # fmt: skip: D under the reference's attack is the record's D^ref
    assert torch.equal(again.share, targeting_record.reference_share)
    assert torch.equal(again.magnitude, targeting_record.magnitude)
    assert sweep.accuracy == list(report["fgsm_accuracy"].values())
    assert (sweep.label_mode, sweep.batch_size) == ("true", BATCH)
    size = Path(paths.sweep_record("mnist")).stat().st_size
    assert size < 2 * sweep.signs.numel() + 2 * sweep.clean_logits.nbytes

    before = {p: Path(p).read_bytes() for p in OUTPUTS}
    run_script("attack", "mnist")
    assert all(Path(p).read_bytes() == before[p] for p in OUTPUTS)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_examples_figure_is_saved_as_png_and_svg(tmp_path, channels):
    """A grid of 3 epsilons (clean first) by 4 images, each titled with its prediction; no
    legend (the colours are told in the title)."""
    from test_figures import check_saved

    from fragile_neurons.figures.attack import Examples, examples_figure

    generator = torch.Generator().manual_seed(0)
    examples = Examples(
        images=torch.rand(3, 4, channels, 8, 8, generator=generator),
        predictions=torch.tensor([[0, 1, 2, 3], [0, 1, 3, 3], [1, 1, 3, 0]]),
        labels=torch.tensor([0, 1, 2, 3]),
        classes=["0 - zero", "1 - one", "2 - two", "3 - three"],
        epsilons=[0.0, 0.1, 0.2],
        epsilon_labels=["0", "0.1", "1/5"],
    )
    fig = examples_figure(examples)
    assert len(fig.axes) == 12 and not fig.legends
    assert [ax.get_title() for ax in fig.axes[8:]] == ["1", "1", "3", "0"]
    assert fig.axes[8].get_ylabel() == "ε = 1/5"
    check_saved(lambda: examples_figure(examples), tmp_path, "examples")


def test_a_bad_scan_layer_is_one_line_and_exit_status_2(workdir, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scan"]["layer"] = "fc1"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as err:
        run_script("attack", "mnist")
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "scan.layer" in message and "'conv2'" in message
    assert not paths.details("mnist", "attack").exists()


def test_a_scan_set_larger_than_the_selection_split_is_one_line(workdir, capsys):
    """scan.samples beyond the selection split stops the stage before any work (the params check
    knows selection_size); attack.run refuses a split too small for it as well."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scan"]["samples"] = params["runs"]["mnist"]["selection_size"] + 1
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as err:
        run_script("attack", "mnist")
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "scan.samples" in message and "selection_size" in message
    assert not paths.details("mnist", "attack").exists()


def test_the_scan_set_is_the_head_of_the_selection_split(mnist_selection):
    n = len(mnist_selection["labels"])
    images, labels = scan_set(mnist_selection, None)  # null: all of it
    assert torch.equal(images, mnist_selection["images"]) and len(labels) == n
    images, labels = scan_set(mnist_selection, 7)
    assert torch.equal(labels, mnist_selection["labels"][:7]) and len(images) == 7
    with pytest.raises(ParamError, match=f"scan.samples = {n + 1} .* at most the selection"):
        scan_set(mnist_selection, n + 1)


def test_the_scan_stage_reads_the_scan_set_not_the_test_split(workdir):
    """The scan measures S with the attack stage's signs of S: with the test split gone, it runs,
    and the intact network's accuracies are the scan sweep's, epsilon by epsilon."""
    run_script("attack", "mnist")
    Path(paths.prepared("mnist", "test")).unlink()
    run_script("scan", "mnist")
    measured = ScanMeasurements.load(paths.scan_record("mnist"))
    scan_sweep = FGSMSweep.load(paths.scan_sweep_record("mnist"))
    assert measured.samples == SAMPLES == len(scan_sweep.signs)
    assert measured.intact_accuracy.tolist() == scan_sweep.accuracy
