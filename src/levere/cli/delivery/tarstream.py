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
:mod:`levere.cli.delivery.hashing`) from that one read, and collected with their headers into
pieces that are joined and handed to the socket every ``flush_bytes``: memory stays at one buffer
(and the bytes joined from it) whatever the number of files.

Speed: a batch is thousands of 4 KiB files, so the Python work per member matters as much as the
system calls (open, read, close) and the hash. A member's two headers are one ``%`` format of a
template whose fixed fields are written once: only the name, size, mtime, records and checksums
vary, and a checksum is the precomputed sum of the fixed bytes plus that of the varying ones. A PAX
record's length is computed rather than searched for, and is a constant for a hex digest. A file
is read with one ``read`` of one byte more than its scanned size: a shorter answer from a regular
file is its end, so a second ``read`` to see the end is only needed when the first came back short.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from levere.cli.delivery.hashing import Checksums
from levere.cli.delivery.scan import LocalFile
from levere.domain.errors import LevereError
from levere.transfer import wire

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_MAX_OCTAL_SIZE = 8**11 - 1
_ZEROS = bytes(BLOCK)
_PAX_NAME = b"././@PaxHeader"
#: mode 0644, owner and group 0
_MODE_OWNER_GROUP = b"0000644\x000000000\x000000000\x00"
#: an empty link name, the "ustar" magic and version 00, empty owner names, devices and prefix
_AFTER_TYPEFLAG = bytes(100) + b"ustar\x0000" + bytes(BLOCK - 265)
#: the checksum of a header counts its own field as eight spaces
_FIXED_SUM = sum(_MODE_OWNER_GROUP) + sum(b" " * 8) + sum(_AFTER_TYPEFLAG)
#: name, its padding, size and mtime fields, checksum, type flag
_USTAR = b"%s%s" + _MODE_OWNER_GROUP + b"%s%06o\x00 %s" + _AFTER_TYPEFLAG
#: a member's PAX header (size and mtime fields, checksum), records and their padding, then its
#: ustar header (name and padding, size and mtime fields, checksum)
_MEMBER = (
    _PAX_NAME + bytes(100 - len(_PAX_NAME)) + _MODE_OWNER_GROUP + b"%s%s%06o\x00 x" + _AFTER_TYPEFLAG
    + b"%s%s"
    + b"%s%s" + _MODE_OWNER_GROUP + b"%s%s%06o\x00 0" + _AFTER_TYPEFLAG
)  # fmt: skip
_PAX_HEADER_SUM = _FIXED_SUM + sum(_PAX_NAME) + ord("x")
_FILE_HEADER_SUM = _FIXED_SUM + ord("0")


class FileChanged(LevereError):
    """A file changed between the scan and the moment it was read."""


class Sent(NamedTuple):
    """What was computed for one member while streaming it (a tuple: one is made per file)."""

    path: str
    size: int
    checksums: Checksums


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _record_length(n: int) -> int:
    # a record's length counts its own digits; adding them can carry into one more digit (98 bytes
    # of payload make a record of 101), never two
    return n + len(str(n + len(str(n))))


def pax_record(key: str, value: str) -> bytes:
    payload = f" {key}={value}\n".encode()
    return b"%d%s" % (_record_length(len(payload)), payload)


#: the records of hex digests have a known length: "47 LEVERE.md5=<32 hex>\n", "82 LEVERE.sha256=<64 hex>\n"
_MD5_RECORD = len(pax_record(wire.PAX_MD5, "0" * 32))
_SHA256_RECORD = len(pax_record(wire.PAX_SHA256, "0" * 64))
_MD5_KEY = f"{_MD5_RECORD} {wire.PAX_MD5}="
_SHA256_KEY = f"{_SHA256_RECORD} {wire.PAX_SHA256}="


def _fits_ustar_name(path: str) -> bool:
    return path.isascii() and len(path) <= 100


def pax_records(path: str, md5: str | None, sha256: str) -> bytes:
    records = b"" if _fits_ustar_name(path) else pax_record("path", path)
    if md5:
        known = len(md5) == 32 and md5.isascii()  # a hex digest, as nearly always
        records += f"{_MD5_KEY}{md5}\n".encode() if known else pax_record(wire.PAX_MD5, md5)
    known = len(sha256) == 64 and sha256.isascii()
    return records + (f"{_SHA256_KEY}{sha256}\n".encode() if known else pax_record(wire.PAX_SHA256, sha256))


