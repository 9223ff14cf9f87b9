"""prepare reads torchvision's real on-disk formats, checks checksums and draws seeded subsets."""

import shutil

import pytest
import torch

from fragile_neurons import data
from fragile_neurons.config import ParamError


@pytest.mark.parametrize(
    ("dataset", "shape"),
    [("mnist", (1, 28, 28)), ("fashion_mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))],
)
def test_prepare_reads_the_real_formats(synthetic_root, dataset, shape):
    train, test, report = data.prepare(dataset, synthetic_root, False, [dataset], None, None, 0)
    assert train["images"].dtype == torch.uint8 and tuple(train["images"].shape[1:]) == shape
    assert len(train["labels"]) == 400 and len(test["labels"]) == 200
    assert train["labels"].dtype == torch.int64 and set(train["labels"].tolist()) == set(range(10))
    assert report["train_class_counts"] == [40] * 10
    assert report["checksums_verified"] is False  # synthetic files differ from the originals
    assert len(train["classes"]) == 10
    expected = train["images"].double().div(255).transpose(0, 1).flatten(1).mean(1)
    assert torch.allclose(train["mean"].double(), expected, atol=1e-6)


def test_balanced_subsets_are_seeded(synthetic_root):
    a, ta, report = data.prepare("mnist", synthetic_root, False, ["mnist"], 53, 20, seed=1)
    b, tb, _ = data.prepare("mnist", synthetic_root, False, ["mnist"], 53, 20, seed=1)
    c, _, _ = data.prepare("mnist", synthetic_root, False, ["mnist"], 53, 20, seed=2)
    assert report["train_class_counts"] == [6, 6, 6, 5, 5, 5, 5, 5, 5, 5]
    assert report["test_class_counts"] == [2] * 10
    assert torch.equal(a["images"], b["images"]) and torch.equal(ta["labels"], tb["labels"])
    assert not torch.equal(a["labels"], c["labels"])


def test_subset_larger_than_split_is_a_param_error(synthetic_root):
    with pytest.raises(ParamError, match="runs.demo.test_size"):
        data.prepare("mnist", synthetic_root, False, ["mnist"], None, 999, 0, run="demo")


def test_checksum_mismatch_needs_explicit_opt_in(synthetic_root):
    with pytest.raises(data.DataError, match=r"accept_checksum_mismatch: \[cifar10\]"):
        data.prepare("cifar10", synthetic_root, False, [], None, None, 0)


def test_missing_files_offline_say_what_to_put_where(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.prepare("mnist", tmp_path, False, [], None, None, 0)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(err.value)
    assert "\n" not in str(err.value)


def test_raw_md5_check_accepts_files_equal_to_the_originals(synthetic_root, tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root / "MNIST", root / "MNIST")
    raw = root / "MNIST" / "raw"
    table = {p.name: data._md5(p) for p in raw.iterdir()}
    monkeypatch.setitem(data.RAW_MD5, "mnist", table)
    assert data.checksum_mismatches("mnist", root) == []
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"changed")
    assert data.checksum_mismatches("mnist", root) == ["t10k-labels-idx1-ubyte"]


@pytest.mark.realdata
def test_real_mnist_is_verified_and_cifar_reconstruction_is_not(real_root):
    assert data.checksum_mismatches("mnist", real_root) == []
    if (real_root / "cifar-10-batches-py").is_dir():
        assert "data_batch_1" in data.checksum_mismatches("cifar10", real_root)
