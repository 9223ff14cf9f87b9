"""Preparing MNIST, Fashion-MNIST and CIFAR-10 through torchvision, and reading them back.

`prepare` reads torchvision's on-disk layout under a root folder (downloading into it when the
files are absent and downloading is allowed), checks the files' checksums, draws optional seeded
class-balanced subsets, and returns uint8 tensors in a fixed, seeded order. A prepared split is a
dict ``images`` (uint8, N x C x H x W), ``labels`` (int64, N), ``classes`` (names), ``mean`` and
``std`` (per channel, of the prepared training images; the model's first operation uses them).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from .errors import DataError, ParamError

# md5 of the *uncompressed* originals. torchvision verifies only the .gz archives it downloads;
# a root that holds just the uncompressed files (as torchvision's MNIST accepts) is checked here.
RAW_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    },
}

TORCHVISION_CLASS = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "cifar10": datasets.CIFAR10,
}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_files(dataset: str, root: Path) -> list[Path]:
    """The files torchvision reads for `dataset` under `root`."""
    cls = TORCHVISION_CLASS[dataset]
    if dataset == "cifar10":
        folder = root / cls.base_folder
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [folder / name for name in names]
    folder = root / cls.__name__ / "raw"
    return [folder / os.path.basename(url).removesuffix(".gz") for url, _ in cls.resources]


def checksum_mismatches(dataset: str, root: Path) -> list[str]:
    """Names of the files whose checksums do not match the originals (empty: all verified)."""
    cls = TORCHVISION_CLASS[dataset]
    bad = []
    if dataset == "cifar10":
        folder = root / cls.base_folder
        meta = (cls.meta["filename"], cls.meta["md5"])
        for name, md5 in cls.train_list + cls.test_list + [meta]:
            if not check_integrity(str(folder / name), md5):
                bad.append(name)
        return bad
    folder = root / cls.__name__ / "raw"
    for url, gz_md5 in cls.resources:
        gz_name = os.path.basename(url)
        name = gz_name.removesuffix(".gz")
        if check_integrity(str(folder / gz_name), gz_md5):
            continue  # the archive torchvision verifies is there and matches
        if RAW_MD5.get(dataset, {}).get(name) != _md5(folder / name):
            bad.append(name)
    return bad


def _ensure_files(dataset: str, root: Path, download: bool) -> None:
    missing = [p for p in expected_files(dataset, root) if not p.is_file()]
    if not missing:
        return
    where = ", ".join(str(p) for p in missing)
    if not download:
        raise DataError(
            f"{dataset}: files missing under data.root = {str(root)!r}: {where}. Put torchvision's "
            f"files there (or set data.download: true on a machine with internet)."
        )
    try:
        TORCHVISION_CLASS[dataset](str(root), train=True, download=True)
        TORCHVISION_CLASS[dataset](str(root), train=False, download=True)
    except Exception as err:  # network errors come in many types; say what to do instead
        raise DataError(
            f"{dataset}: download into {str(root)!r} failed ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:300]}). "
            f"Offline, put torchvision's files there yourself: {where}"
        ) from err


class _UncheckedCIFAR10(datasets.CIFAR10):
    """CIFAR-10 from a copy whose checksums were already compared and the mismatch accepted."""

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(p) for p in expected_files("cifar10", Path(self.root)))

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def _read(dataset: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    if dataset == "cifar10":
        ds = _UncheckedCIFAR10(str(root), train=train, download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(ds.targets, dtype=torch.int64)
    else:
        ds = TORCHVISION_CLASS[dataset](str(root), train=train, download=False)
        images = ds.data.unsqueeze(1).contiguous()
        labels = ds.targets.to(torch.int64)
    return images, labels, list(ds.classes)


def balanced_order(
    labels: torch.Tensor, size: int | None, num_classes: int, generator: torch.Generator, key: str
) -> torch.Tensor:
    """Indices of a seeded, class-balanced subset of `size` (all when None), in seeded order.

    Each class gets size // num_classes images, the first size % num_classes classes one more.
    """
    if size is None:
        return torch.randperm(len(labels), generator=generator)
    if size > len(labels):
        raise ParamError(key, size, f"at most the split's {len(labels)} images")
    picked = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        want = size // num_classes + (1 if c < size % num_classes else 0)
        if want > len(members):
            raise ParamError(key, size, f"a size whose share of class {c} is <= {len(members)}")
        picked.append(members[torch.randperm(len(members), generator=generator)[:want]])
    chosen = torch.cat(picked)
    return chosen[torch.randperm(len(chosen), generator=generator)]


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (computed in float64)."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(dim=1).float(), x.std(dim=1).float()


def prepare(
    dataset: str,
    root: str | Path,
    download: bool,
    accept_checksum_mismatch: list[str],
    train_size: int | None,
    test_size: int | None,
    seed: int,
    run: str = "run",
) -> tuple[dict, dict, dict]:
    """Read (or download) a dataset and return (train split, test split, report for data.json)."""
    root = Path(root)
    _ensure_files(dataset, root, download)
    mismatches = checksum_mismatches(dataset, root)
    if mismatches and dataset not in accept_checksum_mismatch:
        raise DataError(
            f"{dataset}: checksums differ from the originals for {mismatches} under "
            f"{str(root)!r}. If this is a re-packed or reconstructed copy, accept it explicitly "
            f"with data.accept_checksum_mismatch: [{dataset}] (results will say it is unverified)."
        )
    generator = torch.Generator().manual_seed(seed)
    splits, report = {}, {"dataset": dataset, "root": str(root)}
    for split, size in (("train", train_size), ("test", test_size)):
        images, labels, classes = _read(dataset, root, train=split == "train")
        order = balanced_order(labels, size, len(classes), generator, f"runs.{run}.{split}_size")
        images, labels = images[order].contiguous(), labels[order].contiguous()
        splits[split] = {"images": images, "labels": labels, "classes": classes}
        report[f"{split}_size"] = len(labels)
        report[f"{split}_class_counts"] = torch.bincount(labels, minlength=len(classes)).tolist()
    mean, std = channel_stats(splits["train"]["images"])
    for split in splits.values():
        split["mean"], split["std"] = mean, std
    report.update(
        checksums_verified=not mismatches,
        checksum_mismatches=mismatches,
        classes=splits["train"]["classes"],
        image_shape=list(splits["train"]["images"].shape[1:]),
        mean=[round(v, 6) for v in mean.tolist()],
        std=[round(v, 6) for v in std.tolist()],
    )
    return splits["train"], splits["test"], report
