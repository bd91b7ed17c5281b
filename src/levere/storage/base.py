"""The one storage interface every backend implements.

Design notes
------------
* Keys are relative, slash-separated paths (``LEV-0001/run42/sample_R1.fastq.gz``). Backends never
  interpret them beyond that; validation of user-supplied paths happens in the domain layer before a
  key is built, and backends re-check with :func:`check_key` as a second line of defence.
* Nothing is visible under its final key until it is complete: whole-object writes go to a temporary
  name and are published by :meth:`ObjectWriter.commit`; resumable writes (tus uploads) accumulate in
  a *staging session* that only :meth:`Backend.finish_staged` publishes.
* Backends never hash: the caller hashes each chunk in the same loop that hands it to the backend, so
  the bytes are read once.
* Resumable sessions survive a process being killed: everything needed to continue is in the backend
  itself (the ``.part`` file on disk, the multipart upload on S3) plus the opaque ``session`` string
  the caller stores in the database.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from levere.domain.paths import KeyLimits
from levere.storage.keys import check_key

if TYPE_CHECKING:
    from levere.storage.factory import Recipe

__all__ = ["CHUNK", "Backend", "Capability", "ObjectInfo", "ObjectWriter", "SmallWrite", "check_key"]

CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    #: the version of the object described, on a store that keeps versions (else None)
    version: str | None = None


class ObjectWriter(abc.ABC):
    """A whole-object write: bytes go to a temporary place until :meth:`commit`."""

    #: after :meth:`commit`, the version the store gave the object, where it keeps versions; a
    #: write-once tier's readers ask for that version, whatever was written over it since
    version: str | None = None

    @abc.abstractmethod
    def write(self, chunk: bytes) -> None:
        """Write or copy ``chunk`` before returning (the caller may reuse its buffer then)."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Publish the object under its final key (atomic rename / multipart completion)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Throw the temporary bytes away; the final key is untouched."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


#: publishes one whole small object under a key (what :meth:`Backend.small_writes` yields) and
#: returns its version, as :attr:`ObjectWriter.version`
SmallWrite = Callable[[str, bytes], str | None]


class Capability(enum.Enum):
    """What a backend offers beyond the interface, which the data plane's fast paths ask for
    (never for a concrete class). A wrapping backend offers only those it can honour."""

    #: publishing or copying many small files here is bound by this machine's CPU (a local disk),
    #: not by round trips: worth spreading over worker processes, each of which builds the same
    #: backend, wrappers included, from its :class:`~levere.storage.factory.Recipe`
    WORKER_PROCESSES = "worker-processes"
    #: ``write_once=True`` protects what it publishes from being overwritten or deleted (the
    #: factory refuses to build a write-once tier on a backend without it)
    WRITE_ONCE = "write-once"


