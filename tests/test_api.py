"""The Python API for one's own model (api.py): docs/api.md's example runs; the functions give the
pipeline's own numbers (one implementation per idea); bad inputs are clear ValueErrors."""

from __future__ import annotations

import copy
import inspect
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import fragile_neurons
from fragile_neurons import Normalize, attack_share, harden_model, scan_layer
from fragile_neurons.attacks.targeting import filter_gain, noise_share
from fragile_neurons.network.gates import fold, gated
from fragile_neurons.pipeline import attack as attack_stage
from fragile_neurons.pipeline import label as label_stage
from fragile_neurons.pipeline import scan as scan_stage
from fragile_neurons.pipeline.harden import hardening

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def readme_example() -> tuple[str, str]:
    """The first ```python block of docs/api.md's section "Use it on your own model", and the
    plain ``` block after it (what it prints)."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n## Use it on your own model\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```.*?```\n(.*?)```", section, re.DOTALL)
    assert match, "docs/api.md's API section has no python example and its output"
    return match.group(1), match.group(2)


def test_the_readme_example_prints_what_the_readme_says(one_thread, capsys):
    code, printed = readme_example()
    assert "resnet18(weights=None" in code and "scan_layer(" in code
    exec(compile(code, "docs/api.md (Use it on your own model)", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert out == printed, f"docs/api.md's printed output has drifted; it prints:\n{out}"


def test_the_api_does_not_slow_down_the_check_stage():
    """`fragile_neurons` exports the API lazily: the params check still imports no torch."""
    code = "import sys, fragile_neurons.pipeline.check; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(fragile_neurons.__all__) <= set(dir(fragile_neurons))
    with pytest.raises(AttributeError):
        fragile_neurons.no_such_name  # noqa: B018


# --- the pipeline's numbers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scan_set(mnist_selection):
    """The first 40 images of the synthetic digits' selection split, with their labels."""
    return mnist_selection["images"][:40], mnist_selection["labels"][:40]


EPSILONS = [0, 0.1, 0.2]


def test_scan_layer_gives_the_stages_numbers(trained_mnist, scan_set, one_thread):
    """The attack, scan and label stages' computations on the same model and images."""
    images, labels = scan_set
    report = scan_layer(trained_mnist, None, images, labels, EPSILONS, batch_size=16)
    settings = attack_stage.Settings(
        epsilons=EPSILONS,
        epsilon_labels=["0", "0.1", "0.2"],
        label_mode="true",
        layer=None,
        samples=len(images),
        seed=0,
        batch_size=16,
        device=CPU,
    )
    selection = {"images": images, "labels": labels, "classes": [str(k) for k in range(10)]}
    inputs = attack_stage.Inputs(trained_mnist, selection, selection, None, None)
    attacked = attack_stage.run(inputs, settings)
    assert report.layer == attacked.layer and report.layer.conv_name == "conv1"
    assert report.targeting.to_dict().keys() == attacked.targeting.to_dict().keys()
    for name, value in attacked.targeting.to_dict().items():
        mine = getattr(report.targeting, name)
        if isinstance(value, torch.Tensor):  # NaN where the run has no reference network
            assert torch.equal(mine.isnan(), value.isnan()), name
            assert torch.equal(mine.nan_to_num(), value.nan_to_num()), name
        else:
            assert mine == value, name
    scan_settings = scan_stage.Settings(
        epsilons=EPSILONS,
        epsilon_labels=["0", "0.1", "0.2"],
        samples=len(images),
        adversarial="transfer",
        label_mode="true",
        batch_size=16,
        device=CPU,
    )
    signs = attacked.scan_sweep.signs
    inputs = scan_stage.Inputs(trained_mnist, attacked.layer, images, labels, signs)
    measured = scan_stage.run(inputs, scan_settings).measurements
    assert torch.equal(report.measurements.dropped_correct, measured.dropped_correct)
    assert torch.equal(report.measurements.intact_correct, measured.intact_correct)
    assert torch.equal(report.measurements.dropped_lost, measured.dropped_lost)
    assert torch.equal(report.measurements.dropped_gained, measured.dropped_gained)
    labelled = label_stage.labelled(measured, "clean", 0.25)
    assert report.labels.label == labelled.label
    assert report.labels.warnings == labelled.warnings
    assert torch.equal(report.labels.mcnemar_p, labelled.mcnemar_p)
    assert torch.equal(report.labels.phi, labelled.phi)
    frame = report.frame()
    assert len(frame) == 32 and frame["label"].tolist() == labelled.label
    assert report.fragile.tolist() == labelled.members("fragile")
    assert report.robust.tolist() == labelled.members("robust")
    assert report.antifragile.tolist() == labelled.antifragile.nonzero().flatten().tolist()


