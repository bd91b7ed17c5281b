"""Streaming Crypt4GH bodies: encrypt plaintext while hashing it, decrypt with plaintext in memory.

A body is a run of independent segments: each 64 KiB of plaintext (the last one shorter) becomes a
12-byte random nonce, the ChaCha20-Poly1305 ciphertext and its 16-byte tag. An empty plaintext has
an empty body.

Design notes (measurements in docs/benchmarks.md):

- Both cores: the AEAD of ``cryptography`` (OpenSSL) holds the GIL during a call, PyNaCl's releases
  it; but OpenSSL's ChaCha20-Poly1305 is much cheaper per byte than libsodium's, and ``hashlib``
  releases the GIL while it hashes. So MD5 (the slowest step, and serial by nature) runs
  in a thread of its own, SHA-256 in another, and the calling thread reads, encrypts and writes:
  three steps on two cores, none waiting for the GIL for long.
- Encryption alone (``checksums=False``, for a caller that has the plaintext's checksums already)
  stays in the calling thread: two threads encrypting alternate segments with PyNaCl would spend
  more CPU in all than one thread with OpenSSL's cipher, and a thread that only writes saved no
  time on a busy machine while it cost CPU; the second core is left to the reading and writing the
  kernel does.
- Constant memory: plaintext moves in chunks of 16 segments through a fixed set of buffers, each
  back in the free list once both hashes and the encryption are done with it.
- Hash threads are told to stop in every outcome (a failing source or sink included), so no thread
  outlives the call.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag

from levere.crypt4gh.header import DataKey, read_data_key, read_header
from levere.crypt4gh.keys import PrivateKey
from levere.domain.errors import CiphertextDamaged

SEGMENT = 64 * 1024
NONCE = 12
TAG = 16
CIPHER_SEGMENT = NONCE + SEGMENT + TAG
CHUNK_SEGMENTS = 16
_CHUNK = SEGMENT * CHUNK_SEGMENTS
_CIPHER_CHUNK = CIPHER_SEGMENT * CHUNK_SEGMENTS
#: chunk buffers in flight: enough for the hash threads to lag a little behind the encryption
_BUFFERS = 6


class Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


@dataclass(frozen=True)
class EncryptedBody:
    """What :func:`encrypt_stream` learnt on the way: the key and the plaintext's fingerprints."""

    data_key: DataKey
    plaintext_size: int
    body_size: int
    #: hex digests of the plaintext; None when encrypted with ``checksums=False``
    md5: str | None
    sha256: str | None


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


