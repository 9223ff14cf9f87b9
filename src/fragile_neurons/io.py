"""Writing outputs atomically and reading them back safely.

Every file a stage writes goes to a temporary file in the same folder first and is renamed into
place, so an interrupted stage never leaves a half-written output. Checkpoints are plain
dictionaries of tensors and names, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_with(path: str | Path, write: Callable[[Path], Any]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2) + "\n"
    write_with(path, lambda p: p.write_text(text))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | Path, frame) -> None:
    """A pandas DataFrame as CSV, floats to 6 significant digits (stable, readable diffs)."""
    write_with(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))


def save_figure(path: str | Path, fig) -> None:
    """A matplotlib figure as PNG, without version metadata, so equal plots give equal bytes."""
    import matplotlib.pyplot as plt

    write_with(path, lambda p: fig.savefig(p, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)


def save_tensors(path: str | Path, obj: dict) -> None:
    """torch.save, atomically. Same tensors give the same bytes: torch.save names the records of
    its zip archive after the file, so it writes to memory first, not to the temporary file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    write_with(path, lambda p: p.write_bytes(data))


def load_tensors(path: str | Path) -> dict:
    """torch.load restricted to tensors and plain containers (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)
