"""Publishing the small files of a batch: each hashed, checked against the checksums its member
carried and written, a group at a time, away from the thread that parses the stream.

Design notes
------------
* Per small file, publishing costs more than everything else the service does for it: the system
  calls (an unnamed file, its bytes, a link to its name), then MD5 and SHA-256 (the figures are in
  docs/benchmarks.md). On the request thread these would run one after the other with the parsing. Helper threads did not help
  a local disk: each system call gives Python's lock up and waits to get it back from the parsing
  thread, so the threads and the parser took turns on one core.
* So, by backend: a local folder gets child processes (``ingest_processes``, one per CPU by
  default, started by the first batch from a fork server ``levere serve`` starts beside it, and
  gone after two minutes without one), which hash, check and write groups of files on their own
  cores while the request thread parses the next members;
  an object store gets threads (its round trips wait on the network, not on the lock); one CPU,
  or ``ingest_processes = 1``, writes in the caller's thread.
* Results come back per group in the order the groups were handed over: what a file is known
  by (its ``tag``) and its checksums, or that its bytes did not match (nothing was written), or a
  storage error, after which nothing more is handed over. Files stored before an error, in any
  group, are reported as stored, so that the caller records them: nothing on the storage goes
  unrecorded because a later file failed.
* A child that dies (killed, out of memory) takes its groups with it without saying what it
  wrote. Those groups are done again in this process: publishing replaces a name the dead child
  may already have given the same bytes, so the result is the same; the rest of the batch goes
  to the other children (or is written here when none is left), and the next batch starts new
  ones.
* Memory: at most ``IN_FLIGHT_BYTES`` of file data is handed over and not yet written.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from levere.dataplane.process_pools import forkserver
from levere.domain import errors
from levere.domain.errors import LevereError
from levere.storage import Backend, LocalBackend, SmallWrite

if TYPE_CHECKING:
    from levere.storage import BackendSpec, LocalSpec

log = logging.getLogger(__name__)

#: (storage key, the file's bytes, expected MD5 or "", expected SHA-256 or "", path for messages)
Job = tuple[str, bytes, str, str, str]
#: (MD5, SHA-256, "" if stored / "mismatch" if not written / an error class name, message)
Result = tuple[str, str, str, str]

#: files in a group handed over at once, and the bytes such a group may hold
GROUP_FILES = 64
GROUP_BYTES = 4 * 1024 * 1024
#: bytes of file data handed over and not yet written, at most
IN_FLIGHT_BYTES = 32 * 1024 * 1024

Tag = TypeVar("Tag")


def publish_group(backend: Backend, jobs: list[Job]) -> list[Result]:
    """Hash each file, compare with what was expected and publish it (``Backend.small_writes``,
    made durable by the caller's ``flush``), in order. A storage failure ends the group: its
    result is the last one."""
    with backend.small_writes() as write:
        return _publish(write, jobs)


def _publish(write: SmallWrite, jobs: list[Job]) -> list[Result]:
    results: list[Result] = []
    for key, data, expect_md5, expect_sha256, label in jobs:
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        sha256 = hashlib.sha256(data).hexdigest()
        if (expect_md5 and expect_md5 != md5) or (expect_sha256 and expect_sha256 != sha256):
            results.append((md5, sha256, "mismatch", ""))
            continue
        try:
            write(key, data)
        except LevereError as exc:
            results.append((md5, sha256, type(exc).__name__, exc.message))
            break
        except OSError as exc:
            results.append(
                (md5, sha256, "StorageUnavailable", f"could not store {label}: {exc.strerror or exc}")
            )
            break
        except Exception as exc:  # reported once the files stored before it are recorded
            log.exception("storing %s failed", label)
            results.append(
                (md5, sha256, "StorageUnavailable", f"could not store {label}: {type(exc).__name__}: {exc}")
            )
            break
        results.append((md5, sha256, "", ""))
    return results


# --- the child processes -------------------------------------------------------------------------
#
# Each child has two pipes of its own, and the batch's thread writes groups to them and reads the
# results itself. (A ProcessPoolExecutor feeds its children from helper threads in this process,
# which then take the lock from the parsing thread at every turn and slow the recording of each
# chunk.) The pipe the groups go through is widened so that a few groups fit:
# handing one over then never waits for the child to finish the one before.

#: groups sent to one child and not yet answered, at most (their data and their results must fit
#: in the pipes, or the child and this process could wait on each other)
PER_CHILD = 4
_PIPE_BYTES = 1024 * 1024
#: children at most per storage folder, whatever the number of batches received at once
MAX_CHILDREN_PER_CPU = 4
#: a child with nothing to do for this long leaves
IDLE_SECONDS = 120.0


def _serve(jobs: Connection, results: Connection, root: str, backend_id: str, idle: float) -> None:
    """In a child: publish each group received, answer with its results; leave at the end of
    the pipe (the parent closed it, or is gone), or after ``idle`` seconds without work, so
    that a service between deliveries does not keep the memory (the next batch starts new ones;
    one that hands a group to a child just leaving publishes that group itself)."""
    backend = LocalBackend(Path(root), backend_id)
    while jobs.poll(idle):
        try:
            group = jobs.recv()
        except EOFError:
            return
        results.send(publish_group(backend, group))


class Publisher:
    """A child process publishing the groups it is sent, in order."""

    def __init__(self, spec: LocalSpec) -> None:
        mp = forkserver()
        jobs_r, jobs_w = mp.Pipe(duplex=False)
        results_r, results_w = mp.Pipe(duplex=False)
        with contextlib.suppress(OSError, AttributeError):  # a narrow pipe only makes it slower
            fcntl.fcntl(jobs_w.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.process = mp.Process(
            target=_serve,
            args=(jobs_r, results_w, str(spec.root), spec.backend_id, IDLE_SECONDS),
            name="levere-publisher",
            daemon=True,
        )
        self.process.start()
        jobs_r.close()
        results_w.close()
        self.jobs, self.results = jobs_w, results_r
        self.waiting = 0  # groups sent and not yet answered
        self.alive = True

    def send(self, group: list[Job]) -> bool:
        """Hand a group over; False if the child is gone."""
        try:
            self.jobs.send(group)
        except OSError:  # a broken pipe: it died
            self.alive = False
            return False
        self.waiting += 1
        return True

    def receive(self) -> list[Result] | None:
        """The results of the oldest group sent; None if the child died before answering."""
        self.waiting -= 1
        if not self.alive:
            return None
        try:
            results: list[Result] = self.results.recv()
            return results
        except (EOFError, OSError):
            self.alive = False
            return None

    def close(self) -> None:
        self.alive = False
        self.jobs.close()
        self.results.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


class _Publishers:
    """The children of this process, per storage folder; a batch borrows some and gives them back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[str, list[Publisher]] = {}
        self._count: Counter[str] = Counter()  # children alive, idle or borrowed, per folder

    def borrow(self, spec: LocalSpec, wanted: int) -> list[Publisher]:
        """Up to ``wanted`` children for ``spec``: idle ones, and new ones while there are fewer
        than the limit."""
        key = spec.model_dump_json()
        taken: list[Publisher] = []
        dead: list[Publisher] = []
        evicted: list[Publisher] = []
        with self._lock:
            # a service publishes to one area; children idle for another folder (settings changed,
            # or the many short-lived services of a test run) are not kept
            for other in [k for k in self._idle if k != key]:
                gone = self._idle.pop(other)
                self._count[other] -= len(gone)
                evicted += gone
            idle = self._idle.setdefault(key, [])
            while idle and len(taken) < wanted:
                publisher = idle.pop()
                (taken if publisher.process.is_alive() else dead).append(publisher)
            count = self._count[key] - len(dead)
            new = max(0, min(wanted - len(taken), MAX_CHILDREN_PER_CPU * (os.cpu_count() or 1) - count))
            self._count[key] = count + new
        for publisher in dead + evicted:
            publisher.close()
        for _ in range(new):
            try:
                taken.append(Publisher(spec))
            except OSError:
                log.exception("could not start a process to publish small files")
                with self._lock:
                    self._count[key] -= 1
        return taken

    def give_back(self, spec: LocalSpec, publishers: list[Publisher]) -> None:
        key = spec.model_dump_json()
        for publisher in publishers:
            if publisher.alive and publisher.waiting == 0:
                with self._lock:
                    self._idle.setdefault(key, []).append(publisher)
                continue
            publisher.close()
            with self._lock:
                self._count[key] -= 1

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
            for key, gone in idle.items():
                self._count[key] -= len(gone)
        for publishers in idle.values():
            for publisher in publishers:
                publisher.close()


publishers = _Publishers()
atexit.register(publishers.close_all)


def process_count(setting: int) -> int:
    """``ingest_processes`` as a number of processes (0: one per CPU); 1 means none."""
    return setting or os.cpu_count() or 1


def prepare(spec: BackendSpec, setting: int) -> threading.Thread | None:
    """Start, on a thread of its own, the fork server the children will come from (loading
    their modules takes ~0.15 s), so that a service's first batch does not wait for it; only
    where children will be used (a local area, more than one process)."""
    from levere.storage import LocalSpec

    if not isinstance(spec, LocalSpec) or process_count(setting) <= 1:
        return None
    from multiprocessing import forkserver as fork_server

    forkserver()  # sets what the fork server loads
    thread = threading.Thread(target=fork_server.ensure_running, name="levere-forkserver", daemon=True)
    thread.start()
    return thread


# --- one batch's writes ----------------------------------------------------------------------------


@dataclass
class Published(Generic[Tag]):
    """What became of the files handed over since the last :meth:`SmallWrites.drain`."""

    #: (tag, MD5, SHA-256) of each file stored, in the order they were handed over
    stored: list[tuple[Tag, str, str]] = field(default_factory=list)
    #: (tag, MD5, SHA-256) of each file whose bytes were not the expected ones (not written)
    mismatched: list[tuple[Tag, str, str]] = field(default_factory=list)
    #: tags of files not written because the storage failed first
    unwritten: list[Tag] = field(default_factory=list)
    error: LevereError | None = None


class SmallWrites(Generic[Tag]):
    """The small files of one batch, handed over in groups and collected in order."""

    def __init__(self, backend: Backend, spec: LocalSpec | None = None, processes: int = 0) -> None:
        """Publish on ``backend``, with ``processes`` children when ``spec`` (the same folder's) is
        given and there are more than one, or else on its threads, or else in the caller's.

        The children are borrowed when the first whole group is handed over: a batch smaller than
        a group (the checksum file of a run of large files, say) is written here, at once."""
        self.backend = backend
        self.spec = spec if processes > 1 else None
        self.processes = processes
        self.borrowed: list[Publisher] = []
        self.publishers: list[Publisher] = []
        threads = backend.small_write_threads if self.spec is None else 0
        self.threads = ThreadPoolExecutor(threads, "levere-small-files") if threads > 0 else None
        self.group: list[Job] = []
        self.tags: list[Tag] = []
        self.group_bytes = 0
        #: (group number, who has it, jobs, tags, bytes) of the groups handed over, oldest first
        self.in_flight: deque[tuple[int, Publisher | Future[list[Result]], list[Job], list[Tag], int]] = (
            deque()
        )
        self.in_flight_bytes = 0
        self.handed = 0  # groups handed over so far
        self.turn = 0
        self.done: Published[Tag] = Published()

    def add(self, tag: Tag, key: str, data: bytes, expect_md5: str, expect_sha256: str, label: str) -> None:
        """Hand a file over; raises the storage error that stopped earlier writes, if one did."""
        if self.done.error is not None:
            raise self.done.error
        self.group.append((key, data, expect_md5, expect_sha256, label))
        self.tags.append(tag)
        self.group_bytes += len(data)
        if len(self.group) >= GROUP_FILES or self.group_bytes >= GROUP_BYTES:
            if self.spec is not None and self.handed == 0 and not self.borrowed:
                self.borrowed = publishers.borrow(self.spec, self.processes)
                self.publishers = list(self.borrowed)
            self._hand_over()

    def _hand_over(self) -> None:
        if not self.group:
            return
        jobs, tags, nbytes = self.group, self.tags, self.group_bytes
        self.group, self.tags, self.group_bytes = [], [], 0
        while self.in_flight and self.in_flight_bytes + nbytes > IN_FLIGHT_BYTES:
            self._collect_oldest()
        holder: Publisher | Future[list[Result]] | None = self._publisher_for(jobs)
        if holder is None and self.threads is not None:
            holder = self.threads.submit(publish_group, self.backend, jobs)
        if holder is None:
            self._take(tags, publish_group(self.backend, jobs))
            return
        self.in_flight.append((self.handed, holder, jobs, tags, nbytes))
        self.handed += 1
        self.in_flight_bytes += nbytes

    def _publisher_for(self, jobs: list[Job]) -> Publisher | None:
        """The next child in turn that takes the group (after collecting what it answered if it
        has too many groups already); None when every child is gone."""
        while self.publishers:
            publisher = self.publishers[self.turn % len(self.publishers)]
            self.turn += 1
            while publisher.waiting >= PER_CHILD and self.in_flight:
                self._collect_oldest()
            if publisher.alive and publisher.send(jobs):
                return publisher
            self._lose(publisher)
        return None

    def _lose(self, publisher: Publisher) -> None:
        if publisher in self.publishers:
            log.warning("a process publishing small files stopped; its files are published here")
            self.publishers.remove(publisher)

    def _collect_oldest(self) -> None:
        _, holder, jobs, tags, nbytes = self.in_flight.popleft()
        self.in_flight_bytes -= nbytes
        if isinstance(holder, Publisher):
            results = holder.receive()
            if results is None:  # it died with the group: publish it here (the same bytes again)
                self._lose(holder)
                results = publish_group(self.backend, jobs)
        else:
            results = holder.result()
        self._take(tags, results)

    def _take(self, tags: list[Tag], results: list[Result]) -> None:
        for tag, (md5, sha256, kind, message) in zip(tags, results, strict=False):
            if not kind:
                self.done.stored.append((tag, md5, sha256))
            elif kind == "mismatch":
                self.done.mismatched.append((tag, md5, sha256))
            else:
                self.done.error = self.done.error or errors.from_name(kind, message)
                self.done.unwritten.append(tag)
        self.done.unwritten += tags[len(results) :]

    def mark(self) -> int:
        """Hand over what is gathered; :meth:`drain` with the number returned waits for everything
        added before this call and no more."""
        self._hand_over()
        return self.handed

    def drain(self, until: int | None = None) -> Published[Tag]:
        """Wait for everything handed over (or for what was added before :meth:`mark` returned
        ``until``); what became of it, and of anything else already back, since the last drain."""
        if until is None:
            self._hand_over()
        while self.in_flight and (until is None or self.in_flight[0][0] < until):
            self._collect_oldest()
        done, self.done = self.done, Published()
        return done

    def close(self) -> Published[Tag]:
        """Drain, and give the children back."""
        try:
            return self.drain()
        finally:
            if self.threads is not None:
                self.threads.shutdown()
            if self.spec is not None:
                publishers.give_back(self.spec, self.borrowed)
