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


def with_interval(
    value: float | None, low: float | None, high: float | None, digits: int = 3
) -> str:
    """-0.16, -0.26, -0.058 -> '-0.160 [-0.261, -0.058]'; the value alone without bounds."""
    if _missing(low) or _missing(high):
        return fixed(value, digits)
    return f"{fixed(value, digits)} [{fixed(low, digits)}, {fixed(high, digits)}]"
