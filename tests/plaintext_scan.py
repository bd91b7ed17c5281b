"""Looking for sensitive plaintext where it must not be: every stored byte, the database, the logs.

:func:`find_windows` answers whether any ``window``-byte stretch of a secret occurs in some data.
Every such stretch contains at least ``window // 8 - 1`` whole 8-byte blocks of the secret that
start at a multiple of 8, so it is enough to look up each 8-byte value of the data (at every
offset, numpy-vectorised) among the secret's aligned blocks, and then to check each hit exactly by
growing the common stretch to both sides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK = 8
_LOW = np.uint64((1 << 24) - 1)


@dataclass(frozen=True)
class Found:
    where: str
    offset: int
    length: int


def _blocks(secret: bytes) -> tuple[np.ndarray, dict[int, list[int]]]:
    usable = len(secret) // BLOCK * BLOCK
    values = np.frombuffer(secret[:usable], dtype="<u8")
    at: dict[int, list[int]] = defaultdict(list)
    for index, value in enumerate(values.tolist()):
        at[value].append(index * BLOCK)
    return np.unique(values), at


def _common(data: bytes, offset: int, secret: bytes, start: int) -> tuple[int, int]:
    """How far the stretch shared by ``data`` at ``offset`` and ``secret`` at ``start`` reaches to
    the left and to the right."""
    left = 0
    while offset - left > 0 and start - left > 0 and data[offset - left - 1] == secret[start - left - 1]:
        left += 1
    right = 0
    while (
        offset + right < len(data)
        and start + right < len(secret)
        and data[offset + right] == secret[start + right]
    ):
        right += 1
    return left, right


def find_windows(data: bytes, secret: bytes, window: int = 32, where: str = "") -> list[Found]:
    """Every place where at least ``window`` bytes of ``secret`` occur in ``data`` (one per stretch)."""
    assert window >= 2 * BLOCK, "the window must hold at least one aligned block"
    if len(data) < window or len(secret) < window:
        return []
    unique, at = _blocks(secret)
    sieve = np.zeros(_LOW + 1, dtype=bool)
    sieve[unique & _LOW] = True
    found: list[Found] = []
    covered = -1
    for phase in range(BLOCK):
        usable = (len(data) - phase) // BLOCK * BLOCK
        if usable <= 0:
            continue
        values = np.frombuffer(data[phase : phase + usable], dtype="<u8")
        # a cheap first sieve on the low 24 bits, then an exact look-up of what passes it
        maybe = np.nonzero(sieve[values & _LOW])[0]
        where_in = np.minimum(np.searchsorted(unique, values[maybe]), len(unique) - 1)
        hits = maybe[unique[where_in] == values[maybe]]
        for hit in hits.tolist():
            offset = phase + hit * BLOCK
            if offset <= covered:
                continue
            for start in at[int(values[hit])]:
                left, right = _common(data, offset, secret, start)
                if left + right >= window:
                    found.append(Found(where, offset - left, left + right))
                    covered = offset + right
                    break
    return found


def scan_paths(paths: Iterable[Path], secret: bytes, window: int = 32) -> list[Found]:
    """:func:`find_windows` over every regular file under ``paths`` (files read whole: keep them test-sized)."""
    found: list[Found] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            found.extend(find_windows(path.read_bytes(), secret, window, where=str(path)))
    return found
