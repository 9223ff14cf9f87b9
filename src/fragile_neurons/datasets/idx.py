"""MNIST-family idx files, parsed with numpy after their headers are checked."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from ..running.errors import DataError


def idx_array(dataset: str, path: Path, blob: bytes, images: bool) -> np.ndarray:
    """An uncompressed idx file: images (magic 2051, n x 28 x 28) or labels (magic 2049, n)."""
    magic, dims = (2051, 3) if images else (2049, 1)
    header = 4 * (1 + dims)
    fields = struct.unpack(f">{1 + dims}I", blob[:header]) if len(blob) >= header else ()
    shape = tuple(fields[1:])
    if not (
        fields
        and fields[0] == magic
        and (not images or shape[1:] == (28, 28))
        and len(blob) == header + math.prod(shape)
    ):
        what = "images (magic 2051, n x 28 x 28)" if images else "labels (magic 2049, n)"
        raise DataError(
            f"{dataset}: {path} is not an idx file of {what} whose sizes match its {len(blob)} "
            f"bytes (header read: {list(fields)})."
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)
