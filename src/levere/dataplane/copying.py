"""Streaming copies between storage backends, verified by SHA-256 computed in the same pass.

Design notes
------------
* One read of the source feeds the target writer and the hash; the bytes are never read twice
  and never staged anywhere but the target's own temporary object.
* A copy is checked against the manifest's size and SHA-256. Both of a file's checksums were
  computed from the same bytes when it was delivered, so bytes whose SHA-256 matches also have
  the manifest's MD5: a second, weaker hash would find nothing more and halve the speed (MD5 runs
  at ~600 MB/s on one core, SHA-256 at ~1,400 MB/s with the SHA extensions). MD5 stays in the
  manifest for ``md5sum -c``; it is computed where bytes enter levere, not on every copy.
* Nothing is published before the digests match the manifest: the writer commits only after the
  comparison, so a source that no longer matches its manifest never lands on the target.
* Small objects go through inline: for a 4 KiB file, handing chunks to other threads would cost
  more than the work. Where the caller passes the target's ``small_writes`` (a sync's copy
  processes and threads do, for their groups of small files), an object of at most ``IN_MEMORY``
  bytes is read whole, checked, and published in one step: on a local folder an unnamed file
  linked into place, where a writer makes, links and removes a temporary file in a folder every
  copy shares. Measured on 20,000 files of 4 KiB on one thread: 2.5 s instead of 9.3 s, on a disk
  where files were recently removed (ext4 without a journal then searches past the freed inodes
  at each creation, and each copy removed a temporary file of its own).
* Big objects go through a pipeline: the calling thread reads, and a hashing thread and a
  writer thread consume the same chunks through small bounded queues, side by side, since hashlib
  and file or socket writes release the GIL. Memory stays at a few chunks per file whatever its
  size.
"""

from __future__ import annotations

import functools
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from levere.domain.errors import AlreadyExists, ChecksumMismatch, NotFound
from levere.storage import Backend, SmallWrite

#: objects at least this big are copied through the threaded pipeline
PIPELINE_MIN = 8 * 1024 * 1024
#: chunks waiting per consumer; with the backends' 4 MiB chunks a pipeline holds ~16-20 MiB
_DEPTH = 3

Sink = Callable[[bytes], None]
#: objects at most this big may be copied whole, in memory (see ``copy_verified``)
IN_MEMORY = 1024 * 1024


@dataclass(frozen=True)
class Expected:
    """What the manifest says about a file."""

    size: int
    md5: str
    sha256: str


def expected_copy(
    size: int, md5: str, sha256: str, body_size: int | None = None, body_sha256: str | None = None
) -> Expected:
    """What every stored copy of a file must be, the one answer sync, restore, ``levere verify`` and
    repairs compare with: a secure-zone file's copies are its Crypt4GH body as stored (headers are
    kept apart), so they match ``body_size``/``body_sha256``, never the plaintext's checksums; any
    other file's copies are its own bytes."""
    if body_sha256 is not None and body_size is not None:
        return Expected(body_size, "", body_sha256)
    return Expected(size, md5, sha256)


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str

    def problem(self, expected: Expected) -> str | None:
        """How these bytes differ from the manifest, in words, or None when they match."""
        if self.size != expected.size:
            return f"size is {self.size} bytes, the manifest says {expected.size}"
        if self.sha256 != expected.sha256:
            return f"SHA-256 is {self.sha256}, the manifest says {expected.sha256}"
        return None


@dataclass(frozen=True)
class Copied:
    """What a copy left on the target."""

    #: False when an earlier attempt's object was found intact and kept instead of copying
    written: bool
    #: the version the target gave the object, where it keeps versions (see ``Backend.read``)
    version: str | None = None