def test_scores_fractions_and_the_adaptive_scan(trained_mnist, scan_set, one_thread):
    images, labels = scan_set
    images, labels = images[:12], labels[:12]
    transfer = scan_layer(trained_mnist, "conv2", images, labels, [0.2], score="difference",
                          label_fraction=0.5)  # fmt: skip
    assert transfer.layer.conv_name == "conv2" and transfer.layer.channels == 64
    assert transfer.measurements.epsilons == [0.0, 0.2]  # the clean images added
    assert transfer.labels.score == "difference" and len(transfer.fragile) == 32
    assert torch.equal(transfer.labels.phi, transfer.labels.difference_impact)
    adaptive = scan_layer(trained_mnist, "conv1", images, labels, ["0", "1/10"],
                          adversarial="adaptive", score="adversarial")  # fmt: skip
    assert adaptive.measurements.adversarial == "adaptive"
    assert adaptive.measurements.epsilon_labels == ["0", "1/10"]
    assert adaptive.targeting.epsilon_labels == ["1/10"]
    assert torch.equal(adaptive.labels.phi, adaptive.labels.adversarial_impact)


def test_attack_share_reports_d_with_its_controls(trained_mnist, scan_set, one_thread):
    images, labels = scan_set
    share = attack_share(trained_mnist, None, images, labels, EPSILONS, seed=3, batch_size=16)
    layer = share.layer
    per_epsilon = share.targeting  # E x N: a row per positive epsilon
    assert per_epsilon.share.shape == (2, 32) and per_epsilon.noise_share.shape == (2, 32)
    assert torch.allclose(per_epsilon.share.sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(share.share, per_epsilon.share.mean(0))  # [N]: the mean over epsilons
    noise = noise_share(trained_mnist, layer, images, [0.1, 0.2], seed=3, batch_size=16, device=CPU)
    assert torch.equal(per_epsilon.noise_share, noise)
    assert torch.allclose(share.noise_share, noise.mean(0))
    expected = per_epsilon.share.mean(0) / noise.mean(0)
    assert torch.allclose(share.excess_share, expected)
    assert torch.equal(share.filter_gain, filter_gain(trained_mnist, layer))
    other = attack_share(trained_mnist, None, images, labels, EPSILONS, seed=4, batch_size=16)
    assert torch.equal(other.share, share.share)
    assert not torch.equal(other.targeting.noise_share, noise)
    frame = share.frame()
    assert list(frame.columns) == [
        "neuron", "share", "noise_share", "excess_share", "filter_gain", "magnitude",
        "reference_excess", "placebo_excess", "surrogate_excess",
    ]  # fmt: skip
    assert len(frame) == 32 and frame["share"].sum() == pytest.approx(1.0)
    assert torch.isnan(share.reference_excess).all()  # no reference network given
    assert torch.isnan(share.placebo_excess).all()  # nor a placebo
    assert torch.isfinite(share.surrogate_excess).all()
    itself = attack_share(
        trained_mnist, None, images, labels, EPSILONS, seed=3, batch_size=16,
        reference=copy.deepcopy(trained_mnist),
    )  # fmt: skip
    assert torch.allclose(itself.reference_excess, torch.ones(32, dtype=torch.float64))
    twice = attack_share(
        trained_mnist, None, images, labels, EPSILONS, seed=3, batch_size=16,
        reference=copy.deepcopy(trained_mnist), placebo=copy.deepcopy(trained_mnist),
    )  # fmt: skip
    assert torch.allclose(twice.placebo_excess, torch.ones(32, dtype=torch.float64))
    with pytest.raises(ValueError, match="reference must be an nn.Module"):
        attack_share(trained_mnist, None, images, labels, EPSILONS, reference="f_ref")
    with pytest.raises(ValueError, match="placebo needs a reference"):
        attack_share(trained_mnist, None, images, labels, EPSILONS, placebo=trained_mnist)


def test_harden_model_folds_the_gains_into_a_copy(trained_mnist, scan_set, one_thread):
    images, labels = scan_set
    report = scan_layer(trained_mnist, None, images, labels, EPSILONS)
    before = {k: v.clone() for k, v in trained_mnist.state_dict().items()}
    hardened = harden_model(trained_mnist, report, compress=0.25, mode="uniform", max_gain=3.0)
    gains = hardening(
        report.targeting.magnitude.numpy(), report.labels.phi.numpy(), report.labels.label,
        compress=0.25, mode="uniform", max_gain=3.0,
    ).gains  # fmt: skip
    assert torch.equal(report.gains(0.25, "uniform", 3.0).gains, torch.from_numpy(gains))
    reference = fold(trained_mnist, report.layer, torch.from_numpy(gains))
    for name, value in reference.state_dict().items():
        assert torch.equal(hardened.state_dict()[name], value), name
    x = images[:8].float() / 255
    with torch.no_grad(), gated(trained_mnist, report.layer, torch.from_numpy(gains).float()):
        gated_logits = trained_mnist(x)
    with torch.no_grad():
        assert torch.allclose(hardened(x), gated_logits, atol=1e-5)
    after = trained_mnist.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model itself unchanged


def test_the_models_mode_is_restored(trained_mnist, scan_set, one_thread):
    images, labels = scan_set
    trained_mnist.train()
    try:
        attack_share(trained_mnist, "conv1", images[:4], labels[:4], [0.1])
        assert trained_mnist.training
    finally:
        trained_mnist.eval()


# --- bad inputs -----------------------------------------------------------------------------------


def tiny_model() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize([0.5], [0.25]),
            conv=nn.Conv2d(1, 4, 3),
            relu=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 6 * 6, 3),
        )
    ).eval()


