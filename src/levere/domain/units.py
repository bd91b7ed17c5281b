"""Byte sizes as people write them ("500G", "1.5 TiB") and as people read them; counts of things.

The meanings are those of coreutils (``df -h``, ``truncate -s``): a suffix with ``B`` after an SI
prefix (kB, MB, GB, TB, PB) counts in powers of 1000; an IEC suffix (KiB, MiB, GiB, TiB, PiB) and a
bare letter (K, M, G, T, P) count in powers of 1024; ``B`` alone is bytes. So ``50GB`` is 50·10^9
bytes and ``50G`` and ``50GiB`` are 50·2^30.

A bare number is bytes, but a bare number below :data:`MIN_BARE` is refused: nobody asks for a
50-byte quota, and ``50`` almost always means a forgotten unit. ``50B`` says "bytes" on purpose.
"""

from __future__ import annotations

import re
from fractions import Fraction

from levere.domain.errors import ValidationFailed

KiB = 1024
MiB = 1024**2

_UNITS = {
    "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
    "p": 1024**5, "pb": 1000**5, "pib": 1024**5,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

#: the largest size a database column holds (signed 64-bit)
MAX_SIZE = 2**63 - 1
#: the smallest size accepted without a unit (1 MiB); below it a unit, or ``B`` for bytes, is needed
MIN_BARE = MiB
#: one sentence for every ``--help`` and error that takes a size
SIZE_HELP = (
    "G and GiB count in powers of 1024, so 50G is 50 x 1024^3 bytes; GB counts in powers of 1000; B is bytes"
)
EXAMPLES = "examples: 500G, 2TiB, 1.5T, 800GB, 1048576B"


def parse_size(text: str | int, field: str = "size") -> int:
    """Bytes from ``text``; whole bytes are exact however large (no detour through float).

    An ``int`` is taken as bytes as it is (the API's JSON numbers); a string follows the rules of
    the module's notes, and errors name ``field`` (a flag, a file key or a JSON field)."""
    if isinstance(text, bool):
        raise ValidationFailed({field: f"{text!r} is not a size ({EXAMPLES})"})
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        unit = match.group(2).lower() if match else ""
        if not match or (unit and unit not in _UNITS):
            raise ValidationFailed({field: f"{text!r} is not a size ({EXAMPLES})"})
        number = Fraction(match.group(1))
        if not unit and number != 0 and number < MIN_BARE:
            plain = match.group(1)
            raise ValidationFailed(
                {field: f"{plain!r} has no unit: did you mean {plain}G? write {plain}B for bytes"}
            )
        if unit in ("", "b") and number.denominator != 1:
            raise ValidationFailed({field: f"{text.strip()!r} is not a whole number of bytes"})
        value = int(number * _UNITS.get(unit, 1))
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
