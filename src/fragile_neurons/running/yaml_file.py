"""params.yaml read safely, before any value is built: bounded in size, depth and the values its
aliases expand to, as YAML 1.2 (the way DVC reads it), so that a hostile file is one line
(a ParamError naming it) rather than a hang or gigabytes of memory. The schema that judges its
values is `config`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ParamError, file_kind

# params.yaml is small (a few kB, a few hundred values): larger text, deeper nesting, or aliases
# that expand it beyond MAX_YAML_VALUES are refused before any value is built, since a few hundred
# bytes of nested aliases can expand to gigabytes (a "billion laughs"). DVC parses the file
# itself too, and expands its aliases, before any stage runs (docs/guide.md: "What is trusted").
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 100_000


def _structure(text: str, source: str) -> None:
    """Refuse, from the parser's events alone (nothing is built, each alias costs one step):
    nesting deeper than MAX_YAML_DEPTH, and more than MAX_YAML_VALUES values (scalars and
    collections) once every alias (`*name`) is expanded to what its anchor (`&name`) holds."""
    from ruamel.yaml import YAML
    from ruamel.yaml.events import (
        AliasEvent,
        CollectionEndEvent,
        CollectionStartEvent,
        ScalarEvent,
    )

    total, open_, sizes = 0, [], {}  # values so far; (anchor, total before) of open collections
    for event in YAML(typ="safe", pure=True).parse(text):
        if isinstance(event, AliasEvent):
            total += sizes.get(event.anchor, 1)
        elif isinstance(event, ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, CollectionStartEvent):
            open_.append((event.anchor, total))
            total += 1
            if len(open_) > MAX_YAML_DEPTH:
                raise ParamError(
                    source, "<nested too deep>", f"YAML nested at most {MAX_YAML_DEPTH} levels"
                )
        elif isinstance(event, CollectionEndEvent):
            anchor, before = open_.pop()
            if anchor is not None:
                sizes[anchor] = total - before
        if total > MAX_YAML_VALUES:
            line = event.start_mark.line + 1 if event.start_mark is not None else "?"
            raise ParamError(
                source,
                f"<more than {MAX_YAML_VALUES} values by line {line}>",
                f"YAML of at most {MAX_YAML_VALUES} values once its aliases (*name) are "
                "expanded (DVC expands them too, before any stage runs)",
            )


def parse_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parse YAML exactly as DVC does (ruamel.yaml's safe loader, YAML 1.2), so the stages and
    `dvc exp run -S` agree on every value: `1e-3` is a number, `yes` a string. Unparsable text,
    text over MAX_YAML_BYTES, deep nesting or aliases that expand beyond MAX_YAML_VALUES is a
    ParamError naming `source` (and the place), found before any value is built."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise ParamError(
            source, f"<{size} bytes>", f"a YAML file of at most {MAX_YAML_BYTES} bytes"
        )
    try:
        _structure(text, source)
        return YAML(typ="safe").load(text)
    except ValueError as err:  # a scalar ruamel cannot convert, e.g. an int of 5000 digits
        if isinstance(err, ParamError):
            raise
        raise ParamError(source, "<not valid YAML>", f"valid YAML; {err}") from None
    except RecursionError:
        raise ParamError(source, "<nested too deep>", "valid YAML of little depth") from None
    except YAMLError as err:
        where = ""
        if isinstance(err, MarkedYAMLError) and err.problem_mark is not None:
            mark = err.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ParamError(source, "<not valid YAML>", f"valid YAML; {problem}{where}") from None


def read_yaml(path: str | Path) -> Any:
    """:func:`parse_yaml` of a file; a missing or unreadable file is a ParamError naming it, and
    so is one over MAX_YAML_BYTES (read no further than that), and anything but a regular file
    (a FIFO, a device, a socket, a folder: refused before it is opened, so a FIFO cannot hang
    the check and /dev/zero is not read)."""
    import os
    import stat

    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; what was opened is then judged
        # by its own metadata (no window between a check and the open)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ParamError(str(path), "<unreadable>", f"a readable YAML file ({err})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ParamError(
                str(path), f"<{file_kind(mode)}>", "a regular file of YAML (not a pipe or device)"
            )
        try:
            os.set_blocking(fd, True)
            blob = f.read(MAX_YAML_BYTES + 1)
            if len(blob) > MAX_YAML_BYTES:
                size = os.fstat(fd).st_size
                raise ParamError(
                    str(path), f"<{size} bytes>", f"a YAML file of at most {MAX_YAML_BYTES} bytes"
                )
            text = blob.decode("utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ParamError(str(path), "<unreadable>", f"a readable YAML file ({err})") from None
    return parse_yaml(text, str(path))
