"""MD5 and SHA-256 of the same bytes, computed in one pass."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Checksums:
    md5: str
    sha256: str

    def header(self) -> str:
        """As the ``Levere-Checksum`` header carries them."""
        return f"md5={self.md5},sha256={self.sha256}"


class Digests:
    """Both digests, fed the same buffers (hashlib releases the GIL on large ones, so threads overlap)."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> None:
        self.md5.update(data)
        self.sha256.update(data)

    def result(self) -> Checksums:
        return Checksums(self.md5.hexdigest(), self.sha256.hexdigest())


def parse_header(value: str | None) -> Checksums | None:
    """``md5=<hex>,sha256=<hex>`` as the service sends it, or ``None`` when absent or incomplete."""
    if not value:
        return None
    pairs = dict(part.strip().partition("=")[::2] for part in value.split(","))
    md5, sha256 = pairs.get("md5", "").lower(), pairs.get("sha256", "").lower()
    return Checksums(md5, sha256) if md5 and sha256 else None
