"""Encrypting a Crypt4GH body while streaming, with the plaintext's MD5 and SHA-256 in the same pass.

Design notes (measurements in docs/benchmarks.md):

- Both cores: the AEAD of ``cryptography`` (OpenSSL) holds the GIL during a call, PyNaCl's releases
  it but costs about three times the CPU per byte, and ``hashlib`` releases the GIL while it hashes.
  So MD5 (the slowest step, and serial by nature) runs in a thread of its own, SHA-256 in another,
  and past the first few MiB a helper process (:mod:`.segment_worker`) encrypts chunks in shared
  memory. The calling thread then reads, and a writing thread waits for each chunk's ciphertext
  and writes it: reading and writing are system calls that release the GIL, so they run beside
  each other and beside the helper. The calling thread encrypts a chunk itself only when the helper
  has four in hand already. Small bodies are encrypted in the calling thread alone, as a helper
  costs a process's start.
- The body does not depend on who encrypted which chunk: chunks are written in order, each segment
  with a random nonce of its own. If the helper stops, what it had in hand is encrypted again here.
- Constant memory: plaintext moves in chunks of 16 segments through a fixed set of buffers (or the
  helper's slots), each back in the free list once both hashes and the writing are done with it.
- The hash threads, the writing thread and the helper are told to stop in every outcome (a failing
  source or sink included), so none outlives the call.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from levere.crypt4gh.body import Sink, fill
from levere.crypt4gh.header import DataKey
from levere.crypt4gh.segment_worker import CHUNK, CIPHER_CHUNK, HelperFailed, SegmentWorker, encrypt_segments

#: plaintext chunks in flight before the helper serves: enough for the hash threads to lag a little
_BUFFERS = 6
#: plaintext encrypted in the calling thread before a helper process starts (smaller bodies never
#: start one)
HELPER_AFTER = 8 * CHUNK
#: the helper's slots of shared memory (each a chunk of plaintext and room for its ciphertext)
_HELPER_SLOTS = 8
#: chunks the helper may have in hand before the calling thread encrypts one itself
_HELPER_AHEAD = 4


@dataclass(frozen=True)
class EncryptedBody:
    """What :func:`encrypt_stream` learnt on the way: the key and the plaintext's fingerprints."""

    data_key: DataKey
    plaintext_size: int
    body_size: int
    #: hex digests of the plaintext; None when encrypted with ``checksums=False``
    md5: str | None
    sha256: str | None


class _Slot:
    """A chunk buffer: plaintext, and its own room for ciphertext in the helper's shared memory
    (``index`` names the helper's slot) or none (``index`` None, before the helper serves)."""

    __slots__ = ("body", "index", "out", "plain", "size", "users", "with_helper")

    def __init__(self, plain: memoryview, out: memoryview | None = None, index: int | None = None) -> None:
        self.plain, self.out, self.index = plain, out, index
        self.users = 0  # the hashes and the writing still to be done with it
        self.size = 0  # plaintext bytes in it
        self.body = 0  # ciphertext bytes in ``out``, once encrypted
        self.with_helper = False


