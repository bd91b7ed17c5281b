"""Checksums on the client: SHA-256 of what is sent, MD5 and SHA-256 of what is downloaded.

Design notes
------------
Uploads compute SHA-256 alone. The service computes MD5 and SHA-256 of every byte it stores and
refuses a file whose SHA-256 differs from the client's (or whose MD5 differs from the run's
checksum file); bytes with the same SHA-256 are the same bytes, so the service's MD5 is then the
file's MD5 as well. A second hash here would slow the machine that sends to a fraction of its
speed (MD5 is the slower of the two, several times slower than SHA-256 on CPUs with the SHA
extensions; docs/benchmarks.md) while it shares its cores with the network stack. Downloads compute both and compare both with the manifest.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from levere.domain.errors import ValidationFailed
from levere.transfer import wire


class Checksums(NamedTuple):
    """A file's digests (a tuple rather than a dataclass: batches make one per file, and a tuple is
    made in half the time)."""

    #: ``None`` where it was not computed (uploads)
    md5: str | None
    sha256: str

    def header(self) -> str:
        """As the ``Levere-Checksum`` header carries them."""
        return wire.format_checksums(self.md5, self.sha256)

    def agrees_with(self, other: Checksums) -> bool:
        """Same SHA-256, and the same MD5 where both sides know it."""
        return self.sha256 == other.sha256 and (
            self.md5 is None or other.md5 is None or self.md5 == other.md5
        )


class Sha256:
    """What an upload computes (see the module notes)."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)

    def result(self) -> Checksums:
        return Checksums(None, self.sha256.hexdigest())


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
    try:
        pairs = wire.parse_checksums(value)
    except ValidationFailed:
        return None
    md5, sha256 = pairs.get("md5", ""), pairs.get("sha256", "")
    return Checksums(md5, sha256) if md5 and sha256 else None
