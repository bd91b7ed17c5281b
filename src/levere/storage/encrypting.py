"""The secure tier's layer: every object written through it is stored as a Crypt4GH *body*
(segments of 64 KiB plaintext, each ChaCha20-Poly1305 with its own nonce), never as plaintext.

Design notes
------------
* Laid over the secure tier's backend only (:meth:`levere.context.Context.backend` builds the
  tier's recipe with it), so worker processes rebuilt from the recipe encrypt too. It is built
  from the master key file's path (picklable); the master keys are read on first use.
* Resumable sessions: :meth:`start_staged` draws a data key and returns a session string that
  carries it wrapped under the master key (bound to the object's key), with the session of the
  backend beneath, which holds the *body* (its length is the body's). Any process that has the
  session string and the master key file continues the same body. :meth:`data_key` and
  :meth:`wrapped_key` give the caller the key, for the header it records at completion.
* Offsets are plaintext offsets. A segment is encrypted only when it is whole (or the upload's
  last), so plaintext that does not fill one stays in memory and is never stored; what the
  backend beneath holds is cut back to whole *steps* (:data:`STEP` plaintext bytes) and
  :meth:`staged_step` tells the uploader so, which then saves its checksum state at each step and
  resumes from the last one. A step is a whole number of segments; on an object store beneath,
  whose parts are not, the body stays resumable only while the parts' tail can still be cut
  (docs/secure.md).
* The body's SHA-256 (what copies of it are checked against) is computed as the body is written,
  and kept in memory between the requests of one session in this process
  (:meth:`EncryptingBackend.body_digest`); a session continued in another process has none, and
  its caller hashes the stored body once it is complete.
* Files uploaded already encrypted (a *sealed* session, :meth:`start_sealed`): the caller takes the
  header off the first request and checks it (:meth:`with_header`); the session then stores the
  body as it comes (it is ciphertext: any offset is durable and can be read back), after the header
  it carries. The caller authenticates the body when it is complete.
* Whole objects (:meth:`open_writer`) get a fresh data key each; the writer gives it, wrapped,
  after commit (:attr:`EncryptingWriter.wrapped_data_key`).
* Groups of small objects (tar batches into a shared disk's delivery): :meth:`sealed_writes`
  encrypts each object under a fresh data key into a body, whole in memory, and publishes only the
  body through the backend beneath's ``small_writes`` (made durable by :meth:`flush`, as there).
  Each write returns a :class:`SealedObject`: the data key and the body's SHA-256 and size,
  which the caller records with a header for the object. The plain :meth:`small_writes` (and
  :meth:`write_small`) refuse: they return no key, and a body whose key is lost opens for no one. The layer keeps no capabilities (no worker processes), so
  the groups are written on threads.
* Copies of stored bodies (restore and repairs from long-term, checked against the file's
  ``body_sha256``) are written beneath this layer (:meth:`stored_form`), as they are.
* Reads, listings and sizes are those of the bodies: this layer never decrypts (reading a zone
  file's plaintext goes through its header, :mod:`levere.services.zone_files`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import cast

from levere.crypt4gh.body import body_size
from levere.crypt4gh.header import DataKey
from levere.crypt4gh.segment_worker import (
    CHUNK,
    CIPHER_CHUNK,
    CIPHER_SEGMENT,
    NONCE,
    SEGMENT,
    encrypt_segments,
)
from levere.crypt4gh.wrapping import MasterKeys
from levere.domain.errors import Conflict, NotFound, ValidationFailed
from levere.storage.base import Backend, Capability, ObjectWriter, SmallWrite
from levere.storage.wrapping import WrappingBackend

#: the plaintext bytes of one durable step of a resumable session (256 segments: 16 MiB): each
#: step ends in an fsync and a saved checksum state, and a request cut off loses at most one step
STEP = 256 * SEGMENT
_SESSION_VERSION = "c4gh-body-v1"


def _context(key: str) -> str:
    return f"upload-data-key:{key}"


@dataclass(frozen=True)
class _Session:
    v: str
    key: str
    length: int
    wrapped_key: str
    inner: str
    #: "encrypt": plaintext comes in and is encrypted here; "sealed": a Crypt4GH file comes in
    #: (already encrypted by the client) and its body is stored as it is, after its header
    #: (base64, empty until the service has checked it) which the database keeps
    mode: str = "encrypt"
    header: str = ""

    @property
    def header_bytes(self) -> bytes:
        return base64.b64decode(self.header)

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, session: str) -> _Session:
        try:
            found = cls(**json.loads(session))
        except (ValueError, TypeError):
            raise NotFound("unknown upload session") from None
        if found.v != _SESSION_VERSION or not isinstance(found.length, int) or found.mode not in _MODES:
            raise NotFound("unknown upload session")
        return found


_MODES = ("encrypt", "sealed")


class _Segments:
    """Encrypts plaintext pushed in pieces of any size into whole segments, a chunk of
    16 segments at a time, through two buffers it keeps: plaintext waiting for a whole
    chunk, and the chunk's ciphertext. What :meth:`push` and :meth:`last` give is a view of the
    second, valid until the next piece is asked for (the backends beneath take each chunk before
    they ask for the next), so no memory is allocated per segment."""

    def __init__(self, data_key: DataKey) -> None:
        self._cipher = data_key.cipher()
        self._plain = memoryview(bytearray(CHUNK))
        self._filled = 0
        self._out = memoryview(bytearray(CIPHER_CHUNK))

    def push(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        view = memoryview(data).cast("B")
        while view:
            if not self._filled and len(view) >= CHUNK:  # a whole chunk straight from the input
                yield self._seal(view, CHUNK)
                view = view[CHUNK:]
                continue
            take = min(CHUNK - self._filled, len(view))
            self._plain[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == CHUNK:
                self._filled = 0
                yield self._seal(self._plain, CHUNK)

    def last(self) -> memoryview:
        """The last segments: whatever plaintext is waiting, the last segment shorter (empty if
        nothing is waiting)."""
        size, self._filled = self._filled, 0
        return self._seal(self._plain, size)

    def _seal(self, plain: memoryview, size: int) -> memoryview:
        return self._out[: encrypt_segments(self._cipher, plain, size, self._out)]

    def drop(self) -> None:
        self._filled = 0


class _BodyDigests:
    """The running SHA-256 of the bodies this process is writing in resumable sessions, at the
    body offsets where the session's last append began and ended (a request cut off mid-step
    resumes from the first); a few dozen sessions at most (the oldest is forgotten first)."""

    KEPT = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[str, dict[int, hashlib._Hash]] = OrderedDict()

    def take(self, session: str, at: int) -> hashlib._Hash | None:
        """The running hash of ``session`` at exactly ``at`` body bytes (the caller's until it
        keeps it again); a fresh one at 0."""
        with self._lock:
            found = self._states.pop(session, {}).get(at)
        if found is not None:
            return found
        return hashlib.sha256() if at == 0 else None

    def keep(self, session: str, states: dict[int, hashlib._Hash]) -> None:
        with self._lock:
            self._states[session] = states
            while len(self._states) > self.KEPT:
                self._states.popitem(last=False)

    def forget(self, session: str) -> None:
        with self._lock:
            self._states.pop(session, None)


_body_digests = _BodyDigests()


@dataclass(frozen=True)
class SealedObject:
    """A small object written by :meth:`EncryptingBackend.sealed_writes`: the data key of its
    body (in memory only, for the header the caller records) and the stored body's SHA-256 and
    size."""

    version: str | None
    data_key: DataKey
    body_sha256: str
    body_size: int


#: publishes one small object, encrypted, and tells its key and body (``sealed_writes``)
SealedWrite = Callable[[str, bytes], SealedObject]


def _sealed_whole(data_key: DataKey, data: bytes) -> bytes:
    """The body of a small object in memory, its segments encrypted at once (no chunk buffers)."""
    size = len(data)
    out = bytearray(body_size(size))
    nonces = os.urandom(NONCE * -(-size // SEGMENT))
    written = encrypt_segments(data_key.cipher(), memoryview(data), size, memoryview(out), nonces)
    assert written == len(out)
    return bytes(out)


class EncryptingWriter(ObjectWriter):
    """A whole object written as a Crypt4GH body under a fresh data key."""

    def __init__(self, inner: ObjectWriter, data_key: DataKey, wrapped: str) -> None:
        self._inner = inner
        self._segments = _Segments(data_key)
        #: the data key (in memory only) and the same wrapped under the master key for the object's key
        self.data_key = data_key
        self.wrapped_data_key = wrapped
        #: what went in and what was stored: the plaintext's size, MD5 and SHA-256, the body's
        #: SHA-256 and size (for the caller's records)
        self.plain_size = 0
        self.plain_md5 = hashlib.md5(usedforsecurity=False)
        self.plain_sha256 = hashlib.sha256()
        self.body_sha256 = hashlib.sha256()
        self.body_size = 0

    def write(self, chunk: bytes) -> None:
        self.plain_size += len(chunk)
        self.plain_md5.update(chunk)
        self.plain_sha256.update(chunk)
        for sealed in self._segments.push(chunk):
            self._store(sealed)

    def _store(self, sealed: memoryview) -> None:
        self.body_sha256.update(sealed)
        self.body_size += len(sealed)
        self._inner.write(cast(bytes, sealed))  # writers take any bytes-like chunk

    def commit(self) -> None:
        last = self._segments.last()
        if last:
            self._store(last)
        self._inner.commit()
        self.version = self._inner.version

    def abort(self) -> None:
        self._segments.drop()
        self._inner.abort()


class EncryptingBackend(WrappingBackend):
    #: write-once copies are not offered through this layer, nor worker processes (whose fast
    #: paths write small objects beneath it); small objects go through :meth:`sealed_writes`
    keeps: frozenset[Capability] = frozenset()

    def __init__(self, inner: Backend, master_key_file: Path | None = None) -> None:
        super().__init__(inner)
        self.master_key_file = master_key_file
        # sealed writes encrypt on the caller's CPU: threads let a group's encryption overlap the
        # parsing of the next members (there are no worker processes through this layer)
        self.small_write_threads = max(inner.small_write_threads, os.cpu_count() or 1)

    @cached_property
    def master_keys(self) -> MasterKeys:
        return MasterKeys.from_setting(self.master_key_file)

    # --- the data key of a session ------------------------------------------------------------
    def wrapped_key(self, session: str) -> str:
        """The session's data key, wrapped under the master key (what the upload row keeps)."""
        return _Session.decode(session).wrapped_key

    def data_key(self, session: str) -> DataKey:
        s = _Session.decode(session)
        return self.master_keys.unwrap_data_key(s.wrapped_key, _context(s.key))

    def object_data_key(self, key: str, wrapped: str) -> DataKey:
        """The data key an :class:`EncryptingWriter` for ``key`` gave, unwrapped."""
        return self.master_keys.unwrap_data_key(wrapped, _context(key))

    def stored_form(self) -> Backend:
        """The layers beneath: a copy of a stored body (restored or repaired from long-term) is
        ciphertext already and is written as it is."""
        return self.inner.stored_form()

    # --- whole objects -------------------------------------------------------------------------
    def open_writer(
        self, key: str, *, size_hint: int | None = None, write_once: bool = False, durable: bool = True
    ) -> EncryptingWriter:
        data_key = DataKey.generate()
        wrapped = self.master_keys.wrap_data_key(data_key, _context(key))
        hint = None if size_hint is None else body_size(size_hint)
        inner = self.inner.open_writer(key, size_hint=hint, write_once=write_once, durable=durable)
        return EncryptingWriter(inner, data_key, wrapped)

    def write_small(self, key: str, data: bytes, write_once: bool = False) -> str | None:
        with self.small_writes(write_once) as write:
            return write(key, data)

    @contextlib.contextmanager
    def small_writes(self, write_once: bool = False) -> Iterator[SmallWrite]:
        raise Conflict(
            "small objects are written to the secure tier through its sealed writes, which give each "
            "object's data key; plain small writes would lose it"
        )
        yield  # pragma: no cover

    @contextlib.contextmanager
    def sealed_writes(self) -> Iterator[SealedWrite]:
        """A function that encrypts a small object (whole in memory) under a fresh data key and
        publishes its body under the key given, for a group of objects written one after the other;
        it returns what the caller records for the object (:class:`SealedObject`)."""
        with self.inner.small_writes() as write:

            def sealed(key: str, data: bytes) -> SealedObject:
                data_key = DataKey.generate()
                body = _sealed_whole(data_key, data)
                version = write(key, body)
                return SealedObject(version, data_key, hashlib.sha256(body).hexdigest(), len(body))

            yield sealed

    # --- files uploaded already encrypted ------------------------------------------------------
    def start_sealed(self, key: str, length: int) -> str:
        """A session for a Crypt4GH file of ``length`` bytes (header and body) that waits for its
        header (:meth:`with_header`) before it takes any byte."""
        if length < 0:
            raise ValidationFailed({"length": "must not be negative"})
        return _Session(_SESSION_VERSION, key, length, "", "", mode="sealed").encode()

    def awaits_header(self, session: str) -> bool:
        s = _Session.decode(session)
        return s.mode == "sealed" and not s.header

    def with_header(self, session: str, header: bytes, data_key: DataKey) -> str:
        """The session once the caller checked ``header`` (which gave ``data_key``): the body that
        follows it is stored as it comes, in a session of the backend beneath."""
        s = _Session.decode(session)
        if not self.awaits_header(session) or len(header) > s.length:
            raise Conflict("this upload's header was taken already, or is longer than the file")
        wrapped = self.master_keys.wrap_data_key(data_key, _context(s.key))
        inner = self.inner.start_staged(s.key, s.length - len(header))
        return replace(s, wrapped_key=wrapped, inner=inner, header=base64.b64encode(header).decode()).encode()

    def is_sealed(self, session: str) -> bool:
        return _Session.decode(session).mode == "sealed"

    def stored_size(self, session: str) -> int:
        """The size of the body a complete session publishes."""
        s = _Session.decode(session)
        return s.length - len(s.header_bytes) if s.mode == "sealed" else body_size(s.length)

    def _sealed_offset(self, s: _Session) -> int:
        return len(s.header_bytes) + self.inner.staged_offset(s.inner) if s.inner else 0

    def _sealed_append(self, s: _Session, offset: int, chunks: Iterable[bytes]) -> int:
        if not s.inner:
            raise Conflict("this Crypt4GH upload's header has not been checked yet")
        header = len(s.header_bytes)
        start = self._sealed_offset(s)
        if offset != start:
            raise Conflict(f"upload offset mismatch: request starts at {offset}, stored bytes end at {start}")

        def body() -> Iterator[bytes]:
            at = offset
            for chunk in chunks:
                if at < header:  # the header the service already took out of the stream
                    skip = min(header - at, len(chunk))
                    at += skip
                    chunk = chunk[skip:]
                at += len(chunk)
                if chunk:
                    yield chunk

        return header + self.inner.append_staged(s.inner, start - header, body())

    # --- resumable staging sessions ------------------------------------------------------------
    def start_staged(self, key: str, length: int) -> str:
        if length < 0:
            raise ValidationFailed({"length": "must not be negative"})
        data_key = DataKey.generate()
        wrapped = self.master_keys.wrap_data_key(data_key, _context(key))
        inner = self.inner.start_staged(key, body_size(length))
        return _Session(_SESSION_VERSION, key, length, wrapped, inner).encode()

    def _plain_offset(self, s: _Session, held: int) -> int:
        """The plaintext offset a body of ``held`` bytes stands for, back to the last whole step."""
        if held >= body_size(s.length):
            return s.length
        plain = (held // CIPHER_SEGMENT) * SEGMENT
        return plain - plain % STEP

    def staged_offset(self, session: str) -> int:
        s = _Session.decode(session)
        if s.mode == "sealed":
            return self._sealed_offset(s)
        return self._plain_offset(s, self.inner.staged_offset(s.inner))

    def staged_step(self, session: str) -> int | None:
        s = _Session.decode(session)
        # a sealed session stores ciphertext as it comes, so any offset is durable and what is
        # held can be read back (to rebuild a checksum state)
        return None if s.mode == "sealed" else STEP

    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        s = _Session.decode(session)
        if s.mode == "sealed":
            return self._sealed_append(s, offset, chunks)
        held = self.inner.staged_offset(s.inner)
        start = self._plain_offset(s, held)
        if offset != start:
            raise Conflict(f"upload offset mismatch: request starts at {offset}, stored bytes end at {start}")
        # a request cut off mid-step left segments past the last whole step: drop them
        if held != body_size(start) and self.inner.truncate_staged(s.inner, body_size(start)) != body_size(
            start
        ):
            raise Conflict("the storage cannot take back the bytes of a step cut off; upload the file again")
        segments = _Segments(self.data_key(session))
        received = offset
        hashed = body_size(start)
        digest = _body_digests.take(s.inner, hashed)
        began = {hashed: digest.copy()} if digest is not None else {}

        def sealed() -> Iterator[memoryview]:
            nonlocal received, hashed
            for chunk in chunks:
                received += len(chunk)
                if received > s.length:
                    raise Conflict(f"upload would exceed its declared length of {s.length} bytes")
                for piece in segments.push(chunk):
                    if digest is not None:
                        digest.update(piece)
                        hashed += len(piece)
                    yield piece
            if received == s.length:
                last = segments.last()
                if last:
                    if digest is not None:
                        digest.update(last)
                        hashed += len(last)
                    yield last
            segments.drop()  # a piece of a segment that was not the last is never stored

        try:
            # the backends beneath take any bytes-like chunk (memoryviews of the segments' buffer)
            held = self.inner.append_staged(s.inner, body_size(offset), cast(Iterator[bytes], sealed()))
        finally:
            segments.drop()
        if digest is not None and held == hashed:
            _body_digests.keep(s.inner, began | {held: digest})
        return self.staged_offset(session)

    def body_digest(self, session: str) -> tuple[str, int] | None:
        """The SHA-256 and size of a complete session's body, where this process hashed all of it
        as it was written (see the module's notes); None otherwise."""
        s = _Session.decode(session)
        if s.mode == "sealed" or not s.inner:
            return None
        size = body_size(s.length)
        digest = _body_digests.take(s.inner, size)
        _body_digests.forget(s.inner)
        return (digest.hexdigest(), size) if digest is not None else None

    def truncate_staged(self, session: str, offset: int) -> int:
        s = _Session.decode(session)
        if s.mode == "sealed":
            if not s.inner:
                return 0
            header = len(s.header_bytes)
            return header + self.inner.truncate_staged(s.inner, max(offset - header, 0))
        plain = offset - offset % STEP
        self.inner.truncate_staged(s.inner, body_size(plain))
        return self.staged_offset(session)

    def read_staged(self, session: str) -> Iterator[bytes]:
        s = _Session.decode(session)
        if s.mode == "sealed" and s.inner:  # ciphertext only: the header, then the body so far
            yield s.header_bytes
            yield from self.inner.read_staged(s.inner)
            return
        raise Conflict(
            "an encrypted upload's bytes are not read back; its checksum state is kept at each step"
        )

    def finish_staged(self, session: str) -> None:
        s = _Session.decode(session)
        if not s.inner:
            raise Conflict("this Crypt4GH upload's header has not been checked yet")
        self.inner.finish_staged(s.inner)

    def abort_staged(self, session: str) -> None:
        s = _Session.decode(session)
        if s.inner:
            _body_digests.forget(s.inner)
            self.inner.abort_staged(s.inner)


def encrypting(backend: Backend) -> EncryptingBackend | None:
    """``backend`` as the secure tier's encrypting layer, if it is one."""
    return backend if isinstance(backend, EncryptingBackend) else None
