"""HTTP byte ranges (RFC 9110 section 14) for downloads that resume.

Only a single range is served: that is what download managers and ``curl -C -`` ask for, and a
multipart/byteranges answer would only complicate checksum verification on the client. A request
for several ranges gets the whole file (200), which the RFC allows.
"""

from __future__ import annotations

from dataclasses import dataclass


class RangeNotSatisfiable(Exception):
    """Answered with 416 and ``Content-Range: bytes */size``."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to send, or ``None`` for the whole file (no header, several ranges, or a header
    this parser does not understand, which the RFC says to ignore)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - n), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # invalid: ignored, as the RFC says
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, end)
