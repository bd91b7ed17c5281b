"""A streaming reader of plain (uncompressed) tar archives, for batches of many small files.

Design notes
------------
The archive is read once, front to back, from a :class:`~levere.transfer.pipe.ByteSource`: there is
no seeking, nothing is staged, and only the current member's data is held (by the caller, if it
wants it whole). ustar, POSIX PAX (``x`` records for the next member, ``g`` global records) and GNU
long names (``L``) are understood; the PAX records of a member stay available to the caller, which
is how a client sends each file's expected checksums (``LEVERE.md5``, ``LEVERE.sha256``).
:mod:`tarfile` is not used because its stream mode reads in small records through several layers
and offers no clean way to tell a truncated body from a damaged one; this reader is small and does
exactly what the batch endpoint needs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal

from levere.domain.errors import ValidationFailed
from levere.transfer.pipe import ByteSource

BLOCK = 512
#: PAX records and GNU long names are metadata, read whole: refuse absurd ones
MAX_META = 1024 * 1024

Kind = Literal["file", "directory", "symlink", "hardlink", "other"]
_KINDS: dict[bytes, Kind] = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"5": "directory",
    b"2": "symlink",
    b"1": "hardlink",
}
#: entries that never carry data, whatever their size field says (links, devices, folders, FIFOs)
_NO_DATA = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})


class ArchiveTruncated(Exception):
    """The body ended inside the archive (``reason`` tells why, e.g. the client went away)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _broken(message: str) -> ValidationFailed:
    return ValidationFailed({"archive": message})


@dataclass
class Member:
    name: str
    kind: Kind
    size: int
    pax: dict[str, str] = field(default_factory=dict)