class BodyEncryptor:
    """Encrypt plaintext pushed in pieces of any size (an upload's request chunks) into a body
    written to ``sink``, hashing it on the way; :meth:`finish` writes the last segment and gives
    the result. Use it as a context manager, or call :meth:`finish` or :meth:`abort` in every case:
    they stop the threads and the helper process. With ``checksums=False`` it only encrypts (no
    hash threads).

    With ``helper=True`` (the default), once the plaintext passes :data:`HELPER_AFTER` bytes a
    helper process starts, and once it is up ``sink.write`` is called from a writing thread of the
    encryptor's own (one call at a time, in order); all writes are done when :meth:`finish`
    returns."""

    def __init__(
        self, sink: Sink, data_key: DataKey | None = None, *, checksums: bool = True, helper: bool = True
    ) -> None:
        self.data_key = data_key or DataKey.generate()
        self._cipher = self.data_key.cipher()
        self._sink = sink
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for _ in range(_BUFFERS):
            self._free.put(_Slot(memoryview(bytearray(CHUNK))))
        self._lock = threading.Lock()
        self._hashers = (
            (
                _Hasher(hashlib.md5(usedforsecurity=False), self._release),
                _Hasher(hashlib.sha256(), self._release),
            )
            if checksums
            else ()
        )
        self._out = memoryview(bytearray(CIPHER_CHUNK))
        self._slot: _Slot | None = None
        self._filled = 0
        self._closed = False
        self._helper_wanted = helper
        self._worker: SegmentWorker | None = None
        self._helper_lost = False  # set by the writing thread when the helper stopped
        self._shared = False  # chunks go through the helper's slots and the writing thread
        self._writer: _Writer | None = None
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
            plain = self._current().plain
            size = min(CHUNK - self._filled, len(view) - taken)
            plain[self._filled : self._filled + size] = view[taken : taken + size]
            self._filled += size
            taken += size
            if self._filled == CHUNK:
                self._encrypt_chunk()
        return taken

    def fill_from(self, source: BinaryIO) -> bool:
        """Read one chunk from ``source`` straight into the encryptor (no copy); False at its end."""
        plain = self._current().plain
        got = fill(source, plain[self._filled :])
        self._filled += got
        if self._filled == CHUNK:
            self._encrypt_chunk()
            return True
        return False

    def finish(self) -> EncryptedBody:
        try:
            if self._filled:
                self._encrypt_chunk()
            if self._writer is not None:
                self._writer.finish()
        finally:
            self.abort()
        md5, sha256 = (h.hexdigest() for h in self._hashers) if self._hashers else (None, None)
        return EncryptedBody(self.data_key, self.plaintext_size, self.body_size, md5, sha256)

    def abort(self) -> None:
        """Stop the threads and the helper; what was written to the sink is the caller's to
        discard."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.stop()
        finally:
            for hasher in self._hashers:
                hasher.close()
            if self._worker is not None:
                self._worker.close()
            # the threads hold bound methods of this object (a cycle that only the garbage
            # collector breaks): let the buffers go now rather than then
            self._free = queue.SimpleQueue()
            self._slot = None
            self._out = memoryview(b"")

    def __enter__(self) -> BodyEncryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def _current(self) -> _Slot:
        if self._slot is None:
            self._slot = self._free.get()
            self._filled = 0
        return self._slot

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.users -= 1
            if slot.users == 0 and (slot.index is not None or not self._shared):
                self._free.put(slot)  # a local buffer is dropped once the helper's slots serve

    def _encrypt_chunk(self) -> None:
        slot, slot.size = self._current(), self._filled
        self._slot, self._filled = None, 0
        slot.users = len(self._hashers) + 1  # the hashes, and the writing
        for hasher in self._hashers:
            hasher.feed(slot)
        self.plaintext_size += slot.size
        if self._writer is None:  # before the helper serves: encrypt and write here and now
            at = encrypt_segments(self._cipher, slot.plain, slot.size, self._out)
            self._release(slot)
            self._sink.write(self._out[:at])
            self.body_size += at
            self._start_helper()
            return
        self._writer.check()
        worker = self._worker
        assert worker is not None and slot.index is not None and slot.out is not None
        slot.with_helper = False
        if not self._helper_lost and worker.pending < _HELPER_AHEAD:
            try:
                worker.submit(slot.index, slot.size)
                slot.with_helper = True
            except HelperFailed:
                self._helper_lost = True
        if not slot.with_helper:
            slot.body = encrypt_segments(self._cipher, slot.plain, slot.size, slot.out)
        self._writer.put(slot)

    def _start_helper(self) -> None:
        """Start the helper past the first chunks; hand its slots out once it is up."""
        if not self._helper_wanted or not sys.executable:
            return
        if self._worker is None:
            if self.plaintext_size >= HELPER_AFTER:
                try:
                    # through a pipe to the helper: the only way it can encrypt with the same key
                    self._worker = SegmentWorker(self.data_key._raw, _HELPER_SLOTS)
                except (OSError, HelperFailed):
                    self._helper_wanted = False  # this body is encrypted in this thread alone
            return
        try:
            self._worker.collect(wait=False)
        except HelperFailed:
            self._helper_wanted = False
            return
        if self._worker.ready:
            with self._lock:
                self._shared = True
                self._free = queue.SimpleQueue()
                for index, (plain, out) in enumerate(self._worker.slots):
                    self._free.put(_Slot(plain, out, index))
            self._writer = _Writer(self, self._worker)

    def _write(self, slot: _Slot) -> None:
        """In the writing thread: write a chunk's ciphertext, in body order."""
        assert slot.out is not None
        self._sink.write(slot.out[: slot.body])
        self.body_size += slot.body

    def _encrypt_here(self, slot: _Slot) -> None:
        """In the writing thread, once the helper stopped: encrypt a chunk it had in hand."""
        self._helper_lost = True
        assert slot.out is not None
        slot.body = encrypt_segments(self._cipher, slot.plain, slot.size, slot.out)


class _Writer:
    """The writing thread: takes the chunks in body order, waits for the helper's answer where the
    helper has one, and writes them. After a failed write it writes nothing more, but still
    releases each chunk, so that the calling thread never waits for a buffer; the error is raised
    in the calling thread at its next chunk, or by :meth:`finish`."""

    def __init__(self, encryptor: BodyEncryptor, worker: SegmentWorker) -> None:
        self._encryptor = encryptor
        self._worker = worker
        self._queue: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._skip = False
        self._thread = threading.Thread(target=self._run, name="crypt4gh-write", daemon=True)
        self._thread.start()

    def put(self, slot: _Slot) -> None:
        self._queue.put(slot)

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Wait until every chunk is written; raise what a write raised."""
        self._queue.put(None)
        self._thread.join()
        self.check()

    def stop(self) -> None:
        """Write nothing more and end the thread."""
        self._skip = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        encryptor = self._encryptor
        while (slot := self._queue.get()) is not None:
            try:
                if not self._skip:
                    if slot.with_helper:
                        self._answer(slot)
                    encryptor._write(slot)
            except BaseException as error:
                self._error, self._skip = error, True
            finally:
                encryptor._release(slot)

    def _answer(self, slot: _Slot) -> None:
        worker = self._worker
        try:
            while not worker.done:
                worker.collect(wait=True)
            index, slot.body = worker.done.popleft()
            if index != slot.index:
                raise HelperFailed("the encrypting helper process answered out of turn")
        except HelperFailed:
            worker.done.clear()
            self._encryptor._encrypt_here(slot)


class _Hasher:
    """A hash fed in order from a queue by a thread of its own (hashlib releases the GIL)."""

    def __init__(self, digest: hashlib._Hash, release: Callable[[_Slot], None]) -> None:
        self._digest = digest
        self._release = release
        self._queue: queue.SimpleQueue[tuple[memoryview, int, _Slot] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="crypt4gh-hash", daemon=True)
        self._thread.start()

    def feed(self, slot: _Slot) -> None:
        self._queue.put((slot.plain, slot.size, slot))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            plain, size, slot = item
            self._digest.update(plain[:size])
            self._release(slot)


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
                progress(CHUNK)
        done = encryptor.plaintext_size
        result = encryptor.finish()
    if progress is not None and result.plaintext_size > done:
        progress(result.plaintext_size - done)
    return result
