"""Where the work runs and how it is made repeatable: device choice and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else the CPU; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"params: device = {name!r} but no CUDA device is available; use 'auto'")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, make torch's kernels deterministic; return a CPU generator.

    With the same params and the same machine type, a stage rewrites identical bytes.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
