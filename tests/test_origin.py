"""Where a file belongs (running/origin.py): what a stage's files carry, and the check of what a
stage reads, whatever the order of its reads. Pipelines of small files written by hand, in the
real on-disk format (io.save_tensors); the stages' own refusals are rows of test_bad_inputs."""

from __future__ import annotations

from contextlib import chdir

import pytest
import torch

from fragile_neurons.running import origin
from fragile_neurons.running.errors import DataError
from fragile_neurons.storage.io import admit, load_tensors, save_tensors

CLASSES = [str(c) for c in range(10)]


def write(name: str, run: str = "mnist", reads: tuple[str, ...] = (), **fields) -> dict:
    """`name` written by a stage of `run` that read `reads` first; its origin."""
    with origin.within(run, "mnist"):
        for source in reads:
            admit(source, load_tensors(source))
        save_tensors(name, {"x": torch.zeros(2), **fields})
        return load_tensors(name)["origin"]


def read(run: str, *names: str) -> None:
    """A stage of `run` reading `names` in this order."""
    with origin.within(run, "mnist"):
        for name in names:
            admit(name, load_tensors(name))


@pytest.fixture
def project(tmp_path):
    with chdir(tmp_path):
        write("split.pt", classes=CLASSES)
        write("model.pt", reads=("split.pt",))
        write("labels.pt", reads=("split.pt", "model.pt"))
        yield tmp_path


def test_a_file_carries_its_run_dataset_classes_and_the_md5s_it_was_made_from(project):
    blob = load_tensors("labels.pt")
    assert blob["origin"] == {
        "run": "mnist",
        "dataset": "mnist",
        "classes": CLASSES,
        "inputs": {"model.pt": origin.md5("model.pt"), "split.pt": origin.md5("split.pt")},
    }
    read("mnist", "split.pt", "model.pt", "labels.pt")  # a consistent set is admitted


def test_outside_a_stage_nothing_is_stamped_or_checked(tmp_path):
    with chdir(tmp_path):
        save_tensors("plain.pt", {"x": torch.zeros(1)})
        blob = load_tensors("plain.pt")
        assert "origin" not in blob
        admit("plain.pt", blob)  # no stage: no check


@pytest.mark.parametrize("order", [("model.pt", "labels.pt"), ("labels.pt", "model.pt")])
def test_a_record_made_from_another_version_is_refused_in_either_order(project, order):
    write("model.pt", reads=("split.pt",), extra=torch.ones(1))  # retrained after labels.pt
    with pytest.raises(DataError) as refused:
        read("mnist", *order)
    line = str(refused.value)
    assert "\n" not in line and "labels.pt" in line and "model.pt" in line
    assert "model.pt changed after it" in line


def test_a_file_of_another_run_is_refused(project):
    with pytest.raises(DataError, match="made for run 'mnist' .*not for this stage's run 'twin'"):
        read("twin", "labels.pt")


def test_two_files_made_from_two_versions_of_a_third_are_refused(project):
    write("reference.pt", reads=("split.pt",))
    write("split.pt", classes=CLASSES, extra=torch.ones(1))  # the split prepared again
    write("placebo.pt", reads=("split.pt",))
    with pytest.raises(DataError, match="two versions of split.pt"):
        read("mnist", "reference.pt", "placebo.pt")


def test_a_file_of_other_classes_is_refused(project):
    write("other.pt", classes=list("abcdefghij"))
    with pytest.raises(DataError, match=r"of the classes \['a', 'b', 'c', \.\.\. \(10\)\]"):
        read("mnist", "split.pt", "other.pt")


def test_a_file_without_an_origin_is_refused_in_a_stage(project):
    save_tensors("old.pt", {"x": torch.zeros(1)})
    with pytest.raises(DataError, match="old.pt carries no origin"):
        read("mnist", "old.pt")
