"""Publishing the small files of a batch: each hashed, checked against the checksums its member
carried and written, a group at a time, away from the thread that parses the stream.

Design notes
------------
* Per small file, publishing (system calls and two hashes) costs more than everything else the
  service does for it (the figures are in docs/benchmarks.md). On the request thread it would run
  one after the other with the parsing, and helper threads do not help a local disk: each system
  call gives Python's lock up and waits to get it back from the parsing thread, so the threads and
  the parser take turns on one core.
* So, by what the backend offers: one whose writes are bound by this machine's CPU
  (``Capability.WORKER_PROCESSES``, a local folder) gets worker processes
  (:mod:`levere.dataplane.process_pools`; ``ingest_processes``, one per CPU by default), each
  building the same backend from its recipe, wrappers included, which hash, check and write groups
  of files on their own cores while the request thread parses the next members; an object store
  gets threads (its round trips wait on the network, not on the lock); one CPU, or
  ``ingest_processes = 1``, writes in the caller's thread.
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
* On the secure tier's encrypting layer the files go through its ``sealed_writes``: each is
  encrypted under a fresh data key, and what the write returns (the key and the body's checksum
  and size, :class:`~levere.storage.encrypting.SealedObject`) comes back with the file's result,
  for the caller to record its header. That layer offers no worker processes: threads write.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from levere.dataplane import process_pools
from levere.dataplane.process_pools import Worker
from levere.domain import errors
from levere.domain.errors import LevereError
from levere.storage.base import Backend, Capability, SmallWrite
from levere.storage.encrypting import SealedObject, SealedWrite, encrypting
from levere.storage.factory import Recipe, build

log = logging.getLogger(__name__)

#: (storage key, the file's bytes, expected MD5 or "", expected SHA-256 or "", path for messages)
Job = tuple[str, bytes, str, str, str]
#: (MD5, SHA-256, "" if stored / "mismatch" if not written / an error class name, message, and for
#: a file stored through the encrypting layer its SealedObject, else None)
Result = tuple[str, str, str, str, SealedObject | None]

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
    zone = encrypting(backend)
    if zone is not None:
        with zone.sealed_writes() as sealed:
            return _publish(sealed, jobs)
    with backend.small_writes() as write:
        return _publish(write, jobs)


def _publish(write: SmallWrite | SealedWrite, jobs: list[Job]) -> list[Result]:
    results: list[Result] = []
    for key, data, expect_md5, expect_sha256, label in jobs:
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        sha256 = hashlib.sha256(data).hexdigest()
        if (expect_md5 and expect_md5 != md5) or (expect_sha256 and expect_sha256 != sha256):
            results.append((md5, sha256, "mismatch", "", None))
            continue
        try:
            out = write(key, data)
        except LevereError as exc:
            results.append((md5, sha256, type(exc).__name__, exc.message, None))
            break
        except OSError as exc:
            results.append(
                (md5, sha256, "StorageUnavailable", f"could not store {label}: {exc.strerror or exc}", None)
            )
            break
        except Exception as exc:  # reported once the files stored before it are recorded
            log.exception("storing %s failed", label)
            message = f"could not store {label}: {type(exc).__name__}: {exc}"
            results.append((md5, sha256, "StorageUnavailable", message, None))
            break
        results.append((md5, sha256, "", "", out if isinstance(out, SealedObject) else None))
    return results


# --- the child processes (:mod:`levere.dataplane.process_pools`) ------------------------------------

PURPOSE = "publisher"


def _publishing_child(recipe: Recipe) -> Callable[[list[Job]], list[Result]]:
    """In a child: the backend, built once from the area's recipe, and what publishes a group."""
    return functools.partial(publish_group, build(recipe))


def process_count(setting: int) -> int:
    """``ingest_processes`` as a number of processes (0: one per CPU); 1 means none."""
    return setting or os.cpu_count() or 1


def uses_processes(backend: Backend, setting: int) -> bool:
    """Whether small files published on ``backend`` go to worker processes: where the backend
    says its writes are worth spreading over processes and can be built again in one, and
    ``ingest_processes`` leaves more than one."""
    return (
        Capability.WORKER_PROCESSES in backend.capabilities
        and backend.recipe is not None
        and process_count(setting) > 1
    )


# --- one batch's writes ----------------------------------------------------------------------------


