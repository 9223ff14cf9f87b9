"""The prepared splits (method.md, notation), drawn from the raw splits with one seeded generator:
the **selection split**, a class-balanced set carved out of the raw training split first and never
trained on (the scan, targeting, labels, magnitudes and gains use it); the **train split**, drawn
from what the selection left; the **test split**, from the raw test split, for evaluation only.
A prepared split is a dict ``images`` (uint8, N x C x H x W), ``labels`` (int64, N), ``index``
(int64, N: each image's position in the raw split it came from, so the splits' disjointness can
be checked), ``classes`` (names), ``mean`` and ``std`` (per channel, of the train split's images;
the model's first operation uses them). And the scan set S, the first `scan.samples` images of
the selection split, defined here once.
"""

from __future__ import annotations

import torch

from ..running.config import check_scan_samples
from ..running.errors import ParamError

MIN_TRAIN_PER_CLASS = 10  # the selection split must leave the train split this many per class


def balanced_order(
    labels: torch.Tensor,
    size: int | None,
    num_classes: int,
    generator: torch.Generator,
    key: str,
    pool: str = "the split",
) -> torch.Tensor:
    """Indices of a seeded, class-balanced subset of `size` (all when None), in seeded order.

    Each class gets size // num_classes images, the first size % num_classes classes one more.
    A size the labels cannot give is a ParamError naming `key` and `pool` (what the labels are).
    """
    if size is None:
        return torch.randperm(len(labels), generator=generator)
    if size > len(labels):
        raise ParamError(key, size, f"at most the {len(labels)} images of {pool}")
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


def draw_splits(
    train_raw: tuple[torch.Tensor, torch.Tensor],
    test_raw: tuple[torch.Tensor, torch.Tensor],
    classes: list[str],
    selection_size: int,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    run: str = "run",
) -> dict[str, dict]:
    """The train, selection and test splits of the raw (images, labels) of the training and test
    splits. One generator seeded with `seed` draws, in this order: the selection split,
    `selection_size` class-balanced images of the raw training split; the train split,
    `train_size` class-balanced images (all when None) of the raw training images the selection
    left; the test split, `test_size` of the raw test split (all when None). A size the data
    cannot give is a ParamError naming its key under `runs.<run>`."""
    images, labels = train_raw
    test_images, test_labels = test_raw
    generator = torch.Generator().manual_seed(seed)
    key = f"runs.{run}"
    selection = balanced_order(
        labels,
        selection_size,
        len(classes),
        generator,
        f"{key}.selection_size",
        "the raw training split",
    )
    left = torch.ones(len(labels), dtype=torch.bool)
    left[selection] = False
    rest = torch.nonzero(left).flatten()  # the raw training images the selection left, in order
    remaining = torch.bincount(labels[rest], minlength=len(classes))
    if remaining.min() < MIN_TRAIN_PER_CLASS:
        c = int(remaining.argmin())
        raise ParamError(
            f"{key}.selection_size",
            selection_size,
            f"a size that leaves at least {MIN_TRAIN_PER_CLASS} images of every class to train on "
            f"(class {c} would keep {int(remaining[c])} of the raw training split's "
            f"{int((labels == c).sum())})",
        )
    train = rest[
        balanced_order(
            labels[rest],
            train_size,
            len(classes),
            generator,
            f"{key}.train_size",
            f"the raw training split left after the {len(selection)} images of the selection "
            f"split ({key}.selection_size)",
        )
    ]
    test = balanced_order(
        test_labels, test_size, len(classes), generator, f"{key}.test_size", "the raw test split"
    )
    splits = {}
    for split, order, (split_images, split_labels) in (
        ("train", train, (images, labels)),
        ("selection", selection, (images, labels)),
        ("test", test, (test_images, test_labels)),
    ):
        splits[split] = {
            "images": split_images[order].contiguous(),
            "labels": split_labels[order].contiguous(),
            "index": order.to(torch.int64).contiguous(),
            "classes": classes,
        }
    mean, std = channel_stats(splits["train"]["images"])
    for split in splits.values():
        split["mean"], split["std"] = mean, std
    return splits


def scan_set(selection: dict, samples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan set S: the images and labels of the first `samples` images of the selection split
    (all when None). More than the split holds is a ParamError naming scan.samples."""
    check_scan_samples(samples, len(selection["labels"]))
    return selection["images"][:samples], selection["labels"][:samples]


def halves(samples: int) -> tuple[slice, slice]:
    """The two halves of the scan set S (method.md section 3): its first samples // 2 images
    and the rest, each in S's seeded order. Split-half reliabilities (phi's, psi's, X^ref's)
    are computed on these; with one image the first half is empty."""
    half = samples // 2
    return slice(0, half), slice(half, samples)