class RateLimiter:
    """Keeps the average throughput of all threads sharing it under ``rate`` bytes per second."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, nbytes: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + nbytes / self.rate
            delay = self._next - now - nbytes / self.rate
        if delay > 0:
            time.sleep(delay)


def digest_stream(
    chunks: Iterable[bytes], sink: Sink | None = None, *, big: bool, limiter: RateLimiter | None = None
) -> Digests:
    """Hash every chunk (and hand it to ``sink``) in one pass; see the module notes."""
    if big:
        return _pipeline(iter(chunks), sink, limiter)
    sha = hashlib.sha256()
    size = 0
    for chunk in chunks:
        if limiter is not None:
            limiter.take(len(chunk))
        sha.update(chunk)
        if sink is not None:
            sink(chunk)
        size += len(chunk)
    return Digests(size, sha.hexdigest())


def _pipeline(chunks: Iterator[bytes], sink: Sink | None, limiter: RateLimiter | None) -> Digests:
    sha = hashlib.sha256()
    consumers: list[Sink] = [sha.update]
    if sink is not None:
        consumers.append(sink)
    queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=_DEPTH) for _ in consumers]
    errors: list[BaseException] = []
    failed = threading.Event()

    def consume(q: queue.Queue[bytes | None], fn: Sink) -> None:
        while (item := q.get()) is not None:
            if failed.is_set():
                continue  # keep draining so that the reader never blocks on a dead consumer
            try:
                fn(item)
            except BaseException as exc:
                errors.append(exc)
                failed.set()

    threads = [
        threading.Thread(target=consume, args=(q, fn), name="levere-copy", daemon=True)
        for q, fn in zip(queues, consumers, strict=True)
    ]
    for thread in threads:
        thread.start()
    size = 0
    try:
        for chunk in chunks:
            if failed.is_set():
                break
            if limiter is not None:
                limiter.take(len(chunk))
            size += len(chunk)
            for q in queues:
                q.put(chunk)
    finally:
        for q in queues:
            q.put(None)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return Digests(size, sha.hexdigest())


def copy_verified(
    source: Backend,
    source_key: str,
    target: Backend,
    target_key: str,
    expected: Expected,
    *,
    write_once: bool,
    durable: bool = True,
    limiter: RateLimiter | None = None,
    label: str = "",
    write: SmallWrite | None = None,
    source_version: str | None = None,
) -> str | None:
    """Copy one object (the ``source_version`` of it, if given), publishing it only if its bytes
    match ``expected``; returns the version the target gave it (None where it keeps none).

    ``write`` (from the target's ``small_writes``, with the same ``write_once``, for copies made
    durable by a flush) publishes an object of at most ``IN_MEMORY`` bytes whole, once read and
    checked, instead of through a writer.

    Raises ``ChecksumMismatch`` (the source differs from the manifest; nothing was published),
    ``AlreadyExists`` (a write-once object is already there), ``NotFound`` (no source object) or
    ``StorageUnavailable``.
    """
    chunks = source.read(source_key, version=source_version)
    if write is not None and expected.size <= IN_MEMORY:
        data, digests = _read_whole(chunks, expected.size, limiter)
        problem = digests.problem(expected)
        if problem is not None or data is None:
            raise _mismatch(source, label or source_key, problem)
        return write(target_key, data)
    with target.open_writer(
        target_key, size_hint=expected.size, write_once=write_once, durable=durable
    ) as writer:
        digests = digest_stream(chunks, writer.write, big=expected.size >= PIPELINE_MIN, limiter=limiter)
        problem = digests.problem(expected)
        if problem is not None:
            # leaving the block with an error aborts the writer: nothing is published
            raise _mismatch(source, label or source_key, problem)
        writer.commit()
    return writer.version


def _mismatch(source: Backend, path: str, problem: str | None) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{path} on the {source.backend_id} storage does not match its manifest: {problem}", path=path
    )


def _read_whole(
    chunks: Iterable[bytes], limit: int, limiter: RateLimiter | None
) -> tuple[bytes | None, Digests]:
    """An object's bytes (None past ``limit``, whose size is still counted) and their digests."""
    sha = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        if limiter is not None:
            limiter.take(len(chunk))
        size += len(chunk)
        if size <= limit:
            sha.update(chunk)
            parts.append(chunk)
    if size > limit:
        return None, Digests(size, "")
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return data, Digests(size, sha.hexdigest())


def check_stored(
    backend: Backend,
    key: str,
    expected: Expected,
    limiter: RateLimiter | None = None,
    *,
    version: str | None = None,
) -> str | None:
    """Re-read a stored object (the given ``version`` of it): None if it matches ``expected``,
    else what is wrong, in words. ``StorageUnavailable`` propagates: an unreachable store is not
    evidence of damage."""
    try:
        chunks = backend.read(key, version=version)
        digests = digest_stream(chunks, big=expected.size >= PIPELINE_MIN, limiter=limiter)
    except NotFound:
        return "the stored copy is missing"
    return digests.problem(expected)


def adopt_or_clear(
    backend: Backend, key: str, expected: Expected, limiter: RateLimiter | None = None
) -> Copied | None:
    """After a copy found ``key`` already there: that object, if it is a good copy (keep it), else
    None once it is removed, so that the caller can write it again.

    Only called for a replica this worker holds the lease on and that is not recorded as present,
    so the object can only be the unfinished or unverified work of an earlier attempt: replacing it
    (with ``force``, even when write-once) loses nothing.
    """
    found = backend.stat(key)
    version = found.version if found is not None else None
    if found is not None and check_stored(backend, key, expected, limiter, version=version) is None:
        return Copied(written=False, version=version)
    backend.delete(key, force=True)
    return None


def copy_or_adopt(
    source: Backend,
    source_key: str,
    target: Backend,
    target_key: str,
    expected: Expected,
    *,
    write_once: bool,
    durable: bool,
    look_first: bool,
    limiter: RateLimiter | None = None,
    label: str = "",
    write: SmallWrite | None = None,
    source_version: str | None = None,
) -> Copied:
    """Make ``target_key`` a verified copy, or adopt an earlier attempt's intact object there.
    ``look_first`` checks for such an object before copying; ``write`` and ``source_version``
    are :func:`copy_verified`'s."""
    if look_first and target.exists(target_key):
        adopted = adopt_or_clear(target, target_key, expected, limiter)
        if adopted is not None:
            return adopted
    copy = functools.partial(
        copy_verified, source, source_key, target, target_key, expected,
        write_once=write_once, durable=durable, limiter=limiter, label=label, write=write,
        source_version=source_version,
    )  # fmt: skip
    try:
        return Copied(written=True, version=copy())
    except AlreadyExists:
        adopted = adopt_or_clear(target, target_key, expected, limiter)
        if adopted is not None:
            return adopted
        return Copied(written=True, version=copy())