class BodyEncryptor:
    """Encrypt plaintext pushed in pieces of any size (an upload's request chunks) into a body
    written to ``sink``, hashing it on the way; :meth:`finish` writes the last segment and gives
    the result. Use it as a context manager, or call :meth:`finish` or :meth:`abort` in every case:
    they stop the hash threads. With ``checksums=False`` it only encrypts (no hash threads)."""

    def __init__(self, sink: Sink, data_key: DataKey | None = None, *, checksums: bool = True) -> None:
        self.data_key = data_key or DataKey.generate()
        self._cipher = self.data_key.cipher()
        self._sink = sink
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_BUFFERS):
            self._free.put(bytearray(_CHUNK))
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()
        self._hashers = (
            (
                _Hasher(hashlib.md5(usedforsecurity=False), self._release),
                _Hasher(hashlib.sha256(), self._release),
            )
            if checksums
            else ()
        )
        self._out = memoryview(bytearray(_CIPHER_CHUNK))
        self._buffer: bytearray | None = None
        self._filled = 0
        self._closed = False
        #: plaintext bytes taken and body bytes written so far
        self.plaintext_size = 0
        self.body_size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take the next piece of plaintext."""
        if self._closed:
            raise ValueError("this encryptor is finished")
        view = memoryview(data).cast("B")
        taken = 0
        while taken < len(view):
            buffer = self._current()
            size = min(_CHUNK - self._filled, len(view) - taken)
            buffer[self._filled : self._filled + size] = view[taken : taken + size]
            self._filled += size
            taken += size
            if self._filled == _CHUNK:
                self._encrypt_chunk()
        return taken

    def fill_from(self, source: BinaryIO) -> bool:
        """Read one chunk from ``source`` straight into the encryptor (no copy); False at its end."""
        buffer = self._current()
        got = _fill(source, memoryview(buffer)[self._filled :])
        self._filled += got
        if self._filled == _CHUNK:
            self._encrypt_chunk()
            return True
        return False

    def finish(self) -> EncryptedBody:
        try:
            if self._filled:
                self._encrypt_chunk()
        finally:
            self.abort()
        md5, sha256 = (h.hexdigest() for h in self._hashers) if self._hashers else (None, None)
        return EncryptedBody(self.data_key, self.plaintext_size, self.body_size, md5, sha256)

    def abort(self) -> None:
        """Stop the hash threads; what was written to the sink is the caller's to discard."""
        if not self._closed:
            self._closed = True
            for hasher in self._hashers:
                hasher.close()
            # the hashers hold a bound method of this object (a cycle that only the garbage
            # collector breaks): let the buffers go now rather than then
            self._free = queue.SimpleQueue()
            self._buffer = None
            self._out = memoryview(b"")

    def __enter__(self) -> BodyEncryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def _current(self) -> bytearray:
        if self._buffer is None:
            self._buffer = self._free.get()
            self._filled = 0
        return self._buffer

    def _release(self, buffer: bytearray) -> None:
        with self._lock:
            self._users[id(buffer)] -= 1
            if self._users[id(buffer)] == 0:
                self._free.put(buffer)

    def _encrypt_chunk(self) -> None:
        buffer, size = self._current(), self._filled
        self._buffer, self._filled = None, 0
        with self._lock:
            self._users[id(buffer)] = len(self._hashers) + 1  # the hashes and the encryption below
        for hasher in self._hashers:
            hasher.feed(buffer, size)
        view, out = memoryview(buffer), self._out
        nonces = os.urandom(NONCE * CHUNK_SEGMENTS)  # one system call per chunk
        at = 0
        for number, start in enumerate(range(0, size, SEGMENT)):
            piece = view[start : min(start + SEGMENT, size)]
            nonce = nonces[number * NONCE : (number + 1) * NONCE]
            out[at : at + NONCE] = nonce
            end = at + NONCE + len(piece) + TAG
            self._cipher.encrypt_into(nonce, piece, None, out[at + NONCE : end])
            at = end
        self._release(buffer)
        self._sink.write(out[:at])
        self.plaintext_size += size
        self.body_size += at


def encrypt_stream(
    source: BinaryIO,
    sink: Sink,
    *,
    data_key: DataKey | None = None,
    progress: Callable[[int], None] | None = None,
    checksums: bool = True,
) -> EncryptedBody:
    """Encrypt everything ``source`` gives into a body written to ``sink``, computing the plaintext's
    MD5 and SHA-256 in the same pass (unless ``checksums`` is False). ``progress`` gets the plaintext
    bytes of each chunk done."""
    with BodyEncryptor(sink, data_key, checksums=checksums) as encryptor:
        while encryptor.fill_from(source):
            if progress is not None:
                progress(_CHUNK)
        done = encryptor.plaintext_size
        result = encryptor.finish()
    if progress is not None and result.plaintext_size > done:
        progress(result.plaintext_size - done)
    return result


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
        size = _fill(body, chunk)
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


class _PlaintextReader(io.RawIOBase):
    """A readable file over a body's plaintext, for parsers that want a file (gzip, FASTQ readers)."""

    def __init__(self, body: BinaryIO, data_key: DataKey) -> None:
        self._pieces = iter_plaintext(body, data_key)
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
    return io.BufferedReader(_PlaintextReader(source, read_data_key(header, private_key)), _CHUNK)


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


class _Hasher:
    """A hash fed in order from a queue by a thread of its own (hashlib releases the GIL)."""

    def __init__(self, digest: hashlib._Hash, release: Callable[[bytearray], None]) -> None:
        self._digest = digest
        self._release = release
        self._queue: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="crypt4gh-hash", daemon=True)
        self._thread.start()

    def feed(self, buffer: bytearray, size: int) -> None:
        self._queue.put((buffer, size))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            buffer, size = item
            self._digest.update(memoryview(buffer)[:size])
            self._release(buffer)


def _fill(source: BinaryIO, buffer: bytearray | memoryview) -> int:
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