IMAGES = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 0, 1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"images": IMAGES[0]},
            r"images must be a non-empty N x C x H x W tensor, got \(1, 8, 8\)",
        ),
        ({"images": IMAGES[:0]}, "images must be a non-empty N x C x H x W tensor"),
        ({"images": IMAGES.numpy()}, "tensor, got ndarray"),
        (
            {"images": IMAGES * 255},
            r"images must lie in \[0, 1\] \(pixel units\): normalise inside",
        ),
        ({"images": IMAGES - 0.5}, r"must lie in \[0, 1\]"),
        ({"images": IMAGES.masked_fill(IMAGES > 0.9, float("nan"))}, r"must lie in \[0, 1\]"),
        ({"images": (IMAGES * 10).int()}, "float in \\[0, 1\\] or uint8, not torch.int32"),
        (
            {"images": torch.rand(5, 3, 8, 8)},
            r"\(5, 3, 8, 8\) have 3 channels; .* \(NCHW\) with C = 1",
        ),
        (
            {"images": torch.rand(5, 8, 8, 1)},
            r"look like N x H x W x C .* images.permute\(0, 3, 1, 2\)",
        ),
        ({"images": torch.rand(5, 1, 9, 9)}, r"the model fails on images of shape \(5, 1, 9, 9\)"),
        ({"labels": LABELS[:4]}, r"labels must be 5 integer class indices, got torch.int64 \(4,\)"),
        ({"labels": LABELS.float()}, "labels must be 5 integer class indices, got torch.float32"),
        ({"labels": LABELS.bool()}, "integer class indices, got torch.bool"),
        ({"labels": [0, 1, 2, 0, 1]}, "integer class indices, got list"),
        ({"labels": LABELS + 1}, r"labels must lie in \[0, 3\) for a model of 3 logits"),
        ({"labels": LABELS - 1}, r"labels must lie in \[0, 3\)"),
        ({"epsilons": []}, "epsilons = \\[\\] is not allowed; expected a non-empty list"),
        ({"epsilons": 0.1}, "epsilons = 0.1 is not allowed; expected a non-empty list"),
        ({"epsilons": [0]}, "expected at least one positive epsilon"),
        ({"epsilons": [0.2, 0.1]}, "expected epsilons in strictly increasing order"),
        ({"epsilons": [0, 0.1, 0.1000001]}, "'0.1' in metrics and plots"),
        (
            {"epsilons": [0, 2]},
            r"epsilons\[1\] = 2 is not allowed; expected an epsilon in \[0, 1\]",
        ),
        ({"epsilons": [0, "a/b"]}, r"epsilons\[1\] = 'a/b' is not allowed; expected a number or a"),
        ({"layer": "fc"}, "layer = 'fc' is not an nn.Conv2d; convolutions: \\['conv'\\]"),
        ({"layer": "conv9"}, "layer = 'conv9' is not a module"),
        (
            {"layer": nn.Conv2d(1, 4, 3)},
            r"layer = Conv2d\(1, 4, .*\) is not a module of this model; .*: \['conv'\]",
        ),
        ({"layer": nn.ReLU()}, r"layer = ReLU\(\) is not a module of this model"),
        ({"layer": 0}, "layer must be an nn.Conv2d of the model, its name or None, not int"),
        ({"model": "resnet18"}, "model must be an nn.Module, not str"),
        ({"batch_size": 0}, "batch_size = 0 is not allowed; expected an integer >= 1"),
        (
            {"label_mode": "guess"},
            "label_mode = 'guess' is not allowed; expected true or 'predicted'",
        ),
        ({"device": "gpu0"}, "device = 'gpu0'; expected e.g. 'cpu'"),
        ({"device": "cuda:99"}, "device = 'cuda:99'.* (sees no CUDA device|has \\d+ CUDA devices)"),
    ],
)
def test_bad_inputs_are_clear_value_errors(change, message):
    given = {"model": tiny_model(), "layer": None, "images": IMAGES, "labels": LABELS,
             "epsilons": [0, 0.1]}  # fmt: skip
    positional = [change.get(name, value) for name, value in given.items()]
    options = {name: value for name, value in change.items() if name not in given}
    for function in (scan_layer, attack_share):
        with pytest.raises(ValueError, match=message):
            function(*positional, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"adversarial": "both"},
            "adversarial = 'both' is not allowed; expected 'transfer' or 'adaptive'",
        ),
        ({"score": "loss"}, "score = 'loss' is not allowed; expected 'clean' or"),
        (
            {"label_fraction": 0.6},
            r"label_fraction = 0.6 is not allowed; expected a number in \(0.0, 0.5\]",
        ),
        ({"label_fraction": 0}, r"label_fraction = 0 is not allowed"),
    ],
)
def test_bad_scan_options_are_clear_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        scan_layer(tiny_model(), None, IMAGES, LABELS, [0, 0.1], **options)


