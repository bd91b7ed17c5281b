"""Byte sizes as people write them ("500G", "1.5 TiB") and as people read them; counts of things."""

from __future__ import annotations

import re
from fractions import Fraction

from levere.domain.errors import ValidationFailed

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
    "p": 1024**5, "pb": 1000**5, "pib": 1024**5,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


#: the largest size a database column holds (signed 64-bit)
MAX_SIZE = 2**63 - 1


def parse_size(text: str | int, field: str = "size") -> int:
    """Bytes from ``text``; whole bytes are exact however large (no detour through float)."""
    if isinstance(text, bool):
        raise ValidationFailed({field: f"{text!r} is not a size (examples: 500G, 2TiB, 1048576)"})
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            raise ValidationFailed({field: f"{text!r} is not a size (examples: 500G, 2TiB, 1048576)"})
        value = int(Fraction(match.group(1)) * _UNITS[unit])
    if value < 0:
        raise ValidationFailed({field: "must not be negative"})
    if value > MAX_SIZE:
        raise ValidationFailed({field: f"{text!r} is too large (at most {format_size(MAX_SIZE)})"})
    return value


def format_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def count(n: int, noun: str, plural: str = "") -> str:
    """``n`` things in words: "1 file", "2,048 files" (``plural`` where adding an s is wrong)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
