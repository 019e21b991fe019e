"""Memory sizes as people write them (``6G``, ``512M``, ``75%``) and as we print them.

Every multiple is binary (K = 1024), whether written ``6G``, ``6GB`` or ``6GiB``:
these are memory figures, and memory is counted in powers of two.
"""

from __future__ import annotations

import re
from decimal import Decimal

from orchestrator.errors import UsageError

__all__ = ["format_size", "parse_size"]

_MULTIPLIERS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# ASCII digits only: Decimal would also accept "1_000", "٣" or "NaN".
_NUMBER = r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SIZE = re.compile(
    rf"{_NUMBER}\s*(?:(?P<unit>[KMGT])(?:I?B)?|B)?", re.IGNORECASE | re.ASCII
)
_PERCENT = re.compile(rf"{_NUMBER}\s*%", re.ASCII)
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def parse_size(text: str, *, total: int | None = None) -> int:
    """The number of bytes ``text`` means, rounded down.

    ``text`` is a number of bytes (``1024``), a number with a binary unit (``6G``,
    ``1.5GiB``, ``512m``), or a percentage of ``total`` (``75%``), which is then required.
    """
    stripped = text.strip()
    if match := _SIZE.fullmatch(stripped):
        unit = (match["unit"] or "").upper()
        return int(Decimal(match["number"]) * _MULTIPLIERS[unit])
    if match := _PERCENT.fullmatch(stripped):
        if total is None:
            raise UsageError(
                f"invalid size {text!r}: a percentage needs a known total;"
                " give an absolute size such as 6G"
            )
        percent = Decimal(match["number"])
        if percent > 100:
            raise UsageError(f"invalid size {text!r}: a percentage cannot exceed 100%")
        return int(percent * total / 100)
    raise UsageError(
        f"invalid size {text!r}: use a number with K, M, G or T, or a percentage like 75%"
    )


def format_size(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``1.2 GiB``, ``-300.0 MiB``."""
    value = float(abs(n))
    sign = "-" if n < 0 else ""
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in _UNITS[1:-1]:
        value /= 1024
        # Move up a unit when rounding would print "1024.0 KiB".
        if round(value, 1) < 1024:
            return f"{sign}{value:.1f} {unit}"
    return f"{sign}{value / 1024:.1f} {_UNITS[-1]}"
