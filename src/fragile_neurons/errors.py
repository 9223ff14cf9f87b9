"""The two errors a stage reports as one line on stderr with exit status 2 (see stage.py)."""

from __future__ import annotations

from typing import Any


class ParamError(ValueError):
    """A parameter that is missing, unknown or out of range."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"params: {key} = {value!r} is not allowed; expected {allowed}")


class DataError(RuntimeError):
    """The data cannot be had: missing files without a download, or checksums that differ."""
