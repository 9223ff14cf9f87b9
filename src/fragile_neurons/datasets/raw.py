"""A whole raw split (training or test) from its files' bytes: uint8 images N x C x H x W, int64
labels and the class names, through the safe parsers of `cifar` and `idx`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..running.errors import DataError
from .cifar import cifar_batch, cifar_classes
from .files import TORCHVISION_CLASS
from .idx import idx_array


def read_split(
    dataset: str, paths: dict[str, Path], blobs: dict[str, bytes], train: bool
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A whole split from the files' bytes: uint8 images N x C x H x W, int64 labels, classes."""
    cls = TORCHVISION_CLASS[dataset]
    if dataset == "cifar10":
        names = [name for name, _ in (cls.train_list if train else cls.test_list)]
        batches = [cifar_batch(paths[name], blobs[name]) for name in names]
        images = np.vstack([data for data, _ in batches]).reshape(-1, 3, 32, 32)
        labels = [label for _, batch_labels in batches for label in batch_labels]
        meta = cls.meta["filename"]
        classes = cifar_classes(paths[meta], blobs[meta])
        return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), classes
    prefix = "train" if train else "t10k"
    image_name, label_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images = idx_array(dataset, paths[image_name], blobs[image_name], images=True)
    labels = idx_array(dataset, paths[label_name], blobs[label_name], images=False)
    if len(labels) != len(images) or labels.max(initial=0) >= 10:
        raise DataError(
            f"{dataset}: {paths[label_name]} does not hold one label in 0..9 for each of the "
            f"{len(images)} images of {paths[image_name]}."
        )
    images = torch.from_numpy(images.reshape(-1, 1, 28, 28).copy())  # copy: own, writable memory
    labels = torch.from_numpy(labels.astype(np.int64))
    return images, labels, list(cls.classes)
