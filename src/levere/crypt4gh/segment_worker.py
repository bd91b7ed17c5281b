"""Encrypting a body's segments on the second core: a helper process fed through shared memory.

Design notes: ``cryptography``'s ChaCha20-Poly1305 holds the GIL during a call, so a second thread
cannot encrypt beside the first; the libsodium bindings that release it cost about three times the
CPU per byte. Segments are independent, so a helper process with the same cipher encrypts whole
chunks while the calling process reads, hashes and writes. The two share one anonymous memory file
(``memfd``) cut into slots, each a chunk of plaintext and room for its ciphertext; over a pipe the
caller names a slot and its size, and the helper answers with the slot and the ciphertext's size, in
the order asked. Nothing is copied between the processes and memory stays at the slots' size.

The helper runs this file as a program: it imports only the standard library and ``cryptography``
(not levere), so it starts quickly. It gets the data key through its standard input, never on its
command line, and ends when that input closes, so it never outlives the process that started it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
from collections import deque

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

SEGMENT = 64 * 1024
NONCE = 12
TAG = 16
CIPHER_SEGMENT = NONCE + SEGMENT + TAG
CHUNK_SEGMENTS = 16
CHUNK = SEGMENT * CHUNK_SEGMENTS
CIPHER_CHUNK = CIPHER_SEGMENT * CHUNK_SEGMENTS
#: one slot: a chunk of plaintext, then room for its ciphertext
SLOT = CHUNK + CIPHER_CHUNK
KEY_BYTES = 32
_MESSAGE = struct.Struct("<II")  # slot, size (plaintext size asked, ciphertext size answered)
_READY = _MESSAGE.pack(0xFFFF_FFFF, 0)


def encrypt_segments(
    cipher: ChaCha20Poly1305, plain: memoryview, size: int, out: memoryview, nonces: bytes | None = None
) -> int:
    """Encrypt the first ``size`` bytes of ``plain`` as Crypt4GH segments into ``out`` (each a
    random nonce, the ciphertext and its tag); returns the bytes written to ``out``."""
    if nonces is None:
        nonces = os.urandom(NONCE * CHUNK_SEGMENTS)  # one system call per chunk
    at = 0
    for number, start in enumerate(range(0, size, SEGMENT)):
        piece = plain[start : min(start + SEGMENT, size)]
        nonce = nonces[number * NONCE : (number + 1) * NONCE]
        out[at : at + NONCE] = nonce
        end = at + NONCE + len(piece) + TAG
        cipher.encrypt_into(nonce, piece, None, out[at + NONCE : end])
        at = end
    return at


class HelperFailed(RuntimeError):
    """The helper process stopped or answered out of turn."""


class SegmentWorker:
    """The caller's side of a helper process: ``slots`` slots of shared memory, and the chunks
    handed to the helper, answered in the order they were handed over.

    Starting it costs the caller only a process's spawning: the helper's interpreter starts while
    the caller goes on, and :attr:`ready` turns true once it can take work. :meth:`stop` ends the
    helper, :meth:`close` also frees the memory; call :meth:`close` in every case."""

    def __init__(self, key: bytes, slots: int) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a data key has 32 bytes")
        memory_fd = os.memfd_create("levere-crypt4gh", os.MFD_CLOEXEC)
        try:
            os.ftruncate(memory_fd, slots * SLOT)
            self._memory = mmap.mmap(memory_fd, slots * SLOT)
            self._process = subprocess.Popen(  # noqa: S603 (this interpreter, this file)
                [sys.executable, "-P", __file__, str(memory_fd), str(slots)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(memory_fd,),
                bufsize=0,
            )
        except BaseException:
            if hasattr(self, "_memory"):
                self._memory.close()
            raise
        finally:
            os.close(memory_fd)  # the mapping and the helper keep the memory alive
        view = memoryview(self._memory)
        #: each slot's plaintext and ciphertext areas
        self.slots = [
            (view[i * SLOT : i * SLOT + CHUNK], view[i * SLOT + CHUNK : (i + 1) * SLOT]) for i in range(slots)
        ]
        view.release()
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to = self._process.stdin.fileno()
        self._from = self._process.stdout.fileno()
        os.set_blocking(self._from, False)
        self._received = b""
        self._asked: deque[int] = deque()
        self.running = True
        self.ready = False
        #: answers not taken yet: (slot, ciphertext size), in the order asked
        self.done: deque[tuple[int, int]] = deque()
        try:
            _write_all(self._to, key)
        except OSError:
            self.stop()
            raise HelperFailed("the encrypting helper process did not start") from None

    @property
    def pending(self) -> int:
        """Chunks handed over and not answered yet."""
        return len(self._asked)

    def submit(self, slot: int, size: int) -> None:
        """Have the helper encrypt the first ``size`` bytes of the slot's plaintext."""
        self._asked.append(slot)
        try:
            _write_all(self._to, _MESSAGE.pack(slot, size))
        except OSError:
            raise HelperFailed("the encrypting helper process stopped") from None

    def collect(self, wait: bool) -> None:
        """Move the answers that have come to :attr:`done`. With ``wait``, first wait until
        there is one, or until the helper is :attr:`ready` if nothing is asked yet."""
        while True:
            try:
                more: bytes | None = os.read(self._from, 64 * _MESSAGE.size)
            except BlockingIOError:
                more = None
            if more == b"":
                raise HelperFailed("the encrypting helper process stopped")
            if more:
                self._received += more
                self._take_answers()
            if not wait or self.done or (self.ready and not self._asked):
                return
            if more is None:
                select.select([self._from], [], [])

    def unanswered(self) -> list[int]:
        """The slots asked and not answered, in order, forgotten (after :meth:`stop`)."""
        slots = list(self._asked)
        self._asked.clear()
        return slots

    def _take_answers(self) -> None:
        whole = len(self._received) - len(self._received) % _MESSAGE.size
        for at in range(0, whole, _MESSAGE.size):
            message = self._received[at : at + _MESSAGE.size]
            if message == _READY and not self.ready:
                self.ready = True
                continue
            slot, size = _MESSAGE.unpack(message)
            if not self._asked or self._asked[0] != slot:
                raise HelperFailed("the encrypting helper process answered out of turn")
            self._asked.popleft()
            self.done.append((slot, size))
        self._received = self._received[whole:]

    def stop(self) -> None:
        """End the helper: it stops at the end of its input, after the chunk in hand."""
        if not self.running:
            return
        self.running = False
        process = self._process
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def close(self) -> None:
        """:meth:`stop`, and free the shared memory (at once unless a view of it is still held
        elsewhere; then when the last one goes)."""
        self.stop()
        for plain, cipher in self.slots:
            plain.release()
            cipher.release()
        self.slots = []
        with contextlib.suppress(BufferError):
            self._memory.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            return data
        data += more
    return data


def _helper(memory_fd: int, slots: int) -> None:
    """The helper process: encrypt the slots named on standard input until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when to stop
    key = _read_exactly(0, KEY_BYTES)
    if len(key) != KEY_BYTES:
        return
    cipher = ChaCha20Poly1305(key)
    memory = mmap.mmap(memory_fd, slots * SLOT)
    os.close(memory_fd)
    view = memoryview(memory)
    _write_all(1, _READY)
    while len(message := _read_exactly(0, _MESSAGE.size)) == _MESSAGE.size:
        slot, size = _MESSAGE.unpack(message)
        if slot >= slots or size > CHUNK:
            raise SystemExit("levere crypt4gh helper: a request outside the shared memory")
        base = slot * SLOT
        written = encrypt_segments(cipher, view[base : base + CHUNK], size, view[base + CHUNK : base + SLOT])
        _write_all(1, _MESSAGE.pack(slot, written))


if __name__ == "__main__":
    _helper(int(sys.argv[1]), int(sys.argv[2]))
