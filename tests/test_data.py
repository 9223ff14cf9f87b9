"""prepare reads torchvision's on-disk formats itself (a restricted unpickler for CIFAR-10, numpy
for MNIST's idx files), accepts only original or pinned md5s, and draws seeded subsets."""

import os
import pathlib
import pickle
import shutil
import struct
import urllib.request
from urllib.error import URLError

import numpy as np
import pytest
import torch
import yaml
from conftest import CIFAR_CLASSES, RAW_TRAIN, ROOT, SELECTION, prepare_splits, synthetic_images

from fragile_neurons.datasets import files, splits
from fragile_neurons.running.config import validate
from fragile_neurons.running.errors import DataError, ParamError

CIFAR = "cifar-10-batches-py"

# The rebuilt CIFAR-10 in ../shared/datasets (its README lists these md5s).
REBUILT_CIFAR_MD5 = {
    "data_batch_1": "c826ad03100f408d28e72d46bc29aea9",
    "data_batch_2": "1ff4b46114f534e12a70f35055e85c86",
    "data_batch_3": "4254039e38d07d6f48a81e86d57aeef0",
    "data_batch_4": "039c4719c6971a88125d7d958a1cd684",
    "data_batch_5": "21201c1b22098d4d200d6fb4e52f035b",
    "test_batch": "8137241a5585e0f415e909a185298868",
}


def copy_cifar(synthetic_root, tmp_path):
    """A private copy of the synthetic CIFAR-10 (tests that change files must not share them)."""
    shutil.copytree(synthetic_root / CIFAR, tmp_path / CIFAR)
    return tmp_path, tmp_path / CIFAR


def pinned(dataset, root):
    """accept_checksum_mismatch pinning every file of `dataset` under `root` as it is now."""
    return {dataset: files.file_md5s(dataset, root)}


def prepare_pinned(dataset, root, **kw):
    return prepare_splits(
        dataset, root, False, pinned(dataset, root), SELECTION, None, None, 0, **kw
    )