class _Reader:
    """Exact and partial reads over a source's buffers, counting the position."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._buf = memoryview(b"")
        self._pos = 0
        self.offset = 0

    def _fill(self) -> bool:
        while self._pos >= len(self._buf):
            nxt = self._source.next_buffer()
            if nxt is None:
                return False
            self._buf = memoryview(nxt).cast("B")
            self._pos = 0
        return True

    def read_some(self, n: int) -> memoryview:
        """Up to ``n`` bytes (fewer at a buffer boundary); empty at the end of the source."""
        if not self._fill():
            return memoryview(b"")
        piece = self._buf[self._pos : self._pos + n]
        self._pos += len(piece)
        self.offset += len(piece)
        return piece

    def read_exact(self, n: int) -> bytes:
        if self._fill() and len(self._buf) - self._pos >= n:
            piece = bytes(self._buf[self._pos : self._pos + n])
            self._pos += n
            self.offset += n
            return piece
        parts = []
        got = 0
        while got < n:
            some = self.read_some(n - got)
            if not some:
                break
            parts.append(bytes(some))
            got += len(some)
        return b"".join(parts)

    def buffered(self) -> memoryview:
        """The unread rest of the current buffer (or of the next one, when this one is used up),
        without consuming it; empty at the end of the source."""
        if not self._fill():
            return memoryview(b"")
        return self._buf[self._pos :]

    def skip(self, n: int) -> int:
        left = n
        while left:
            piece = self.read_some(left)
            if not piece:
                break
            left -= len(piece)
        return n - left

    def give_back(self) -> None:
        """Return the unread rest of the current buffer to the source (the archive has ended)."""
        if self._pos < len(self._buf):
            self._source.unread(self._buf[self._pos :])
        self._buf = memoryview(b"")
        self._pos = 0

    @property
    def interrupted(self) -> str | None:
        return self._source.interrupted


def _octal(field_: bytes, what: str) -> int:
    try:  # the usual form, digits then NULs or spaces: one step
        value = int(field_.rstrip(b"\0 "), 8)
    except ValueError:
        pass
    else:
        if value < 0:  # int() takes a sign; no header field has one
            raise _broken(f"the {what} field of a header is negative")
        return value
    if field_[:1] and field_[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        return int.from_bytes(field_[1:], "big") | ((field_[0] & 0x3F) << (8 * (len(field_) - 1)))
    text = field_.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise _broken(f"the {what} field of a header is not a number") from None


def _checksum_matches(block: bytes) -> bool:
    """Whether a header's checksum field agrees with its bytes (the sum of all 512, the field
    itself counted as eight spaces).

    Summing 512 bytes with ``sum()`` is slow next to the rest of a header's parsing, and a small
    file's member has two headers. The low half of zlib's Adler-32 is one plus the same sum modulo
    65,521 and costs a small fraction of that,
    so the sums are compared modulo 65,521: a header's sum is at most 130,560, and damage that
    changes it by exactly 65,521 or twice that gets through, as damage that swaps two bytes gets
    through the field itself."""
    stored = _octal(block[148:156], "checksum")
    counted = (zlib.adler32(block) & 0xFFFF) - 1 - sum(block[148:156]) + 8 * 32
    return (stored - counted) % 65521 == 0


def _cstr(raw: bytes) -> str:
    # A NUL-padded field; bytes after an inner NUL are kept (not silently cut off), so that the
    # path check refuses the name instead of storing a shortened one.
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise _broken("a PAX header record is malformed")
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise _broken("a PAX header record is malformed")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return records


class TarReader:
    """``next()`` gives each member's header; ``read()`` its data. Unread data is skipped."""

    def __init__(self, source: ByteSource) -> None:
        self._r = _Reader(source)
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0
        self._global: dict[str, str] = {}
        self.ended = False

    @property
    def offset(self) -> int:
        return self._r.offset

    def _truncated(self) -> ArchiveTruncated:
        why = self._r.interrupted or "the request body ended"
        return ArchiveTruncated(f"the archive is incomplete: {why} (at byte {self._r.offset})")

    def _finish_member(self) -> None:
        want = self._left + self._pad
        if want and self._r.skip(want) != want:
            raise self._truncated()
        self._left = self._pad = 0

    def _meta(self, size: int) -> bytes:
        if size > MAX_META:
            raise _broken(f"a metadata entry of {size} bytes is too large")
        data = self._r.read_exact(size)
        pad = -size % BLOCK
        if len(data) != size or self._r.skip(pad) != pad:
            raise self._truncated()
        return data

    def next(self) -> Member | None:
        """The next member's header, or ``None`` at the end of the archive."""
        if self.ended:
            return None
        self._finish_member()
        if (member := self._next_whole()) is not None:
            return member
        pax: dict[str, str] = {}
        long_name: str | None = None
        while True:
            start = self._r.offset
            block = self._r.read_exact(BLOCK)
            if not block and self._r.interrupted is None:
                self.ended = True  # a body without the end-of-archive blocks: accept it
                return None
            if len(block) != BLOCK:
                raise self._truncated()
            if block == bytes(BLOCK):
                self.ended = True
                self._r.skip(BLOCK)  # the second zero block, if the client sent it
                self._r.give_back()
                return None
            if not _checksum_matches(block):
                raise _broken(f"the tar header at byte {start} is damaged (checksum)")
            size = _octal(block[124:136], "size")
            flag = block[156:157]
            if flag == b"x":
                pax.update(_parse_pax(self._meta(size)))
                continue
            if flag == b"g":
                self._global.update(_parse_pax(self._meta(size)))
                continue
            if flag == b"L":
                long_name = _cstr(self._meta(size))
                continue
            if flag == b"K":
                self._meta(size)
                continue
            return self._member(
                block, flag, size, {**self._global, **pax} if self._global else pax, long_name
            )

    def _member(
        self, block: bytes, flag: bytes, size: int, records: dict[str, str], long_name: str | None
    ) -> Member:
        """The member a (non-metadata) header starts, with the records that apply to it."""
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\0" and block[345:346] != b"\0":
            name = f"{_cstr(block[345:500])}/{name}"
        name = records.get("path", long_name or name)
        if "size" in records:
            try:
                size = int(records["size"])
            except ValueError:
                raise _broken(f"the PAX size of {name!r} is not a number") from None
        if flag in _NO_DATA:
            size = 0
        self._left = size
        self._pad = -size % BLOCK
        return Member(name=name, kind=_KINDS.get(flag, "other"), size=size, pax=records)

    def _next_whole(self) -> Member | None:
        """The next member when it is the usual one of a batch, a regular file with its own PAX
        records, and both headers and the records lie in the current buffer: read from it
        without the general path's steps. None (having read nothing) for anything else."""
        if self._global:
            return None
        view = self._r.buffered()
        if len(view) < 3 * BLOCK:
            return None
        block = bytes(view[:BLOCK])
        if block[156:157] != b"x" or not _checksum_matches(block):
            return None
        size = _octal(block[124:136], "size")
        span = BLOCK + size + (-size % BLOCK)
        if size > MAX_META or len(view) < span + BLOCK:
            return None
        header = bytes(view[span : span + BLOCK])
        flag = header[156:157]
        if flag not in (b"0", b"\0") or not _checksum_matches(header):
            return None
        records = _parse_pax(bytes(view[BLOCK : BLOCK + size]))
        member = self._member(header, flag, _octal(header[124:136], "size"), records, None)
        self._r.skip(span + BLOCK)
        return member

    def read(self, n: int) -> memoryview:
        """Up to ``n`` bytes of the current member's data; empty once it is all read."""
        if self._left == 0:
            return memoryview(b"")
        piece = self._r.read_some(min(n, self._left))
        if not piece:
            raise self._truncated()
        self._left -= len(piece)
        return piece

    def read_all(self) -> bytes:
        """The whole data of the current member (callers use this for small members only)."""
        data = self._r.read_exact(self._left)
        if len(data) != self._left:
            raise self._truncated()
        self._left = 0
        return data