@dataclass
class Published(Generic[Tag]):
    """What became of the files handed over since the last :meth:`SmallWrites.drain`."""

    #: (tag, MD5, SHA-256, SealedObject or None) of each file stored, in the order they were
    #: handed over (the SealedObject on the secure tier's encrypting layer)
    stored: list[tuple[Tag, str, str, SealedObject | None]] = field(default_factory=list)
    #: (tag, MD5, SHA-256) of each file whose bytes were not the expected ones (not written)
    mismatched: list[tuple[Tag, str, str]] = field(default_factory=list)
    #: tags of files not written because the storage failed first
    unwritten: list[Tag] = field(default_factory=list)
    error: LevereError | None = None


class SmallWrites(Generic[Tag]):
    """The small files of one batch, handed over in groups and collected in order."""

    def __init__(self, backend: Backend, processes: int = 1) -> None:
        """Publish on ``backend``: with ``processes`` children where it can use them
        (:func:`uses_processes`), or else on its threads, or else in the caller's.

        The children are borrowed when the first whole group is handed over: a batch smaller than
        a group (the checksum file of a run of large files, say) is written here, at once."""
        self.backend = backend
        self.recipe = backend.recipe if uses_processes(backend, processes) else None
        self.processes = process_count(processes)
        self.borrowed: list[Worker] = []
        self.publishers: list[Worker] = []
        threads = backend.small_write_threads if self.recipe is None else 0
        self.threads = ThreadPoolExecutor(threads, "levere-small-files") if threads > 0 else None
        self.group: list[Job] = []
        self.tags: list[Tag] = []
        self.group_bytes = 0
        #: (group number, who has it, jobs, tags, bytes) of the groups handed over, oldest first
        self.in_flight: deque[tuple[int, Worker | Future[list[Result]], list[Job], list[Tag], int]] = deque()
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
            if self.recipe is not None and self.handed == 0 and not self.borrowed:
                self.borrowed = process_pools.workers.borrow(
                    PURPOSE, self.recipe, self.processes, _publishing_child, (self.recipe,)
                )
                self.publishers = list(self.borrowed)
            self._hand_over()

    def _hand_over(self) -> None:
        if not self.group:
            return
        jobs, tags, nbytes = self.group, self.tags, self.group_bytes
        self.group, self.tags, self.group_bytes = [], [], 0
        while self.in_flight and self.in_flight_bytes + nbytes > IN_FLIGHT_BYTES:
            self._collect_oldest()
        holder: Worker | Future[list[Result]] | None = self._publisher_for(jobs)
        if holder is None and self.threads is not None:
            holder = self.threads.submit(publish_group, self.backend, jobs)
        if holder is None:
            self._take(tags, publish_group(self.backend, jobs))
            return
        self.in_flight.append((self.handed, holder, jobs, tags, nbytes))
        self.handed += 1
        self.in_flight_bytes += nbytes

    def _publisher_for(self, jobs: list[Job]) -> Worker | None:
        """The next child in turn that takes the group (after collecting what it answered if it
        has too many groups already); None when every child is gone."""
        while self.publishers:
            publisher = self.publishers[self.turn % len(self.publishers)]
            self.turn += 1
            while publisher.waiting >= process_pools.PER_CHILD and self.in_flight:
                self._collect_oldest()
            if publisher.alive and publisher.send(jobs):
                return publisher
            self._lose(publisher)
        return None

    def _lose(self, publisher: Worker) -> None:
        if publisher in self.publishers:
            log.warning("a process publishing small files stopped; its files are published here")
            self.publishers.remove(publisher)

    def _collect_oldest(self) -> None:
        _, holder, jobs, tags, nbytes = self.in_flight.popleft()
        self.in_flight_bytes -= nbytes
        if isinstance(holder, Worker):
            results: list[Result] | None = holder.receive()
            if results is None:  # it died with the group: publish it here (the same bytes again)
                self._lose(holder)
                results = publish_group(self.backend, jobs)
        else:
            results = holder.result()
        self._take(tags, results)

    def _take(self, tags: list[Tag], results: list[Result]) -> None:
        for tag, (md5, sha256, kind, message, sealed) in zip(tags, results, strict=False):
            if not kind:
                self.done.stored.append((tag, md5, sha256, sealed))
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
            if self.recipe is not None:
                process_pools.workers.give_back(PURPOSE, self.recipe, self.borrowed)
