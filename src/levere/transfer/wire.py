"""levere's own words on the wire, shared by the client and the service: the ``Levere-Checksum``
header, the keys of a tus upload's ``Upload-Metadata``, and the PAX records a tar batch carries
per file.

Design notes
------------
* This module imports nothing but the standard library and the domain's errors, so the
  command-line client uses it without pulling in the server.
* Each format has its writer and its reader here, side by side: what the client formats is what
  the service parses, and the reverse for headers the service sends.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from levere.domain.errors import ValidationFailed

# --- Levere-Checksum ----------------------------------------------------------------------------

#: whole-file checksums: the client's on the last PATCH of a tus upload, the service's on its
#: answer and on every download
CHECKSUM_HEADER = "Levere-Checksum"
#: the id of the transfer grant a request belongs to (services/transfer_grants.py)
GRANT_HEADER = "Levere-Grant"
CHECKSUM_ALGORITHMS = ("md5", "sha256")
#: a secure-zone download (a Crypt4GH file made for the reader's key): the checksums of the
#: plaintext it decrypts to, which the reader checks after decrypting
PLAINTEXT_CHECKSUM_HEADER = "Levere-Plaintext-Checksum"
_HEX = {"md5": re.compile(r"^[0-9a-f]{32}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}


def format_checksums(md5: str | None, sha256: str) -> str:
    """``md5=<hex>,sha256=<hex>``, or ``sha256=<hex>`` alone where the MD5 was not computed."""
    return f"md5={md5},sha256={sha256}" if md5 else f"sha256={sha256}"


def check_hex(algorithm: str, value: str, field: str) -> str:
    """``value`` as a lower-case hex digest of ``algorithm``; refused for ``field`` if it is not one."""
    value = value.strip().lower()
    if not _HEX[algorithm].match(value):
        raise ValidationFailed({field: f"{value!r} is not a hexadecimal {algorithm.upper()}"})
    return value


def parse_checksums(value: str) -> dict[str, str]:
    """``md5=<hex>,sha256=<hex>`` (either or both) -> ``{"md5": ..., "sha256": ...}``, lower case;
    an unknown name or a digest that is not hex is refused."""
    found: dict[str, str] = {}
    for part in value.split(","):
        name, _, digest = part.strip().partition("=")
        name = name.strip().lower()
        if name not in _HEX:
            raise ValidationFailed({CHECKSUM_HEADER: f"unknown checksum {name!r} (use md5= and sha256=)"})
        found[name] = check_hex(name, digest, CHECKSUM_HEADER)
    return found


# --- tus Upload-Metadata ------------------------------------------------------------------------

#: the project's identifier, the delivery's name and the file's path in it (all required)
META_PROJECT = "project"
META_DELIVERY = "delivery"
META_PATH = "path"
#: the checksums the run's checksum file lists for the file, where it lists them (optional)
META_MD5 = "md5"
META_SHA256 = "sha256"
META_REQUIRED = (META_PROJECT, META_DELIVERY, META_PATH)
#: what the file is: absent for a plain file; ``crypt4gh`` for a Crypt4GH file encrypted by the
#: client to the shared disk's public key (whose ``md5``/``sha256`` are then the file's as sent)
META_FORMAT = "format"
FORMAT_CRYPT4GH = "crypt4gh"
#: the first bytes of every Crypt4GH file
CRYPT4GH_MAGIC = b"crypt4gh"
#: the name ending of a run's file the facility encrypted itself (``x.fastq.gz.c4gh``): on a
#: shared disk it is sent as ``format crypt4gh``, and the run's checksum file's entry for the name
#: without it (the plaintext's MD5) covers it
CRYPT4GH_SUFFIX = ".c4gh"


def encode_metadata(values: Mapping[str, str]) -> str:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def parse_metadata(header: str) -> dict[str, str]:
    """The pairs of an ``Upload-Metadata`` header (values UTF-8 here); a repeated or empty key or
    a value that is not base64 of UTF-8 text is refused."""
    found: dict[str, str] = {}
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, encoded = pair.partition(" ")
        if not key or key in found:
            raise ValidationFailed({"Upload-Metadata": f"key {key!r} is empty or repeated"})
        try:
            found[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValidationFailed(
                {"Upload-Metadata": f"the value of {key!r} is not base64 of UTF-8 text"}
            ) from None
    return found


# --- PAX records of a tar batch -------------------------------------------------------------------

#: a member's expected checksums, as the run's checksum file (MD5) and the client (SHA-256) give them
PAX_MD5 = "LEVERE.md5"
PAX_SHA256 = "LEVERE.sha256"