def one_line_error(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("dataset", "shape"),
    [("mnist", (1, 28, 28)), ("fashion_mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))],
)
def test_prepare_reads_the_real_formats(synthetic_root, synthetic_pins, dataset, shape):
    train, selection, test, report = prepare_splits(
        dataset, synthetic_root, False, synthetic_pins, SELECTION, None, None, 0
    )
    for split in (train, selection, test):
        assert split["images"].dtype == torch.uint8 and tuple(split["images"].shape[1:]) == shape
        assert split["labels"].dtype == split["index"].dtype == torch.int64
        assert split["classes"] == train["classes"] and split["mean"] is train["mean"]
    assert len(train["labels"]) == RAW_TRAIN - SELECTION and len(selection["labels"]) == SELECTION
    assert len(test["labels"]) == 200 and set(train["labels"].tolist()) == set(range(10))
    assert report["selection_class_counts"] == [SELECTION // 10] * 10
    assert (report["train_size"], report["selection_size"], report["test_size"]) == (
        RAW_TRAIN - SELECTION,
        SELECTION,
        200,
    )
    assert sum(report["train_class_counts"]) == RAW_TRAIN - SELECTION
    assert sum(report["test_class_counts"]) == 200
    assert len(train["classes"]) == 10
    expected = train["images"].double().div(255).transpose(0, 1).flatten(1).mean(1)
    assert torch.allclose(train["mean"].double(), expected, atol=1e-6)
    # synthetic files differ from the originals: accepted by their pins, reported as unverified
    assert report["checksums_verified"] is False
    assert report["checksum_mismatches"] == list(files.raw_files(dataset, synthetic_root))
    assert report["files"] == synthetic_pins[dataset]
    assert list(report["files"]) == list(files.original_md5s(dataset))  # fixed order


def test_cifar_images_keep_their_pixels_labels_and_class_names(synthetic_root, synthetic_pins):
    train, _, test, _ = prepare_splits(
        "cifar10", synthetic_root, False, synthetic_pins, SELECTION, None, 10, 0
    )
    images, labels = synthetic_images(200, 3, 32, 21)  # what conftest wrote as test_batch
    assert train["classes"] == CIFAR_CLASSES
    for image, label in zip(test["images"], test["labels"], strict=True):
        matches = (torch.from_numpy(images).permute(0, 3, 1, 2) == image).flatten(1).all(1)
        assert matches.any() and int(labels[matches.nonzero()[0, 0]]) == int(label)


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_cifar_pickles_of_any_protocol_load(synthetic_root, synthetic_pins, tmp_path, protocol):
    """numpy 2 names numpy._core and, from protocol 5, _frombuffer: all are admitted."""
    folder = tmp_path / CIFAR
    folder.mkdir()
    for path in (synthetic_root / CIFAR).iterdir():
        blob = pickle.loads(path.read_bytes(), encoding="latin1")  # our own synthetic files
        (folder / path.name).write_bytes(pickle.dumps(blob, protocol=protocol))
    train, _, _, _ = prepare_pinned("cifar10", tmp_path)
    expected, _, _, _ = prepare_splits(
        "cifar10", synthetic_root, False, synthetic_pins, SELECTION, None, None, 0
    )
    assert torch.equal(train["images"], expected["images"])
    assert torch.equal(train["labels"], expected["labels"])


def test_balanced_subsets_are_seeded(synthetic_root, synthetic_pins):
    pins = synthetic_pins
    a, sa, ta, report = prepare_splits("mnist", synthetic_root, False, pins, 25, 53, 20, seed=1)
    b, sb, tb, _ = prepare_splits("mnist", synthetic_root, False, pins, 25, 53, 20, seed=1)
    c, sc, _, _ = prepare_splits("mnist", synthetic_root, False, pins, 25, 53, 20, seed=2)
    assert report["train_class_counts"] == [6, 6, 6, 5, 5, 5, 5, 5, 5, 5]
    assert report["selection_class_counts"] == [3] * 5 + [2] * 5
    assert report["test_class_counts"] == [2] * 10
    assert torch.equal(a["images"], b["images"]) and torch.equal(ta["labels"], tb["labels"])
    assert torch.equal(sa["index"], sb["index"]) and torch.equal(sa["images"], sb["images"])
    assert not torch.equal(a["labels"], c["labels"])
    assert not torch.equal(sa["index"], sc["index"])


# What conftest.make_root wrote for each dataset: (raw train seed, raw test seed, channels, size)
RAW_SEEDS = {"mnist": (0, 1, 1, 28), "cifar10": (20, 21, 3, 32)}


def raw_split(dataset: str, train: bool, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic raw split as conftest wrote it: images N x C x H x W, labels."""
    train_seed, test_seed, channels, size = RAW_SEEDS[dataset]
    images, labels = synthetic_images(n, channels, size, train_seed if train else test_seed)
    return torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels).long()


def contents(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


@pytest.mark.parametrize("train_size", [None, 150])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_selection_train_and_test_are_disjoint(synthetic_root, synthetic_pins, dataset, train_size):
    """The selection split is carved out of the raw training split and never meets the train
    split (by index and, on synthetic data whose every image is unique, by content); the test
    split comes from the raw test split. Each split's index says where its images came from."""
    train, selection, test, report = prepare_splits(
        dataset, synthetic_root, False, synthetic_pins, SELECTION, train_size, None, 0
    )
    raw_train, raw_train_labels = raw_split(dataset, True, RAW_TRAIN)
    raw_test, raw_test_labels = raw_split(dataset, False, 200)
    for split, images, labels in (
        (train, raw_train, raw_train_labels),
        (selection, raw_train, raw_train_labels),
        (test, raw_test, raw_test_labels),
    ):
        assert torch.equal(split["images"], images[split["index"]])  # the index is truthful
        assert torch.equal(split["labels"], labels[split["index"]])
        assert len(set(split["index"].tolist())) == len(split["index"])
    picked, trained = set(selection["index"].tolist()), set(train["index"].tolist())
    assert picked.isdisjoint(trained)
    assert len(picked) == SELECTION == report["selection_size"]
    if train_size is None:  # the selection and train splits share out the raw training split
        assert picked | trained == set(range(RAW_TRAIN))
    else:
        assert len(trained) == train_size == report["train_size"]
    assert len(contents(raw_train) | contents(raw_test)) == RAW_TRAIN + 200  # every image unique
    seen = [contents(split["images"]) for split in (train, selection, test)]
    assert [len(c) for c in seen] == [len(split["labels"]) for split in (train, selection, test)]
    assert seen[0].isdisjoint(seen[1]) and seen[0].isdisjoint(seen[2])
    assert seen[1].isdisjoint(seen[2])
    # the channel statistics are the train split's alone
    mean, std = splits.channel_stats(train["images"])
    assert torch.equal(selection["mean"], mean) and torch.equal(test["std"], std)


def test_a_selection_or_train_size_too_large_is_a_param_error(synthetic_root, synthetic_pins):
    with pytest.raises(ParamError, match="runs.demo.selection_size = 501 .*raw training split"):
        prepare_splits(
            "mnist", synthetic_root, False, synthetic_pins, RAW_TRAIN + 1, None, None, 0, run="demo"
        )
    left = RAW_TRAIN - SELECTION
    with pytest.raises(ParamError) as err:
        prepare_splits(
            "mnist", synthetic_root, False, synthetic_pins, SELECTION, left + 1, None, 0, run="demo"
        )
    assert err.value.key == "runs.demo.train_size"
    assert f"at most the {left} images of the raw training split left after the {SELECTION}" in (
        err.value.allowed
    )
    assert "runs.demo.selection_size" in err.value.allowed


def test_subset_larger_than_split_is_a_param_error(synthetic_root, synthetic_pins):
    with pytest.raises(ParamError, match="runs.demo.test_size"):
        prepare_splits("mnist", synthetic_root, False, synthetic_pins, 10, None, 999, 0, run="demo")


def test_unpinned_mismatch_is_refused_and_says_how_to_pin(synthetic_root):
    with pytest.raises(DataError) as err:
        prepare_splits("cifar10", synthetic_root, False, {}, SELECTION, None, None, 0)
    message = one_line_error(err)
    path = synthetic_root / CIFAR / "data_batch_1"
    assert f"{path} has md5 {files.file_md5s('cifar10', synthetic_root)['data_batch_1']}" in message
    assert "not the original's c99cafc152244af753f735de768cd75f" in message
    assert "pin each file's md5 under data.accept_checksum_mismatch.cifar10.<file>" in message


def test_pinned_file_that_changes_is_refused(synthetic_root, tmp_path):
    root, folder = copy_cifar(synthetic_root, tmp_path)
    pins = pinned("cifar10", root)
    with open(folder / "data_batch_2", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError) as err:
        prepare_splits("cifar10", root, False, pins, SELECTION, None, None, 0)
    message = one_line_error(err)
    now = files.file_md5s("cifar10", root)["data_batch_2"]
    assert f"{folder / 'data_batch_2'} has md5 {now}" in message
    assert f"or the pinned {pins['cifar10']['data_batch_2']}" in message
    assert "data_batch_1" not in message  # the files still equal to their pins are not named


def params_pinning(pins) -> dict:
    """The committed params with data.accept_checksum_mismatch = `pins`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["accept_checksum_mismatch"] = pins
    return params


def test_a_pin_for_an_unknown_file_is_a_param_error(synthetic_pins):
    pins = {"cifar10": {**synthetic_pins["cifar10"], "data_batch_6": "0" * 32}}
    with pytest.raises(ParamError) as err:
        validate(params_pinning(pins))
    assert err.value.key == "data.accept_checksum_mismatch.cifar10.data_batch_6"
    assert "data_batch_1" in err.value.allowed and "batches.meta" in err.value.allowed


def test_the_old_list_form_is_a_param_error():
    with pytest.raises(ParamError, match="data.accept_checksum_mismatch"):
        validate(params_pinning(["cifar10"]))


def test_originals_are_verified_without_pins(synthetic_root, tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root / "MNIST", root / "MNIST")
    monkeypatch.setitem(files.RAW_MD5, "mnist", files.file_md5s("mnist", root))  # as if original
    assert all(check.original for check in files.checksums("mnist", root).values())
    *_, report = prepare_splits("mnist", root, False, {}, SELECTION, None, None, 0)
    assert report["checksums_verified"] is True and report["checksum_mismatches"] == []
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"changed")
    checks = files.checksums("mnist", root)
    assert [name for name, check in checks.items() if not check.original] == [
        "t10k-labels-idx1-ubyte"
    ]


class RunsCode:
    """A pickle payload: unpickled by the general unpickler, it calls `function(*args)`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("name", ["data_batch_1", "batches.meta"])
@pytest.mark.parametrize("payload", ["touch", "system"])
def test_a_pinned_malicious_pickle_runs_nothing(synthetic_root, tmp_path, name, payload):
    root, folder = copy_cifar(synthetic_root, tmp_path)
    marker = tmp_path / "marker"
    if payload == "touch":
        code = RunsCode(pathlib.Path.touch, marker)
    else:
        code = RunsCode(os.system, f"touch {marker}")
    blob = pickle.loads((folder / name).read_bytes(), encoding="latin1")
    blob["data" if name != "batches.meta" else "label_names"] = code
    (folder / name).write_bytes(pickle.dumps(blob, protocol=2))
    with pytest.raises(DataError) as err:
        prepare_pinned("cifar10", root)  # the checksum would let it through
    message = one_line_error(err)
    assert f"cifar10: {folder / name} asks the unpickler for '" in message
    assert "Refusing to load it." in message
    assert not marker.exists()


def test_the_payload_does_run_under_the_general_unpickler(tmp_path):
    """The test above means something: this payload runs code when unpickled naively."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps({"data": RunsCode(pathlib.Path.touch, marker)}, protocol=2))
    assert marker.exists()


def test_a_truncated_batch_is_a_data_error(synthetic_root, tmp_path):
    root, folder = copy_cifar(synthetic_root, tmp_path)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as err:
        prepare_pinned("cifar10", root)
    message = one_line_error(err)
    assert f"{folder / 'test_batch'} is not a readable pickle" in message


BAD_CIFAR = {
    "data_batch_3": [
        ["not", "a", "dict"],
        {"data": np.zeros((80, 3072), np.float32), "labels": [0] * 80},
        {"data": np.zeros((80, 3071), np.uint8), "labels": [0] * 80},
        {"data": np.zeros((80, 3072), np.uint8), "labels": [0] * 79},
        {"data": np.zeros((80, 3072), np.uint8), "labels": [10] * 80},
        {"data": np.zeros((80, 3072), np.uint8), "labels": ["0"] * 80},
        {"data": np.zeros((80, 3072), np.uint8)},
    ],
    "batches.meta": [
        {"label_names": CIFAR_CLASSES[:9]},
        {"label_names": [b"x"] * 10},
        {"names": CIFAR_CLASSES},
    ],
}


@pytest.mark.parametrize(
    ("name", "content"), [(name, c) for name, cases in BAD_CIFAR.items() for c in cases]
)
def test_a_cifar_file_of_the_wrong_structure_is_a_data_error(
    synthetic_root, tmp_path, name, content
):
    root, folder = copy_cifar(synthetic_root, tmp_path)
    (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError) as err:
        prepare_pinned("cifar10", root)
    message = one_line_error(err)
    assert f"cifar10: {folder / name} is not " in message


def idx_header(magic, *sizes):
    return struct.pack(f">{1 + len(sizes)}I", magic, *sizes)


BAD_IDX = {
    "wrong magic": ("train-images-idx3-ubyte", idx_header(2049, 400, 28, 28) + bytes(400 * 784)),
    "too short": ("train-images-idx3-ubyte", idx_header(2051, 400, 28, 28) + bytes(399 * 784)),
    "too long": ("train-labels-idx1-ubyte", idx_header(2049, 400) + bytes(401)),
    "not 28x28": ("train-images-idx3-ubyte", idx_header(2051, 400, 28, 27) + bytes(400 * 756)),
    "no header": ("t10k-labels-idx1-ubyte", b"\0\0\x08"),
    "count differs": ("t10k-labels-idx1-ubyte", idx_header(2049, 199) + bytes(199)),
    "label 10": ("t10k-labels-idx1-ubyte", idx_header(2049, 200) + bytes([10] * 200)),
}


@pytest.mark.parametrize("case", list(BAD_IDX))
def test_an_idx_file_with_a_wrong_header_is_a_data_error(synthetic_root, tmp_path, case):
    shutil.copytree(synthetic_root / "MNIST", tmp_path / "MNIST")
    name, content = BAD_IDX[case]
    (tmp_path / "MNIST" / "raw" / name).write_bytes(content)
    with pytest.raises(DataError) as err:
        prepare_pinned("mnist", tmp_path)
    assert str(tmp_path / "MNIST" / "raw" / name) in one_line_error(err)


def test_legacy_processed_mnist_files_are_never_loaded(synthetic_root, synthetic_pins, tmp_path):
    """torchvision's MNIST class would torch.load processed/{training,test}.pt instead of the raw
    files; prepare reads only the raw files."""
    shutil.copytree(synthetic_root / "MNIST", tmp_path / "MNIST")
    (tmp_path / "MNIST" / "processed").mkdir()
    for name in ("training.pt", "test.pt"):
        (tmp_path / "MNIST" / "processed" / name).write_bytes(b"not a torch file")
    train, *_ = prepare_splits("mnist", tmp_path, False, synthetic_pins, SELECTION, None, None, 0)
    expected, *_ = prepare_splits(
        "mnist", synthetic_root, False, synthetic_pins, SELECTION, None, None, 0
    )
    assert torch.equal(train["images"], expected["images"])


def test_missing_files_offline_say_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as err:
        prepare_splits("mnist", tmp_path, False, {}, SELECTION, None, None, 0)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in one_line_error(err)


@pytest.fixture
def offline(monkeypatch):
    """Every URL torchvision opens fails at once, as without a network."""

    def refuse(*args, **kwargs):
        raise URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_failed_download_leaves_no_new_folders(tmp_path, offline, dataset):
    root = tmp_path / "new" / "root"
    with pytest.raises(DataError) as err:
        files.ensure_files(dataset, root, download=True)
    assert "download into" in one_line_error(err) and "no network in tests" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # tmp_path/new and everything under it are gone


def test_a_failed_download_leaves_existing_folders_alone(tmp_path, offline):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"kept")
    with pytest.raises(DataError):
        prepare_splits("fashion_mnist", tmp_path, True, {}, SELECTION, None, None, 0)
    with pytest.raises(DataError):
        prepare_splits("mnist", tmp_path, True, {}, SELECTION, None, None, 0)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "MNIST",
        "MNIST/raw",
        "MNIST/raw/train-images-idx3-ubyte",
    ]


@pytest.mark.realdata
def test_real_mnist_is_verified_and_cifar_reconstruction_is_not(real_root):
    assert all(check.original for check in files.checksums("mnist", real_root).values())
    if (real_root / CIFAR).is_dir():
        checks = files.checksums("cifar10", real_root)
        assert not checks["data_batch_1"].original and checks["batches.meta"].original
        assert {name: c.md5 for name, c in checks.items() if not c.original} == REBUILT_CIFAR_MD5


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
def test_the_params_check_knows_the_files_prepare_reads(dataset):
    """config.RAW_FILES (the torch-free check stage's list, for md5 pins) names exactly the raw
    files data.py reads: the two lists must not drift apart."""
    from fragile_neurons.running.config import RAW_FILES

    assert sorted(RAW_FILES[dataset]) == sorted(files.original_md5s(dataset))
