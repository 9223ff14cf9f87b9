"""The two errors a stage reports as one line on stderr with exit status 2 (see stage.py)."""

from __future__ import annotations

from typing import Any

# How deep and how wide `shown` looks into a value: a hostile params.yaml may hold a structure of
# millions of entries (a YAML alias expanded), whose full repr would take gigabytes.
_DEPTH, _ITEMS = 3, 8


def _bounded(value: Any, budget: int, depth: int) -> str:
    """A repr of `value` that stops once about `budget` characters are written."""
    if isinstance(value, dict | list | tuple):
        if depth >= _DEPTH:
            return "{...}" if isinstance(value, dict) else "[...]"
        left, right = (
            "{}" if isinstance(value, dict) else "()" if isinstance(value, tuple) else "[]"
        )
        items = list(value.items())[:_ITEMS] if isinstance(value, dict) else list(value[:_ITEMS])
        parts = []
        for item in items:
            if budget <= 0:
                break
            if isinstance(value, dict):
                text = f"{_bounded(item[0], budget, depth + 1)}: "
                text += _bounded(item[1], budget - len(text), depth + 1)
            else:
                text = _bounded(item, budget, depth + 1)
            parts.append(text)
            budget -= len(text) + 2
        more = ", ..." if len(value) > len(parts) else ""
        return left + ", ".join(parts) + more + right
    if isinstance(value, str) and len(value) > budget + 2:
        return repr(value[: budget + 2])[:-1] + "...'"
    try:
        return repr(value)
    except ValueError:  # int -> str conversion limit
        return "<an integer of thousands of digits>"


def shown(value: Any, limit: int = 200) -> str:
    """`repr(value)` on one line and at most `limit` characters. A hostile value may be huge (a
    long string, an integer of thousands of digits, a structure of millions of entries): only
    what fits is looked at, so showing it costs time and memory in proportion to `limit`."""
    text = _bounded(value, limit, 0)
    return text if len(text) <= limit else text[: limit - 5] + " ...>"


def refusal(key: Any, value: Any, allowed: str) -> str:
    """The one-line message of a refused setting, shared by the params check (ParamError) and
    the API (ValueError): `key = value is not allowed; expected <allowed>`. A key with a line
    break or other unprintable characters is shown as its repr."""
    name = key if isinstance(key, str) and key.isprintable() else shown(key)
    return f"{name} = {shown(value)} is not allowed; expected {allowed}"


class ParamError(ValueError):
    """A parameter that is missing, unknown or out of range. The message is one line:
    `params: <key> = <value> is not allowed; expected <allowed>` (see :func:`refusal`)."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        self.refusal = refusal(key, value, allowed)
        super().__init__(f"params: {self.refusal}")

    def __reduce__(self):
        """Pickled as its three parts, so that it crosses from a worker process (workers.py) as
        it was raised (an exception is otherwise rebuilt from its message alone)."""
        return type(self), (self.key, self.value, self.allowed)


class DataError(RuntimeError):
    """The data cannot be had: missing files without a download, or checksums that differ."""


def file_kind(mode: int) -> str:
    """What an `os.stat` mode says a path is, in words: 'a regular file', 'a folder', 'a FIFO
    (named pipe)', 'a character device', 'a block device', 'a socket'."""
    import stat

    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def not_regular(path: Any) -> str | None:
    """None for a regular file (or a link to one); else what stands at `path` instead, in words
    ('a FIFO (named pipe)', 'a character device', 'missing' ...). Only the path's metadata is
    read: a FIFO or a device is never opened, so nothing blocks on it or reads it forever."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    return None if stat.S_ISREG(mode) else file_kind(mode)
