"""Streaming Crypt4GH bodies: their sizes, decryption with plaintext in memory, encrypted uploads.

A body is a run of independent segments: each 64 KiB of plaintext (the last one shorter) becomes a
12-byte random nonce, the ChaCha20-Poly1305 ciphertext and its 16-byte tag. An empty plaintext has
an empty body.

Encryption while streaming is in :mod:`.encryptor` (with :mod:`.segment_worker`, its helper
process); this module holds the format's sizes, decryption with plaintext in memory only, and the
acceptance of a file uploaded already encrypted. Memory stays constant: bodies move a chunk of 16
segments at a time.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag

from levere.crypt4gh.header import DataKey, read_data_key, read_header
from levere.crypt4gh.keys import PrivateKey
from levere.crypt4gh.segment_worker import CHUNK as _CHUNK
from levere.crypt4gh.segment_worker import CIPHER_CHUNK as _CIPHER_CHUNK
from levere.crypt4gh.segment_worker import CIPHER_SEGMENT, NONCE, SEGMENT, TAG
from levere.domain.errors import CiphertextDamaged


class Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


def body_size(plaintext_size: int) -> int:
    """The size of the body of a plaintext of this size."""
    full, rest = divmod(plaintext_size, SEGMENT)
    return full * CIPHER_SEGMENT + (rest + NONCE + TAG if rest else 0)


def plaintext_size(body_bytes: int) -> int:
    """The plaintext size of a body of this size; ValueError if no body has that size."""
    full, rest = divmod(body_bytes, CIPHER_SEGMENT)
    if rest and rest <= NONCE + TAG:
        raise ValueError(f"{body_bytes} bytes is not the size of a Crypt4GH body")
    return full * SEGMENT + (rest - NONCE - TAG if rest else 0)


def iter_plaintext(body: BinaryIO, data_key: DataKey) -> Iterator[bytes]:
    """The plaintext of a body, a chunk (up to 1 MiB) at a time, each segment authenticated before
    its bytes are given out. Raises :class:`CiphertextDamaged` on a changed or cut-short body."""
    cipher = data_key.cipher()
    chunk = bytearray(_CIPHER_CHUNK)
    view = memoryview(chunk)
    plain = bytearray(_CHUNK)
    plain_view = memoryview(plain)
    segment_number = 0
    while True:
        size = fill(body, chunk)
        if size == 0:
            return
        at = produced = 0
        while at < size:
            end = min(at + CIPHER_SEGMENT, size)
            if end - at <= NONCE + TAG:
                raise CiphertextDamaged(
                    "this Crypt4GH body is cut short (its last segment is too small)",
                    segment=segment_number,
                )
            piece_size = end - at - NONCE - TAG
            try:
                cipher.decrypt_into(
                    view[at : at + NONCE],
                    view[at + NONCE : end],
                    None,
                    plain_view[produced : produced + piece_size],
                )
            except InvalidTag:
                raise CiphertextDamaged(
                    "this Crypt4GH body is damaged: a segment fails its authentication",
                    segment=segment_number,
                ) from None
            produced += piece_size
            at = end
            segment_number += 1
        yield bytes(plain_view[:produced])
        if size < _CIPHER_CHUNK:
            return


class PiecesReader(io.RawIOBase):
    """A readable file over an iterator of byte pieces (a stored body, a response, a plaintext), for
    readers that want a file (gzip, FASTQ parsers, the header reader)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        size = min(len(buffer), len(self._pending))
        memoryview(buffer).cast("B")[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def open_plaintext(source: BinaryIO, private_key: PrivateKey) -> io.BufferedReader:
    """A Crypt4GH file (header then body) as a readable file of its plaintext, decrypted as it is
    read, in memory only; each segment is authenticated before its bytes are given out."""
    header = read_header(source)
    return io.BufferedReader(PiecesReader(iter_plaintext(source, read_data_key(header, private_key))), _CHUNK)


def decrypt_body(body: BinaryIO, data_key: DataKey, sink: Sink) -> int:
    """Decrypt a body into ``sink``; returns the plaintext's size."""
    total = 0
    for piece in iter_plaintext(body, data_key):
        sink.write(piece)
        total += len(piece)
    return total


def decrypt_file(source: BinaryIO, private_key: PrivateKey, sink: Sink) -> int:
    """Decrypt a whole Crypt4GH file (header then body, as ``crypt4gh decrypt`` reads it)."""
    header = read_header(source)
    return decrypt_body(source, read_data_key(header, private_key), sink)


@dataclass(frozen=True)
class AcceptedUpload:
    """An upload already in Crypt4GH: its header apart, and what checking its body learnt."""

    header: bytes
    data_key: DataKey
    plaintext_size: int
    body_size: int
    md5: str
    sha256: str


def accept_encrypted(source: BinaryIO, private_key: PrivateKey, body_sink: Sink) -> AcceptedUpload:
    """Take a file uploaded already encrypted to ``private_key``'s public key: split off its header
    (returned, for the database), copy the body as it is to ``body_sink``, and on the way open every
    segment to check it and to hash the plaintext (kept in memory only).

    Raises :class:`NotCrypt4GH`, :class:`EncryptedToAnotherKey` (both before a byte reaches the sink)
    or :class:`CiphertextDamaged`; the caller discards what the sink got in those cases.
    """
    header = read_header(source)
    data_key = read_data_key(header, private_key)
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    copied = _Counting(source, body_sink)
    size = 0
    for piece in iter_plaintext(copied, data_key):  # type: ignore[arg-type]
        md5.update(piece)
        sha256.update(piece)
        size += len(piece)
    return AcceptedUpload(header, data_key, size, copied.count, md5.hexdigest(), sha256.hexdigest())


class _Counting:
    """A reader that also copies what it reads to a sink (the body as it came)."""

    def __init__(self, source: BinaryIO, sink: Sink) -> None:
        self._source, self._sink, self.count = source, sink, 0

    def readinto(self, buffer: bytearray | memoryview) -> int:
        size = self._source.readinto(buffer)  # type: ignore[attr-defined]
        if size:
            self._sink.write(memoryview(buffer)[:size])
            self.count += size
        return int(size or 0)


def fill(source: BinaryIO, buffer: bytearray | memoryview) -> int:
    """Fill ``buffer`` from ``source`` unless it ends first (pipes and sockets give short reads)."""
    view = memoryview(buffer)
    filled = 0
    readinto = getattr(source, "readinto", None)
    while filled < len(buffer):
        if readinto is not None:
            got = readinto(view[filled:])
        else:
            data = source.read(len(buffer) - filled)
            got = len(data)
            view[filled : filled + got] = data
        if not got:
            break
        filled += got
    return filled