class Backend(abc.ABC):
    """A place that stores objects under keys. Constructors do no I/O."""

    #: short identifier saved on each row that refers to a stored copy
    backend_id: str
    #: what this backend offers beyond the interface (:class:`Capability`)
    capabilities: frozenset[Capability] = frozenset()
    #: how to build this very backend again (in a worker process): set by the factory
    #: (:func:`levere.storage.factory.build`); None for a backend made by hand
    recipe: Recipe | None = None
    #: threads worth running :meth:`write_small` on at once where each object is a round trip
    #: (object stores); 0 writes them in the caller's thread (a local disk: a helper thread only
    #: passes the GIL back and forth)
    small_write_threads: int = 0

    @abc.abstractmethod
    def key_limits(self) -> KeyLimits:
        """How long a key (and each name in it) may be here, so that a path too long to store is
        refused before any of its bytes are accepted."""

    def stored_form(self) -> Backend:
        """This backend for writing objects already in the tier's stored form: copies the copy
        engine makes of objects it read from another tier and checks against what the file's copies
        must be (``expected_copy``). Itself, unless a layer changes what is written: the secure
        tier's Crypt4GH layer, whose stored form is the body (a restore or repair from long-term
        brings back the same ciphertext, which must not be encrypted again)."""
        return self

    # --- whole objects -------------------------------------------------------------------------
    @abc.abstractmethod
    def open_writer(
        self, key: str, *, size_hint: int | None = None, write_once: bool = False, durable: bool = True
    ) -> ObjectWriter:
        """Start writing ``key``. With ``write_once`` the published object is protected from being
        overwritten or deleted by levere (read-only file; S3 object lock where the server has it) and
        an existing object under ``key`` makes :meth:`ObjectWriter.commit` raise ``AlreadyExists``.
        With ``durable=False`` the commit publishes without waiting for stable storage; call
        :meth:`flush` before recording that the object exists (batch copies of many small files)."""

    @abc.abstractmethod
    def read(
        self, key: str, start: int = 0, end: int | None = None, *, version: str | None = None
    ) -> Iterator[bytes]:
        """Yield the bytes ``[start, end)`` of ``key`` in chunks of at most :data:`CHUNK` bytes:
        of the given ``version`` if there is one (see :attr:`ObjectWriter.version`), else of the
        current object. Raises ``NotFound`` if the key (or that version) does not exist."""

    @abc.abstractmethod
    def stat(self, key: str, *, version: str | None = None) -> ObjectInfo | None: ...

    @abc.abstractmethod
    def delete(self, key: str, *, force: bool = False) -> None:
        """Remove ``key`` (no error if absent). Write-once objects need ``force=True``."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every published object whose key starts with ``prefix``, in key order."""

    # --- resumable staging sessions (tus uploads) ----------------------------------------------
    @abc.abstractmethod
    def start_staged(self, key: str, length: int) -> str:
        """Open a resumable session for ``key`` of exactly ``length`` bytes; returns an opaque
        session string to store and pass back."""

    @abc.abstractmethod
    def staged_offset(self, session: str) -> int:
        """How many bytes the backend durably holds for this session (after a crash too)."""

    @abc.abstractmethod
    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        """Append ``chunks`` at ``offset`` (which must equal :meth:`staged_offset`); returns the new
        offset. If the iterable raises part-way (a dropped connection), every byte already
        received up to that point is kept durably when possible, then the error is re-raised.
        Each chunk is written or copied before the next is asked for, so the caller may reuse
        its buffer then."""

    @abc.abstractmethod
    def truncate_staged(self, session: str, offset: int) -> int:
        """Drop what the session holds past ``offset`` (a request that must leave nothing of
        itself); returns the offset it holds then. Where bytes become durable in steps
        (:meth:`staged_step`), the steps completed past ``offset`` cannot be taken back: the
        result is then the end of the last of them, which is never the session's whole length."""

    @abc.abstractmethod
    def read_staged(self, session: str) -> Iterator[bytes]:
        """Yield the bytes held so far (used only to rebuild checksums after a server restart)."""

    def staged_step(self, session: str) -> int | None:
        """For backends whose :meth:`read_staged` cannot work: the size of the steps in which a
        session's bytes become durable. An append that ends on a multiple of it (or at the end of
        the session) makes everything up to there durable in one step, so the caller can save its
        own checksum state at each step. ``None`` (the default): ``read_staged`` works."""
        return None

    @abc.abstractmethod
    def finish_staged(self, session: str) -> None:
        """Publish the complete session under its key."""

    @abc.abstractmethod
    def abort_staged(self, session: str) -> None:
        """Drop the session and its bytes."""

    def prepare_write_once(self) -> str | None:
        """Make sure that what is written with ``write_once`` here stays as written: on an object
        store, that the bucket exists with versioning and object lock (creating it if missing).
        Raises ``ConfigurationError`` if it cannot be; returns a warning, in words, where the
        configuration turned the protection off. Run at start-up for write-once tiers."""
        return None

    # --- start-up ------------------------------------------------------------------------------
    @abc.abstractmethod
    def check_ready(self) -> None:
        """Raise ``StorageUnavailable`` saying what is wrong unless objects can be stored here now
        (a local root that is a writable folder; an S3 bucket that answers). Does one probe."""

    # --- convenience ---------------------------------------------------------------------------
    def prepare_prefix(self, prefix: str) -> None:
        """Make room for keys under ``prefix`` (a project's area). Object stores need nothing."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def flush(self) -> None:
        """Make every object committed with ``durable=False`` durable. Object stores need nothing:
        a completed upload already is."""

    def write_small(self, key: str, data: bytes, write_once: bool = False) -> str | None:
        """Publish ``data``, a whole small object already in memory, under ``key`` as a writer
        opened with ``durable=False`` (and ``write_once``) would (:meth:`flush` makes it durable).
        For batches of many small files; backends may do it in fewer steps."""
        with self.open_writer(key, size_hint=len(data), write_once=write_once, durable=False) as writer:
            writer.write(data)
            writer.commit()
        return writer.version

    @contextlib.contextmanager
    def small_writes(self, write_once: bool = False) -> Iterator[SmallWrite]:
        """A function that does :meth:`write_small` (with ``write_once``: publishes the object
        write-once, and raises ``AlreadyExists`` rather than replace one), for a group of objects
        written one after the other; a backend may keep what they share (open folders, say) until
        the ``with`` ends."""
        yield functools.partial(self.write_small, write_once=write_once)