def ustar_header(name: bytes, size: int, mtime: int, typeflag: bytes) -> bytes:
    """One 512-byte ustar header (mode 0644, owner 0:0); ``name`` is at most 100 bytes."""
    if not 0 <= mtime <= _MAX_OCTAL_SIZE:
        mtime = max(0, min(mtime, _MAX_OCTAL_SIZE))
    numbers = b"%011o\x00%011o\x00" % (size, mtime)
    checksum = _FIXED_SUM + sum(name) + sum(numbers) + sum(typeflag)
    return _USTAR % (name, _ZEROS[len(name) : 100], numbers, checksum, typeflag)


def member_header(path: str, size: int, mtime: int, md5: str | None, sha256: str) -> bytes:
    """The PAX header, its records and the ustar header of one regular-file member.

    The same bytes as ``ustar_header(b"././@PaxHeader", len(records), mtime, b"x") + records +
    padding + ustar_header(name, size, mtime, b"0")``, made in one format: the two headers share
    the mtime field, and one format instead of two and a join makes a member's header a quarter
    cheaper.
    """
    if size > _MAX_OCTAL_SIZE:
        raise LevereError(f"{path} is too large for a batch; send it on its own")
    records = pax_records(path, md5, sha256)
    name = path.encode() if _fits_ustar_name(path) else path.encode("ascii", "replace")[:100]
    n = len(records)
    if not 0 <= mtime <= _MAX_OCTAL_SIZE:
        mtime = max(0, min(mtime, _MAX_OCTAL_SIZE))
    mtime_field = b"%011o\x00" % mtime
    mtime_sum = sum(mtime_field)
    records_field = b"%011o\x00" % n
    size_field = b"%011o\x00" % size
    return _MEMBER % (
        records_field,
        mtime_field,
        _PAX_HEADER_SUM + sum(records_field) + mtime_sum,
        records,
        _ZEROS[: -n % BLOCK],
        name,
        _ZEROS[len(name) : 100],
        size_field,
        mtime_field,
        _FILE_HEADER_SUM + sum(name) + sum(size_field) + mtime_sum,
    )


def member_size(path: str, size: int, with_md5: bool) -> int:
    """Bytes a member takes in the stream, counting its digests' records as hex digests' (32 and 64)."""
    records = _SHA256_RECORD + (_MD5_RECORD if with_md5 else 0)
    if not _fits_ustar_name(path):
        records += _record_length(len(" path=\n") + len(path.encode()))
    return 2 * BLOCK + _padded(records) + _padded(size)


def archive_size(files: list[LocalFile], expected_md5: Callable[[str], str | None]) -> int:
    """The exact length of :func:`stream` over ``files`` with the same ``expected_md5``."""
    return sum(member_size(f.path, f.size, bool(expected_md5(f.path))) for f in files) + len(END_OF_ARCHIVE)


def read_small(file: LocalFile) -> bytes:
    """The whole content of a small file, or :class:`FileChanged` if its size is not the scanned one."""
    try:
        fd = os.open(file.source, os.O_RDONLY)
    except OSError as exc:
        raise FileChanged(f"cannot read {file.path}: {exc.strerror}") from None
    size = file.size
    try:
        data = os.read(fd, size + 1)
        if len(data) < size:  # short: the file shrank, or the file system answers in pieces
            chunks = [data]
            got = len(data)
            while got <= size:
                chunk = os.read(fd, size + 1 - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) != size:
        raise FileChanged(
            f"{file.path} changed while it was being delivered (it had {size} bytes): run the command again"
        )
    return data


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
    # pieces are joined once per flush: one copy of each byte instead of two through a bytearray
    parts: list[bytes] = []
    pending = 0
    sha256_of = hashlib.sha256
    for file in files:
        path, size = file.path, file.size
        data = read_small(file)
        sha256 = sha256_of(data).hexdigest()
        header = member_header(path, size, file.mtime, expected_md5(path), expected_sha256(path) or sha256)
        parts.append(header)
        parts.append(data)
        pad = -size % BLOCK
        if pad:
            parts.append(_ZEROS[:pad])
        on_member(Sent(path, size, Checksums(None, sha256)))
        pending += len(header) + size + pad
        if pending >= flush_bytes:
            yield b"".join(parts)
            parts.clear()
            pending = 0
    parts.append(END_OF_ARCHIVE)
    yield b"".join(parts)
