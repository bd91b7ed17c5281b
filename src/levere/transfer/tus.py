"""The tus 1.0.0 resumable upload protocol: its headers, parsed and formatted (no I/O, no database).

levere implements the core protocol and the creation, creation-with-upload, termination, checksum
and expiration extensions (https://tus.io/protocols/resumable-upload), plus one header of its own,
``Levere-Checksum: md5=<hex>,sha256=<hex>``: whole-file checksums the client computed while reading,
which the server compares with its own when the last byte arrives (and sends back on completion).
That header and the ``Upload-Metadata`` keys are spelled in :mod:`levere.transfer.wire`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from levere.domain.errors import ValidationFailed

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
#: a PATCH carrying Upload-Checksum is held in memory until it is verified, so it is kept small
MAX_CHECKSUMMED_PATCH = 64 * 1024 * 1024


class VersionUnsupported(Exception):
    """The request names another tus version (answered with 412 and the version we speak)."""


def base_headers() -> dict[str, str]:
    return {"Tus-Resumable": VERSION}


def options_headers() -> dict[str, str]:
    return {
        "Tus-Resumable": VERSION,
        "Tus-Version": VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def check_version(headers: Mapping[str, str]) -> None:
    if headers.get("tus-resumable") != VERSION:
        raise VersionUnsupported(headers.get("tus-resumable", ""))


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def int_header(headers: Mapping[str, str], name: str) -> int:
    raw = headers.get(name)
    if raw is None:
        raise ValidationFailed({name: "is missing"})
    if not raw.strip().isdigit():
        raise ValidationFailed({name: f"{raw!r} is not a non-negative whole number"})
    return int(raw.strip())


@dataclass(frozen=True)
class RequestChecksum:
    """``Upload-Checksum``: the checksum of one request's bytes (tus checksum extension)."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, header: str) -> RequestChecksum:
        algorithm, _, encoded = header.strip().partition(" ")
        algorithm = algorithm.lower()
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise ChecksumAlgorithmUnsupported(algorithm)
        try:
            digest = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise ValidationFailed({"Upload-Checksum": "the checksum is not base64"}) from None
        return cls(algorithm, digest)

    def matches(self, chunks: list[bytes]) -> bool:
        h: Any = hashlib.new(self.algorithm)
        for chunk in chunks:
            h.update(chunk)
        return bool(h.digest() == self.digest)


class ChecksumAlgorithmUnsupported(Exception):
    """Answered with 400 and the algorithms we support, as the checksum extension asks."""