def test_uint8_images_are_pixels_and_a_seed_is_checked():
    model = tiny_model()
    pixels = (IMAGES * 255).round().to(torch.uint8)
    a = attack_share(model, None, pixels, LABELS, [0.1])
    b = attack_share(model, None, pixels.float() / 255, LABELS, [0.1])
    assert torch.equal(a.share, b.share)
    with pytest.raises(ValueError, match="seed = -1 is not allowed; expected an integer >= 0"):
        attack_share(model, None, IMAGES, LABELS, [0.1], seed=-1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compress": 1.5}, r"compress = 1.5 is not allowed; expected a number in \[0.0, 1.0\]"),
        (
            {"compress": "half"},
            r"compress = 'half' is not allowed; expected a number in \[0.0, 1.0\]",
        ),
        (
            {"mode": "greedy"},
            "mode = 'greedy' is not allowed; expected 'proportional' or 'uniform'",
        ),
        ({"max_gain": 0.5}, r"max_gain = 0.5 is not allowed; expected a number in \(1.0, inf\)"),
    ],
)
def test_bad_hardening_options_are_clear_value_errors(options, message):
    model = tiny_model()
    report = scan_layer(model, None, IMAGES, LABELS, [0, 0.1])
    with pytest.raises(ValueError, match=message):
        harden_model(model, report, **options)


