"""A backend layer that records every object written through it, for the wrapper contract test.

Each write appends one line (process id, backend id, key) to a log file with ``O_APPEND``, one
``write`` per line, so that the service and its worker processes can share the log: the worker
processes build the same layer from the tier's recipe and write to the same file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from levere.storage import Backend, ObjectWriter, SmallWrite, WrappingBackend


class Recording(WrappingBackend):
    def __init__(self, inner: Backend, log: str) -> None:
        super().__init__(inner)
        self.log = log

    def note(self, key: str) -> None:
        line = f"{os.getpid()}\t{self.backend_id}\t{key}\n".encode()
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def open_writer(
        self, key: str, *, size_hint: int | None = None, write_once: bool = False, durable: bool = True
    ) -> ObjectWriter:
        inner = self.inner.open_writer(key, size_hint=size_hint, write_once=write_once, durable=durable)
        return _RecordingWriter(self, key, inner)

    @contextlib.contextmanager
    def small_writes(self, write_once: bool = False) -> Iterator[SmallWrite]:
        with self.inner.small_writes(write_once) as write:

            def recording(key: str, data: bytes) -> str | None:
                version = write(key, data)
                self.note(key)
                return version

            yield recording

    # A session carries the key it publishes, so that finishing it (in any process, after any
    # restart) can say which key was written.
    def start_staged(self, key: str, length: int) -> str:
        return json.dumps([key, self.inner.start_staged(key, length)])

    def staged_offset(self, session: str) -> int:
        return self.inner.staged_offset(_inner(session))

    def append_staged(self, session: str, offset: int, chunks: Iterable[bytes]) -> int:
        return self.inner.append_staged(_inner(session), offset, chunks)

    def truncate_staged(self, session: str, offset: int) -> int:
        return self.inner.truncate_staged(_inner(session), offset)

    def read_staged(self, session: str) -> Iterator[bytes]:
        return self.inner.read_staged(_inner(session))

    def staged_step(self, session: str) -> int | None:
        return self.inner.staged_step(_inner(session))

    def finish_staged(self, session: str) -> None:
        self.inner.finish_staged(_inner(session))
        self.note(json.loads(session)[0])

    def abort_staged(self, session: str) -> None:
        self.inner.abort_staged(_inner(session))


def _inner(session: str) -> str:
    inner = json.loads(session)[1]
    assert isinstance(inner, str)
    return inner


class _RecordingWriter(ObjectWriter):
    def __init__(self, layer: Recording, key: str, inner: ObjectWriter) -> None:
        self.layer, self.key, self.inner = layer, key, inner

    def write(self, chunk: bytes) -> None:
        self.inner.write(chunk)

    def commit(self) -> None:
        self.inner.commit()
        self.version = self.inner.version
        self.layer.note(self.key)

    def abort(self) -> None:
        self.inner.abort()


@dataclass(frozen=True)
class Written:
    """What the log says was written: how often each (backend id, key), and by which processes."""

    keys: Counter[tuple[str, str]]
    pids: frozenset[int]

    def of(self, backend_id: str) -> set[str]:
        return {key for (b, key) in self.keys if b == backend_id}


def read_log(log: Path) -> Written:
    keys: Counter[tuple[str, str]] = Counter()
    pids = set()
    if log.exists():
        for line in log.read_text().splitlines():
            pid, backend_id, key = line.split("\t")
            keys[(backend_id, key)] += 1
            pids.add(int(pid))
    return Written(keys, frozenset(pids))
