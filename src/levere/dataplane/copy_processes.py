"""Copying many small files between local tiers in worker processes, to use every core.

Design notes
------------
* A 4 KiB file costs about 100 microseconds of Python to copy and verify (open, hash, write,
  publish). With threads, the GIL puts all of that on one core, and the job's own database work
  competes for it; a sync of tens of thousands of small files on local disks is then bound by one
  core while the system copy tools use all of them. Child processes each copy a group of files.
* Only local-to-local copies go here: object stores are bound by network latency, which threads
  already hide, and a bandwidth limit needs the one limiter that the job's threads share.
* Children (:mod:`levere.dataplane.process_pools`) build their two backends once from the tiers'
  specs.
* What crosses the process boundary is plain tuples, not exceptions (whose extra details do not
  survive pickling): each result names its error class and message.
* A pool lives as long as the process that uses it (a worker runs job after job); it is rebuilt
  when the tiers it copies between change or one of its processes died.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from levere.dataplane.copying import Expected, copy_or_adopt
from levere.dataplane.process_pools import PoolSlot
from levere.domain.errors import ChecksumMismatch, LevereError, NotFound
from levere.storage import Backend, LocalSpec, SmallWrite, build_backend

#: (replica id, source key, target key, size, md5, sha256, label, look first)
Job = tuple[str, str, str, int, str, str, str, bool]
#: (replica id, error class name or "", message, source damaged, copied)
Result = tuple[str, str, str, bool, bool]

#: files per task inside a child (see ``copy_chunk``)
GROUP = 16


@dataclass(frozen=True)
class Processes:
    pool: ProcessPoolExecutor
    count: int


_slot = PoolSlot()

# in a child: the two backends, built once, and threads to keep several reads in flight
_source: Backend | None = None
_target: Backend | None = None
_threads: ThreadPoolExecutor | None = None


def _start_child(source: LocalSpec, target: LocalSpec, threads: int) -> None:
    global _source, _target, _threads
    _source, _target = build_backend(source), build_backend(target)
    _threads = ThreadPoolExecutor(threads) if threads > 1 else None


def pool_for(source: LocalSpec, target: LocalSpec, processes: int, threads: int) -> Processes:
    """The processes copying from ``source`` to ``target``, each with ``threads`` threads (made
    on first use)."""
    key = (source.model_dump_json(), target.model_dump_json(), processes, threads)
    return Processes(_slot.get(key, processes, _start_child, (source, target, threads)), processes)


def discard_broken(processes: Processes) -> None:
    """Forget a pool one of whose processes died; the next use builds a new one."""
    _slot.discard(processes.pool)


def submit(processes: Processes, jobs: list[Job], write_once: bool) -> Future[list[Result]]:
    return processes.pool.submit(copy_chunk, jobs, write_once)


def copy_chunk(jobs: list[Job], write_once: bool) -> list[Result]:
    """In a child: copy a chunk of files with the child's threads, in groups, so that several
    (cold) reads are in flight while the Python work of the others goes on."""
    if _threads is None:
        return copy_group(jobs, write_once)
    groups = [jobs[i : i + GROUP] for i in range(0, len(jobs), GROUP)]
    return [r for part in _threads.map(copy_group, groups, [write_once] * len(groups)) for r in part]


def copy_group(jobs: list[Job], write_once: bool) -> list[Result]:
    """In a child: copy each file, verified against its manifest checksums."""
    assert _source is not None and _target is not None
    with _target.small_writes(write_once) as write:
        return _copy_each(_source, _target, jobs, write_once, write)


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
            # between folders: no versions to report back
            results.append((replica_id, "", "", False, copied.written))
        except (ChecksumMismatch, NotFound) as exc:
            results.append((replica_id, type(exc).__name__, exc.message, True, False))
        except LevereError as exc:
            results.append((replica_id, type(exc).__name__, exc.message, False, False))
        except OSError as exc:
            results.append((replica_id, "StorageUnavailable", f"copying {label} failed: {exc}", False, False))
    return results