def test_a_report_hardens_only_its_own_model():
    report = scan_layer(tiny_model(), None, IMAGES, LABELS, [0, 0.1])
    other = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 8, 3)))
    with pytest.raises(ValueError, match="report names layer 'conv' .* not a convolution of this"):
        harden_model(other, report)
    with pytest.raises(ValueError, match="report must be the ScanReport of scan_layer"):
        harden_model(tiny_model(), {"layer": "conv"})


def rgb_model() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2]),
            conv=nn.Conv2d(3, 4, 3),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 6 * 6, 3),
        )
    ).eval()


def test_a_grey_batch_for_an_rgb_model_is_refused_though_normalize_would_broadcast_it():
    grey = torch.rand(5, 1, 8, 8)
    with pytest.raises(ValueError, match=r"have 1 channels; .* \(NCHW\) with C = 3"):
        scan_layer(rgb_model(), None, grey, LABELS, [0, 0.1])
    with pytest.raises(ValueError, match=r"N x H x W x C .*images.permute"):
        attack_share(rgb_model(), None, torch.rand(5, 8, 8, 3), LABELS, [0, 0.1])


def test_reports_have_a_short_repr_a_summary_and_warn_of_unresolved_labels(one_thread):
    deaf = tiny_model()
    with torch.no_grad():
        deaf.fc.weight.zero_()  # no neuron matters: phi is constant, the labels unresolved
    with pytest.warns(fragile_neurons.LabelWarning, match="unresolved labels: ") as caught:
        report = scan_layer(deaf, None, IMAGES, LABELS, [0, 0.1])
    assert {w.filename for w in caught} == {__file__}  # the caller's line, not the API's
    assert repr(report) == (
        "ScanReport(layer='conv', neurons=4, images=5, epsilons=['0', '0.1'], score='clean', "
        "fragile=1, robust=1, resolved=False)"
    )
    summary = report.summary().splitlines()
    assert summary[0].startswith("layer conv (4 neurons, the channels of conv), 5 images")
    assert summary[2] == f"fragile: {report.fragile.tolist()}"
    assert summary[-1] == f"unresolved: {report.labels.warnings[-1]}"
    share = attack_share(tiny_model(), None, IMAGES, LABELS, [0, 0.1], seed=3)
    assert repr(share) == "ShareReport(layer='conv', neurons=4, epsilons=['0.1'], seed=3)"
    assert share.summary().splitlines()[1].startswith("excess share X from ")


# --- the layer, and the types of what comes back ----------------------------------------------


def nested_model() -> nn.Module:
    """tiny_model's layers inside a block, as torchvision nests them: the conv is "net.conv"."""
    return nn.Sequential(
        OrderedDict(normalize=Normalize([0.5], [0.25]), net=tiny_model()[1:])
    ).eval()  # fmt: skip


