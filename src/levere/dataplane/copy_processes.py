"""Copying many small files between tiers in worker processes, to use every core.

Design notes
------------
* A small file costs more Python to copy and verify (open, hash, write, publish) than its bytes
  cost the disk. With threads, the GIL puts all of that on one core, and the job's own database
  work competes for it; a sync of tens of thousands of small files on local disks is then bound by
  one core while the system copy tools use all of them. Worker processes
  (:mod:`levere.dataplane.process_pools`) each copy a message of files.
* Only between backends that both say so (``Capability.WORKER_PROCESSES``): object stores are
  bound by network latency, which threads already hide, and a bandwidth limit needs the one
  limiter that the job's threads share.
* Children build their two backends once from the tiers' recipes (the same factory and wrappers
  as the service), and keep a few threads to have several reads in flight.
* What crosses the process boundary is plain tuples, not exceptions (whose extra details do not
  survive pickling): each result names its error class and message.
* A message holds at most :data:`MESSAGE_FILES` files, so that the answers in flight fit in a
  child's answer pipe (:mod:`levere.dataplane.process_pools`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from levere.dataplane import process_pools
from levere.dataplane.copying import Expected, copy_or_adopt
from levere.dataplane.process_pools import Worker
from levere.domain.errors import ChecksumMismatch, LevereError, NotFound
from levere.storage.base import Backend, Capability, SmallWrite
from levere.storage.factory import Recipe, build

#: (replica id, source key, target key, size, md5, sha256, label, look first)
Job = tuple[str, str, str, int, str, str, str, bool]
#: (replica id, error class name or "", message, source damaged, copied)
Result = tuple[str, str, str, bool, bool]
#: (the files, write once)
Message = tuple[list[Job], bool]

PURPOSE = "copier"
#: files per message to a child
MESSAGE_FILES = 128
#: files per task of a child's threads (see ``copy_chunk``)
GROUP = 16


@dataclass(frozen=True)
class Processes:
    """Worker processes copying from one backend to another, borrowed for each batch; one batch
    at a time uses them (a sync queues the next batch while one copies), so a sync never runs
    more than ``count`` of them."""

    source: Recipe
    target: Recipe
    count: int
    threads: int
    turn: threading.Lock = field(default_factory=threading.Lock, compare=False)


def pool_for(source: Backend, target: Backend, processes: int, threads: int) -> Processes | None:
    """Processes copying from ``source`` to ``target``, each with ``threads`` threads; None where
    either backend does not gain from them or cannot be built again in one."""
    if processes <= 1 or source.recipe is None or target.recipe is None:
        return None
    if not all(Capability.WORKER_PROCESSES in b.capabilities for b in (source, target)):
        return None
    return Processes(source.recipe, target.recipe, processes, threads)


def _copying_child(source: Recipe, target: Recipe, threads: int) -> Callable[[Message], list[Result]]:
    """In a child: the two backends, built once, and threads to keep several reads in flight."""
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    return functools.partial(copy_chunk, build(source), build(target), pool)


def run(processes: Processes, chunks: list[list[Job]], write_once: bool) -> list[list[Result] | None]:
    """Copy each chunk (at most :data:`MESSAGE_FILES` files) in the processes; the results in the
    order of the chunks, None for a chunk whose process died before answering (nothing of it is
    known: the caller copies it itself)."""
    key = (processes.source, processes.target, processes.threads)
    args = (processes.source, processes.target, processes.threads)
    answers: list[list[Result] | None] = [None] * len(chunks)
    in_flight: list[tuple[int, Worker]] = []
    with processes.turn:
        borrowed = process_pools.workers.borrow(PURPOSE, key, processes.count, _copying_child, args)
        try:
            _run(borrowed, chunks, write_once, in_flight, answers)
        finally:
            process_pools.workers.give_back(PURPOSE, key, borrowed)
    return answers


def _run(
    borrowed: list[Worker],
    chunks: list[list[Job]],
    write_once: bool,
    in_flight: list[tuple[int, Worker]],
    answers: list[list[Result] | None],
) -> None:
    for n, chunk in enumerate(chunks):
        alive = [w for w in borrowed if w.alive]
        if not alive:
            break
        worker = alive[n % len(alive)]
        while worker.waiting >= process_pools.PER_CHILD:
            _collect(in_flight, answers)
        if worker.send((chunk, write_once)):
            in_flight.append((n, worker))
    while in_flight:
        _collect(in_flight, answers)


def _collect(in_flight: list[tuple[int, Worker]], answers: list[list[Result] | None]) -> None:
    n, worker = in_flight.pop(0)
    answers[n] = worker.receive()


def copy_chunk(
    source: Backend, target: Backend, threads: ThreadPoolExecutor | None, message: Message
) -> list[Result]:
    """In a child: copy a chunk of files with the child's threads, in groups, so that several
    (cold) reads are in flight while the Python work of the others goes on."""
    jobs, write_once = message
    if threads is None:
        return copy_group(source, target, jobs, write_once)
    groups = [jobs[i : i + GROUP] for i in range(0, len(jobs), GROUP)]
    copy = functools.partial(copy_group, source, target, write_once=write_once)
    return [r for part in threads.map(copy, groups) for r in part]


def copy_group(source: Backend, target: Backend, jobs: list[Job], write_once: bool) -> list[Result]:
    """Copy each file, verified against its manifest checksums."""
    with target.small_writes(write_once) as write:
        return _copy_each(source, target, jobs, write_once, write)


def _copy_each(
    source: Backend, target: Backend, jobs: list[Job], write_once: bool, write: SmallWrite
) -> list[Result]:
    results: list[Result] = []
    for replica_id, source_key, target_key, size, md5, sha256, label, look_first in jobs:
        try:
            copied = copy_or_adopt(
                source, source_key, target, target_key, Expected(size, md5, sha256),
                write_once=write_once, durable=False, look_first=look_first, label=label, write=write,
            )  # fmt: skip
            # backends worth worker processes keep no versions to report back
            results.append((replica_id, "", "", False, copied.written))
        except (ChecksumMismatch, NotFound) as exc:
            results.append((replica_id, type(exc).__name__, exc.message, True, False))
        except LevereError as exc:
            results.append((replica_id, type(exc).__name__, exc.message, False, False))
        except OSError as exc:
            results.append((replica_id, "StorageUnavailable", f"copying {label} failed: {exc}", False, False))
    return results
