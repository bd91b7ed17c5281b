"""Opening a FASTQ stream: plain or gzip, told apart by the magic bytes, never by a file name.

Design notes: the stream may not be seekable (a decrypting stream is not), so the bytes read to
recognise the compression are replayed in front of the rest. gzip is inflated by python-isal in a thread
of its own (the inflating runs without the GIL), so decompression and parsing share the two cores, as
the established QC tools do. Nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import IO, Any

from isal import igzip_threaded

GZIP_MAGIC = b"\x1f\x8b"
#: how much is read from the caller's stream at a time
READ_SIZE = 1 << 20


class _Replay(io.RawIOBase):
    """The bytes already read from ``stream`` (``head``), then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            return int(readinto(view) or 0)
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


class TailWatch(io.RawIOBase):
    """Passes a stream through and remembers whether it ended, and on which byte: a FASTQ stream
    that ends without a line end has been cut off."""

    def __init__(self, stream: io.BufferedReader[Any]) -> None:
        self._stream = stream
        self.ended = False
        self.last_byte = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self._stream.readinto(buffer)
        if size:
            self.last_byte = bytes(memoryview(buffer)[size - 1 : size])
        else:
            self.ended = True
        return size

    def cut_off(self) -> bool:
        """Whether the stream has been read to its end, and that end lies inside a line."""
        return self.ended and self.last_byte not in (b"", b"\n")


def _read_head(stream: IO[bytes], size: int) -> bytes:
    """The first ``size`` bytes (fewer only at the end of the stream): a raw stream may return less."""
    head = b""
    while len(head) < size:
        more = stream.read(size - len(head))
        if not more:
            break
        head += more
    return head


@contextlib.contextmanager
def open_fastq(stream: IO[bytes]) -> Iterator[tuple[io.BufferedReader[Any], str]]:
    """The stream's FASTQ bytes and its compression (``"gzip"`` or ``"none"``)."""
    head = _read_head(stream, len(GZIP_MAGIC))
    buffered: io.BufferedReader[Any] = io.BufferedReader(_Replay(head, stream), READ_SIZE)
    if head != GZIP_MAGIC:
        yield buffered, "none"
        return
    inflated: io.BufferedReader[Any] = igzip_threaded.open(  # type: ignore[no-untyped-call]
        buffered, "rb", threads=1, block_size=READ_SIZE
    )
    try:
        yield inflated, "gzip"
    finally:
        # the inflating thread may have stopped on damaged data: closing reports that error again,
        # and the one already raised is the one that counts
        with contextlib.suppress(Exception):
            inflated.close()
