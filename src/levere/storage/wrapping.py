"""A backend laid over another (Galaxy's wrapping stores): encryption, caching or recording is a
layer the factory builds (:mod:`levere.storage.factory`), not a branch in the callers.

:class:`WrappingBackend` forwards every call to the backend beneath. A layer that changes what is
written overrides the write paths, which are exactly these: :meth:`open_writer` (whole objects),
:meth:`small_writes` (groups of small objects; :meth:`write_small` goes through it), and the
staging sessions (:meth:`start_staged`, :meth:`append_staged`, :meth:`finish_staged` ...). Nothing
in levere writes any other way, and worker processes build the same layers from the recipe.

A layer offers only the capabilities it keeps (:attr:`keeps`): by default those that do not let
a caller reach the bytes beneath it, so a capability added later is dropped by every layer until
that layer says it honours it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from levere.domain.paths import KeyLimits
from levere.storage.base import Backend, Capability, ObjectInfo, ObjectWriter, SmallWrite


class WrappingBackend(Backend):
    #: the capabilities of the backend beneath that this layer honours too
    keeps: frozenset[Capability] = frozenset({Capability.WORKER_PROCESSES, Capability.WRITE_ONCE})

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.backend_id = inner.backend_id
        self.capabilities = inner.capabilities & self.keeps
        self.small_write_threads = inner.small_write_threads

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def key_limits(self) -> KeyLimits:
        return self.inner.key_limits()

    def check_ready(self) -> None:
        self.inner.check_ready()

    def prepare_write_once(self) -> str | None:
        return self.inner.prepare_write_once()

    def prepare_prefix(self, prefix: str) -> None:
        self.inner.prepare_prefix(prefix)

    # --- whole objects -------------------------------------------------------------------------
    def open_writer(
        self, key: str, *, size_hint: int | None = None, write_once: bool = False, durable: bool = True
    ) -> ObjectWriter:
        return self.inner.open_writer(key, size_hint=size_hint, write_once=write_once, durable=durable)

    def write_small(self, key: str, data: bytes, write_once: bool = False) -> str | None:
        with self.small_writes(write_once) as write:
            return write(key, data)

    @contextlib.contextmanager
    def small_writes(self, write_once: bool = False) -> Iterator[SmallWrite]:
        with self.inner.small_writes(write_once) as write:
            yield write

    def flush(self) -> None:
        self.inner.flush()

    def read(
        self, key: str, start: int = 0, end: int | None = None, *, version: str | None = None
    ) -> Iterator[bytes]:
        return self.inner.read(key, start, end, version=version)

    def stat(self, key: str, *, version: str | None = None) -> ObjectInfo | None:
        return self.inner.stat(key, version=version)

    def delete(self, key: str, *, force: bool = False) -> None:
        self.inner.delete(key, force=force)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    # --- resumable staging sessions ------------------------------------------------------------
    def start_staged(self, key: str, length: int) -> str:
        return self.inner.start_staged(key, length)

    def staged_offset(self, session: str) -> int:
        return self.inner.staged_offset(session)

    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        return self.inner.append_staged(session, offset, chunks)

    def truncate_staged(self, session: str, offset: int) -> int:
        return self.inner.truncate_staged(session, offset)

    def read_staged(self, session: str) -> Iterator[bytes]:
        return self.inner.read_staged(session)

    def staged_step(self, session: str) -> int | None:
        return self.inner.staged_step(session)

    def finish_staged(self, session: str) -> None:
        self.inner.finish_staged(session)

    def abort_staged(self, session: str) -> None:
        self.inner.abort_staged(session)
