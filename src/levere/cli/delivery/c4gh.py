"""Files of a run that the facility encrypted itself (``x.fastq.gz.c4gh``), as ``levere deliver
--disk`` sends them: recognised by name and magic, and their plaintext's size read from the layout.

Design notes
------------
* A ``.c4gh`` file on a shared disk goes with tus metadata ``format crypt4gh``: the service opens
  its header with the disk's key, stores the body as sent and records the PLAINTEXT's size and
  checksums. So the client compares what the service answers with the plaintext's: its size here,
  computed from the header's and the body's lengths (no key needed: every segment but the last
  holds 64 KiB of plaintext and 28 bytes of nonce and tag), and its MD5 from the run's checksum
  file's entry for the name without ``.c4gh`` (the sequencer wrote it over the plaintext).
* A ``.c4gh`` file that does not start with the Crypt4GH magic and version 1 is refused before
  anything is sent, rather than failing on the service half-way through a run.
"""

from __future__ import annotations

import struct
from dataclasses import replace

from levere.cli.delivery.checksums import ChecksumFile, Expected
from levere.cli.delivery.scan import FolderRefused, LocalFile
from levere.transfer import wire

SUFFIX = wire.CRYPT4GH_SUFFIX
SEGMENT = 65536
#: a segment's nonce (12 bytes) and MAC (16 bytes)
OVERHEAD = 28
_PREFIX = struct.Struct("<8sII")  # magic, version, header packet count


def plaintext_name(path: str) -> str:
    """The name the sequencer gave the file before it was encrypted (``x.fastq.gz.c4gh`` -> ``x.fastq.gz``)."""
    return path[: -len(SUFFIX)] if path.endswith(SUFFIX) else path


def plaintext_size(source: str, size: int) -> int | None:
    """The plaintext size of the Crypt4GH file at ``source`` (``size`` bytes), or None when it does
    not start with the magic and version 1 or its layout is cut short."""
    with open(source, "rb") as fh:
        prefix = fh.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            return None
        magic, version, packets = _PREFIX.unpack(prefix)
        if magic != wire.CRYPT4GH_MAGIC or version != 1:
            return None
        header = _PREFIX.size
        for _ in range(packets):
            fh.seek(header)
            length = fh.read(4)
            if len(length) < 4:
                return None
            (packet,) = struct.unpack("<I", length)
            if packet < 4:
                return None
            header += packet
    body = size - header
    if body < 0:
        return None
    segments = -(-body // (SEGMENT + OVERHEAD))
    plain = body - OVERHEAD * segments
    if plain < 0 or (segments and body - (segments - 1) * (SEGMENT + OVERHEAD) <= OVERHEAD):
        return None
    return plain


def encrypted_files(files: list[LocalFile]) -> dict[str, int]:
    """The ``.c4gh`` files of a run bound for a shared disk, each with its plaintext's size;
    refused, with nothing sent, when any of them is not a Crypt4GH file."""
    found: dict[str, int] = {}
    bad: list[str] = []
    for file in files:
        if not file.path.endswith(SUFFIX):
            continue
        try:
            size = plaintext_size(file.source, file.size)
        except OSError:
            size = None
        if size is None:
            bad.append(file.path)
        else:
            found[file.path] = size
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise FolderRefused(
            f"{shown} {'ends' if len(bad) == 1 else 'end'} in {SUFFIX} but {'is' if len(bad) == 1 else 'are'} "
            "not a Crypt4GH file (version 1), so nothing was sent: encrypt it with 'crypt4gh encrypt "
            "--recipient_pk' to the disk's key ('levere secure pubkey DISK'), or rename it"
        )
    return found


def apply_listing(
    listing: ChecksumFile, encrypted: dict[str, int], present: set[str]
) -> tuple[ChecksumFile, dict[str, Expected]]:
    """The run's checksum file as it applies to the delivered files, and its entries that name a
    Crypt4GH file itself.

    The sequencer wrote it over the plaintext, before the facility encrypted some files: its entry
    ``x.fastq.gz`` covers the delivered ``x.fastq.gz.c4gh`` (whose plaintext MD5 the service
    computes). An entry naming ``x.fastq.gz.c4gh`` itself holds the MD5 of the encrypted file as the
    facility has it: it is checked on arrival against the bytes sent, but the service does not keep
    those bytes (it replaces the header), so it does not cover the stored file.
    """
    entries = dict(listing.entries)
    sent: dict[str, Expected] = {}
    for path in encrypted:
        if path in entries:
            sent[path] = entries.pop(path)
        plain = plaintext_name(path)
        if plain not in present and plain in entries:
            entries[path] = entries.pop(plain)
    return replace(listing, entries=entries), sent
