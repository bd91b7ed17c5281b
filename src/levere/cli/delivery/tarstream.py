"""A tar stream of many small files, generated as it is sent: nothing is built in memory or on disk.

Design notes
------------
Each member is a PAX extended header (the path when it does not fit the ustar name field, the
file's ``LEVERE.sha256`` and, where the checksum file lists one, its ``LEVERE.md5``) followed by a
ustar header and the data, so the service can verify every file before publishing it. The headers
are written here rather than with :mod:`tarfile` because their exact size must be known before
streaming: the request carries a ``Content-Length`` (the service reserves quota for it up front),
and the record lengths depend only on the path and on which fixed-length hex digests it carries,
not on their values.

Small files are read whole (they are below the batch threshold), hashed (SHA-256, see
:mod:`levere.cli.delivery.hashing`) from that one read and
appended to an output buffer that is handed to the socket every ``flush_bytes``: memory stays at one
file plus one buffer whatever the number of files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from levere.cli.delivery.hashing import Checksums
from levere.cli.delivery.scan import LocalFile
from levere.domain.errors import LevereError

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_MAX_OCTAL_SIZE = 8**11 - 1


class FileChanged(LevereError):
    """A file changed between the scan and the moment it was read."""


@dataclass(frozen=True)
class Sent:
    """What was computed for one member while streaming it."""

    path: str
    size: int
    checksums: Checksums


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def pax_record(key: str, value: str) -> bytes:
    payload = f" {key}={value}\n".encode()
    length = len(payload) + 1
    while length != len(payload) + len(str(length)):
        length = len(payload) + len(str(length))
    return str(length).encode() + payload


def _fits_ustar_name(path: str) -> bool:
    return path.isascii() and len(path) <= 100


def pax_records(path: str, md5: str | None, sha256: str) -> bytes:
    records = b"" if _fits_ustar_name(path) else pax_record("path", path)
    if md5:
        records += pax_record("LEVERE.md5", md5)
    return records + pax_record("LEVERE.sha256", sha256)


def ustar_header(name: bytes, size: int, mtime: int, typeflag: bytes) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % max(0, min(mtime, _MAX_OCTAL_SIZE))
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def member_header(path: str, size: int, mtime: int, md5: str | None, sha256: str) -> bytes:
    """The PAX header, its records and the ustar header of one regular-file member."""
    if size > _MAX_OCTAL_SIZE:
        raise LevereError(f"{path} is too large for a batch; send it on its own")
    records = pax_records(path, md5, sha256)
    name = path.encode() if _fits_ustar_name(path) else path.encode("ascii", "replace")[:100]
    extended = ustar_header(b"././@PaxHeader", len(records), mtime, b"x")
    return (
        extended
        + records
        + b"\0" * (_padded(len(records)) - len(records))
        + ustar_header(name, size, mtime, b"0")
    )


def member_size(path: str, size: int, with_md5: bool) -> int:
    """Bytes a member takes in the stream: computed with placeholder digests of the real length."""
    return (
        2 * BLOCK + _padded(len(pax_records(path, "0" * 32 if with_md5 else None, "0" * 64))) + _padded(size)
    )


def archive_size(files: list[LocalFile], expected_md5: Callable[[str], str | None]) -> int:
    """The exact length of :func:`stream` over ``files`` with the same ``expected_md5``."""
    return sum(member_size(f.path, f.size, bool(expected_md5(f.path))) for f in files) + len(END_OF_ARCHIVE)


def read_small(file: LocalFile) -> bytes:
    """The whole content of a small file, or :class:`FileChanged` if its size is not the scanned one."""
    try:
        fd = os.open(file.source, os.O_RDONLY)
    except OSError as exc:
        raise FileChanged(f"cannot read {file.path}: {exc.strerror}") from None
    try:
        chunks: list[bytes] = []
        got = 0
        while True:
            chunk = os.read(fd, file.size + 1 - got if got <= file.size else 1)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if got > file.size:
                break
    finally:
        os.close(fd)
    if got != file.size:
        raise FileChanged(
            f"{file.path} changed while it was being delivered (it had {file.size} bytes): run the command again"
        )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def stream(
    files: list[LocalFile],
    expected_md5: Callable[[str], str | None],
    expected_sha256: Callable[[str], str | None],
    on_member: Callable[[Sent], None],
    flush_bytes: int = 1024 * 1024,
) -> Iterator[bytes]:
    """Yield the tar archive of ``files``; ``on_member`` hears each file's computed digests.

    The expected checksums put in each member are the checksum file's where it lists the file (so the
    service refuses a file that does not match it) and the SHA-256 computed here otherwise (so it
    refuses bytes damaged on the way).
    """
    out = bytearray()
    for file in files:
        data = read_small(file)
        sha256 = hashlib.sha256(data).hexdigest()
        out += member_header(
            file.path, file.size, file.mtime, expected_md5(file.path), expected_sha256(file.path) or sha256
        )
        out += data
        out += b"\0" * (_padded(file.size) - file.size)
        on_member(Sent(file.path, file.size, Checksums(None, sha256)))
        if len(out) >= flush_bytes:
            yield bytes(out)
            out.clear()
    out += END_OF_ARCHIVE
    yield bytes(out)
