"""How numbers are written for people: in figure titles and legends, and in the report's tables.
A missing or undefined value (None, NaN) is written 'n/a'."""

from __future__ import annotations

import math


def _missing(value: float | None) -> bool:
    return value is None or not math.isfinite(value)


def fixed(value: float | None, digits: int = 2) -> str:
    """0.123 -> '0.12'."""
    return "n/a" if _missing(value) else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    """0.123 -> '+0.12'."""
    return "n/a" if _missing(value) else f"{value:+.{digits}f}"


def p_value(value: float | None) -> str:
    """Two significant digits: 0.0123 -> '0.012'."""
    return "n/a" if _missing(value) else f"{value:.2g}"
