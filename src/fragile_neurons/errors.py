"""The two errors a stage reports as one line on stderr with exit status 2 (see stage.py)."""

from __future__ import annotations

from typing import Any


def shown(value: Any, limit: int = 200) -> str:
    """`repr(value)` on one line and at most `limit` characters (a hostile value may be huge, or
    an integer too long for repr)."""
    try:
        text = repr(value)
    except ValueError:  # int -> str conversion limit
        text = "<an integer of thousands of digits>"
    return text if len(text) <= limit else text[: limit - 5] + " ...>"


class ParamError(ValueError):
    """A parameter that is missing, unknown or out of range. The message is one line: a key
    with a line break or other unprintable characters is shown as its repr."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        name = key if isinstance(key, str) and key.isprintable() else shown(key)
        super().__init__(f"params: {name} = {shown(value)} is not allowed; expected {allowed}")


class DataError(RuntimeError):
    """The data cannot be had: missing files without a download, or checksums that differ."""
