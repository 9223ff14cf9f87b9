"""The scan set S (method.md, notation): the first `scan.samples` images of the selection split,
in its fixed, seeded order (all of it when `scan.samples` is null). Defined here once; the attack
stage crafts S's FGSM signs and its targeting on it, the scan stage drops neurons on it."""

from __future__ import annotations

import torch

from .errors import ParamError


def scan_set(selection: dict, samples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan set S: the images and labels of the first `samples` images of the selection split
    (all when None). More than the split holds is a ParamError naming scan.samples."""
    if samples is not None and samples > len(selection["labels"]):
        raise ParamError(
            "scan.samples",
            samples,
            f"at most the selection split's {len(selection['labels'])} images",
        )
    return selection["images"][:samples], selection["labels"][:samples]