def test_the_layer_is_the_module_or_its_name(one_thread):
    """Captum's habit (the module) and the name give one layer; `layer_name=` is still taken."""
    model = nested_model()
    conv = model.net.conv
    assert list(inspect.signature(scan_layer).parameters)[:5] == [
        "model", "layer", "images", "labels", "epsilons",
    ]  # fmt: skip
    assert list(inspect.signature(attack_share).parameters)[1] == "layer"
    reports = [
        scan_layer(model, conv, IMAGES, LABELS, [0, 0.1]),
        scan_layer(model, "net.conv", IMAGES, LABELS, [0, 0.1]),
        scan_layer(model, None, IMAGES, LABELS, [0, 0.1]),
        scan_layer(model, layer=conv, images=IMAGES, labels=LABELS, epsilons=[0, 0.1]),
        scan_layer(model, layer_name="net.conv", images=IMAGES, labels=LABELS, epsilons=[0, 0.1]),
    ]
    for report in reports:
        assert report.layer == reports[0].layer and report.layer.conv_name == "net.conv"
        assert report.labels.label == reports[0].labels.label
        assert torch.equal(report.phi, reports[0].phi)
    shares = [
        attack_share(model, conv, IMAGES, LABELS, [0.1]),
        attack_share(model, "net.conv", IMAGES, LABELS, [0.1]),
        attack_share(model, layer_name=conv, images=IMAGES, labels=LABELS, epsilons=[0.1]),
    ]
    for share in shares:
        assert share.layer.conv_name == "net.conv" and torch.equal(share.share, shares[0].share)
    with pytest.raises(ValueError, match="layer = 'net.fc' is not an nn.Conv2d"):
        scan_layer(model, model.net.fc, IMAGES, LABELS, [0, 0.1])  # part of it, not a conv
    with pytest.raises(ValueError, match=r"layer = Sequential\(...\) is the model itself"):
        attack_share(model, model, IMAGES, LABELS, [0.1])
    with pytest.raises(ValueError, match=r"is not a module of this model; .*\['net.conv'\]"):
        scan_layer(model, copy.deepcopy(conv), IMAGES, LABELS, [0, 0.1])  # equal, not the same
    for function in (scan_layer, attack_share):
        with pytest.raises(TypeError, match="got the layer twice"):
            function(model, conv, IMAGES, LABELS, [0.1], layer_name="net.conv")
        with pytest.raises(TypeError, match="got the layer twice"):
            function(model, layer=conv, layer_name=conv, images=IMAGES, labels=LABELS,
                     epsilons=[0.1])  # fmt: skip


def test_per_neuron_values_are_tensors_of_shape_n_and_tables_frames(one_thread):
    """One type for each kind of result (docs/api.md, "What they return")."""
    model = tiny_model()
    report = scan_layer(model, model.conv, IMAGES, LABELS, [0, 0.1, 0.2], label_fraction=0.5)
    share = attack_share(model, model.conv, IMAGES, LABELS, [0, 0.1, 0.2])
    gains = report.gains(compress=0.5)
    per_neuron = {
        "report.phi": report.phi,
        "report.labels.clean_impact": report.labels.clean_impact,
        "gains.gains": gains.gains,
        **{
            f"share.{name}": getattr(share, name)
            for name in (
                "share",
                "noise_share",
                "excess_share",
                "filter_gain",
                "magnitude",
                "reference_excess",
                "surrogate_excess",
            )  # fmt: skip
        },
    }
    for name, value in per_neuron.items():
        assert isinstance(value, torch.Tensor), name
        assert value.shape == (4,) and value.dtype == torch.float64, name
    assert gains.capped.shape == (4,) and gains.capped.dtype == torch.bool
    for name in ("fragile", "robust", "antifragile"):
        value = getattr(report, name)
        assert isinstance(value, torch.Tensor) and value.dtype == torch.int64, name
        assert value.dim() == 1 and torch.equal(value, value.sort().values), name
    assert len(report.fragile) == len(report.robust) == 2
    members = report.fragile.tolist() + report.robust.tolist()
    assert [report.labels.label[k] for k in members] == ["fragile"] * 2 + ["robust"] * 2
    assert share.targeting.share.shape == (2, 4)  # per epsilon: in the record, E x N
    for frame in (report.frame(), share.frame()):
        assert isinstance(frame, pd.DataFrame) and frame["neuron"].tolist() == [0, 1, 2, 3]
    assert share.frame()["share"].tolist() == share.share.tolist()
    assert report.frame()["phi"].tolist() == report.phi.tolist()
