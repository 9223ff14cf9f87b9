"""The records stages hand each other: plain values that round-trip exactly, saved as the same
bytes, loaded with weights_only safety and checked, every problem one line naming the file and
the stage to rerun."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import first_half, labels_record, targeting_record
from torch import nn

from fragile_neurons.running.errors import DataError
from fragile_neurons.storage import paths
from fragile_neurons.storage.records import (
    FGSMSweep,
    Gains,
    Labels,
    OriginalAttacks,
    Record,
    ScanLayer,
    ScanMeasurements,
)

F64 = torch.float64


def examples() -> dict[str, Record]:
    """One small record of each kind, keyed by the path a stage of run `r` writes it to."""
    n, e = 4, 2
    share = torch.full((e, n), 0.25, dtype=F64)
    phi = torch.tensor([0.3, 0.0, -0.1, 0.2], dtype=F64)

    def sweep(images: int) -> FGSMSweep:
        return FGSMSweep(
            epsilons=[0.0, 0.1],
            epsilon_labels=["0", "0.1"],
            label_mode="true",
            batch_size=8,
            accuracy=[0.9, 0.5],
            loss=[0.3, 1.2],
            success_rate=[0.0, float("nan")],
            linf_mean=[0.0, 0.1],
            l2_mean=[0.0, 2.0],
            clean_accuracy=0.9,
            clean_loss=0.3,
            clean_logits=torch.zeros(images, 10),
            signs=torch.ones(images, 1, 2, 2, dtype=torch.int8),
        )

    return {
        paths.sweep_record("r"): sweep(3),  # the test split
        paths.scan_sweep_record("r"): sweep(2),  # the scan set S
        paths.layer_record("r"): ScanLayer("conv1", "bn1", n),
        paths.targeting_record("r"): targeting_record(
            share, torch.ones(n, dtype=F64), epsilons=[0.1, 0.2]
        ),
        paths.scan_record("r"): ScanMeasurements(
            epsilons=[0.0, 0.1],
            epsilon_labels=["0", "0.1"],
            samples=5,
            path="delta",
            intact_correct=torch.tensor([5, 3]),
            intact_loss=torch.zeros(e, dtype=F64),
            dropped_correct=torch.tensor([[5, 3], [4, 2], [5, 1], [2, 0]]),
            dropped_loss=torch.zeros(n, e, dtype=F64),
            dropped_lost=torch.tensor([0, 1, 0, 3]),
            dropped_gained=torch.tensor([0, 0, 0, 0]),
            **first_half(
                {
                    "intact_correct": torch.tensor([5, 3]),
                    "dropped_correct": torch.tensor([[5, 3], [4, 2], [5, 1], [2, 0]]),
                },
                5,
            ),
        ),
        paths.labels_record("r"): labels_record(phi, ["fragile", "neutral", "robust", "neutral"]),
        paths.gains_record("r"): Gains(
            phi + 1,
            phi + 1,
            torch.ones(n, dtype=F64),
            phi,
            torch.tensor([0]),
            torch.tensor([2]),
            0.5,
            "proportional",
            4.0,
            False,
            torch.ones(2, n, dtype=F64),
            torch.tensor([0.95, 1.05], dtype=F64),
            True,
            0.1,
            torch.ones(n, dtype=F64),
            phi + 1,
        ),  # fmt: skip
        paths.original_attacks_record("r"): OriginalAttacks(
            epsilons=[0.0, 0.1],
            label_mode="true",
            batch_size=8,
            seed=0,
            pgd_attack="apgd-ce",
            pgd_steps=2,
            pgd_restarts=1,
            autoattack_steps=3,
            fgsm_clean=torch.tensor([True, False, True]),
            fgsm_attacked=torch.tensor([[True, False, True], [False, False, True]]),
            pgd_clean=torch.tensor([True, False]),
            pgd_attacked=torch.tensor([[True, False], [False, False]]),
            masking_pgd_accuracy=[1.0, 0.5],
            masking_autoattack_accuracy=[1.0, 0.0],
            masking_epsilons=[0.1],
            masking_clean=torch.tensor([True, True]),
            masking_pgd=torch.tensor([[True, False]]),
            masking_apgd_ce=torch.tensor([[False, False]]),
            masking_apgd_dlr=torch.tensor([[True, False]]),
        ),
    }


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("path", list(examples()), ids=lambda p: p.name)
def test_a_record_round_trips_to_the_same_bytes(here, path):
    record = examples()[path]
    record.save(path)
    again = type(record).load(path)
    for field in dataclasses.fields(record):
        want, got = getattr(record, field.name), getattr(again, field.name)
        if isinstance(want, torch.Tensor):
            assert want.dtype == got.dtype, field.name
            assert (
                torch.equal(want, got)
                or torch.equal(want.isnan(), got.isnan())
                and (torch.equal(want.nan_to_num(), got.nan_to_num()))
            ), field.name
        else:
            assert str(want) == str(got), field.name  # NaN == NaN as text
    first = path.read_bytes()
    again.save(path)
    assert path.read_bytes() == first  # same fields, same bytes
    assert set(record.to_dict()) == {f.name for f in dataclasses.fields(record)}


@pytest.mark.parametrize(
    ("path", "field", "value", "says"),
    [
        (paths.sweep_record("r"), "signs", torch.ones(3, 1, 2, 2), "not torch.int8 (?, ?, ?, ?)"),
        (paths.sweep_record("r"), "label_mode", "guess", "label_mode = 'guess' is not allowed"),
        (paths.sweep_record("r"), "accuracy", [0.9], "lengths differ"),
        (paths.layer_record("r"), "channels", "4", "channels is not an integer"),
        (paths.targeting_record("r"), "magnitude", -torch.ones(4, dtype=F64), ">= 0"),
        (paths.scan_record("r"), "dropped_correct", torch.full((4, 2), 9), "counts"),
        (paths.scan_record("r"), "dropped_lost", torch.tensor([0, 1, 0, 6]), "in [0, 5]"),
        (paths.scan_record("r"), "dropped_lost", torch.tensor([0, 1, 0, 2]), "minus dropped_lost"),
        (paths.scan_record("r"), "dropped_lost", torch.tensor([0, 1, 0]), "not torch.int64 (4,)"),
        (paths.labels_record("r"), "mcnemar_p", torch.full((4,), 1.5, dtype=F64), "in [0, 1]"),
        (paths.labels_record("r"), "warnings", "phi ties", "warnings is not a list of strings"),
        (paths.gains_record("r"), "labels_resolved", 1, "labels_resolved is not a boolean"),
        (paths.labels_record("r"), "label", ["fragile", "weird", "robust", "x"], "every label"),
        (
            paths.gains_record("r"),
            "phi",
            torch.ones(3, dtype=F64),
            "phi is torch.float64 (3,), not",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_spoilt_record_is_one_line_naming_file_and_stage(here, path, field, value, says):
    blob = examples()[path].to_dict()
    blob[field] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)
    with pytest.raises(DataError) as err:
        type(examples()[path]).load(path)
    message = str(err.value)
    assert str(path) in message and says in message and "\n" not in message
    assert f"rerun `dvc repro --force {paths.producer(path)}`" in message


def test_a_record_without_a_field_names_it(here):
    path = paths.gains_record("r")
    blob = examples()[path].to_dict()
    del blob["inverse_gain"]
    path.parent.mkdir(parents=True)
    torch.save(blob, path)
    with pytest.raises(DataError, match=r"lacks \['inverse_gain'\].*harden@r"):
        Gains.load(path)


def test_records_that_do_not_fit_the_caller_are_refused(here):
    for path, record in examples().items():
        record.save(path)
    with pytest.raises(DataError, match="holds 4 neurons, not the 8 of the scanned layer"):
        Labels.load(paths.labels_record("r"), neurons=8)
    with pytest.raises(DataError, match=r"images \(3, 1, 2, 2\), not of the images read with"):
        FGSMSweep.load(paths.sweep_record("r"), images=torch.zeros(4, 1, 2, 2))
    with pytest.raises(DataError, match=r"scan_sweep.pt holds the signs of images \(2, 1, 2, 2\)"):
        FGSMSweep.load(paths.scan_sweep_record("r"), images=torch.zeros(3, 1, 2, 2))
    assert len(FGSMSweep.load(paths.scan_sweep_record("r"), images=torch.zeros(2, 1, 2, 2)).signs)
    with pytest.raises(DataError, match="with labels 'true' and batch size 8, not at"):
        FGSMSweep.load(paths.sweep_record("r"), epsilons=[0, 0.1], label_mode="true", batch_size=9)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 3, 3))
    model.add_module("bn1", nn.BatchNorm2d(3))
    with pytest.raises(DataError, match="'conv1' .* not a convolution of this model"):
        ScanLayer.load(paths.layer_record("r"), model=model)  # 3 neurons, the record says 4
    model.conv1 = nn.Conv2d(1, 4, 3)
    assert ScanLayer.load(paths.layer_record("r"), model=model).neuron_module(model) is model.bn1


def test_every_record_path_names_the_stage_that_writes_it():
    stages = {
        "sweep": "attack",
        "scan_sweep": "attack",
        "layer": "attack",
        "targeting": "attack",
        "measurements": "scan",
        "labels": "label",
        "gains": "harden",
        "original": "baseline",
    }
    for path in examples():
        assert paths.producer(path) == f"{stages[path.stem]}@r"
    for split in paths.SPLITS:
        assert paths.producer(paths.prepared("r", split)) == "prepare@r"
    with pytest.raises(ValueError, match="no prepared split 'validation'"):
        paths.prepared("r", "validation")
