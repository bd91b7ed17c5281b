"""Copying one claimed batch between tiers: threads (or worker processes for many small files),
verification against the manifest, durability, and the lease heartbeat meanwhile.

The claiming and recording around it are :mod:`levere.dataplane.replication`'s.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.sql import Select

from levere.context import Context
from levere.dataplane import copy_processes
from levere.dataplane.copying import Expected, RateLimiter, copy_or_adopt
from levere.db.models import JobRun, Replica, StoredFile, utcnow
from levere.domain import errors
from levere.domain.errors import ChecksumMismatch, LevereError, NotFound, StorageUnavailable
from levere.domain.replicas import ReplicaState
from levere.domain.tiers import CopyPath, Tier, tier_words
from levere.storage import Backend, SmallWrite

log = logging.getLogger(__name__)
Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])

NO_SYNC = {"synchronize_session": False}
#: files smaller than this are copied in groups of GROUP per thread task
SMALL = 256 * 1024
GROUP = 16
#: a batch needs this many small files before they go to other processes
PROCESS_MIN = 128
#: files at least this big are made durable on their own (fsync) rather than by the batch flush
DURABLE_ALONE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Scope:
    run_id: str
    kind: str
    project_id: str
    delivery_id: str | None
    #: the tiers the job copies from and to, as the project's placement says
    path: CopyPath

    @property
    def target(self) -> Tier:
        return self.path.target

    @property
    def source(self) -> Tier:
        return self.path.source

    def files(self, query: Q) -> Q:
        query = query.where(StoredFile.project_id == self.project_id)
        if self.delivery_id is not None:
            query = query.where(StoredFile.delivery_id == self.delivery_id)
        return query


@dataclass(frozen=True)
class Item:
    replica_id: str
    file_id: str
    delivery_id: str
    label: str  # DELIVERY/PATH, for people
    key: str
    source_key: str
    expected: Expected
    attempts: int
    #: the version of the source copy to read (see ``Replica.version_id``)
    source_version: str | None = None

    @property
    def size(self) -> int:
        return self.expected.size


@dataclass
class Outcome:
    item: Item
    error: LevereError | None = None
    copied: bool = True
    source_damaged: bool = False
    #: the copy was made durable on its own (fsync), so the batch flush need not cover it
    durable: bool = False
    #: the version the target gave the copy, where it keeps versions
    version: str | None = None


def _copy_one(
    source: Backend,
    target: Backend,
    item: Item,
    scope: Scope,
    limiter: RateLimiter | None,
    write: SmallWrite | None = None,
) -> Outcome:
    # a big file is made durable on its own (fsync, its write-back started early); the small
    # ones of a batch together, by one flush of the whole file system
    alone = item.size >= DURABLE_ALONE
    try:
        copied = copy_or_adopt(
            source, item.source_key, target, item.key, item.expected,
            write_once=scope.path.write_once, durable=alone, look_first=item.attempts > 1,
            limiter=limiter, label=item.label, write=None if alone else write,
            source_version=item.source_version,
        )  # fmt: skip
        return Outcome(item, copied=copied.written, durable=alone and copied.written, version=copied.version)
    except ChecksumMismatch as exc:
        return Outcome(item, error=exc, source_damaged=True)
    except NotFound:
        missing = NotFound(f"{item.label} is missing from {tier_words(scope.source)}")
        return Outcome(item, error=missing, source_damaged=True)
    except LevereError as exc:
        return Outcome(item, error=exc)
    except OSError as exc:
        return Outcome(item, error=StorageUnavailable(f"copying {item.label} failed: {exc}"))


@contextmanager
def leased(
    ctx: Context, owner: str, state: ReplicaState = ReplicaState.COPYING, run_id: str | None = None
) -> Iterator[None]:
    """Renew ``owner``'s leases (on rows in ``state``) in the background while the block runs, and
    show on the job (``run_id``) that a worker is alive on it."""
    lease = ctx.settings.sync.lease_seconds
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease / 3):
            try:
                with ctx.tx() as session:
                    session.execute(
                        update(Replica)
                        .where(Replica.lease_owner == owner, Replica.state == state)
                        .values(lease_expires_at=utcnow() + timedelta(seconds=lease)),
                        execution_options=NO_SYNC,
                    )
                    if run_id is not None:
                        session.execute(
                            update(JobRun).where(JobRun.id == run_id).values(updated_at=utcnow()),
                            execution_options=NO_SYNC,
                        )
            except Exception:  # the next beat tries again; a lost lease only costs a repeated copy
                log.exception("renewing the lease of %s failed", owner)

    thread = threading.Thread(target=beat, name="levere-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def copy_batch(
    ctx: Context,
    pool: ThreadPoolExecutor,
    scope: Scope,
    items: list[Item],
    owner: str,
    limiter: RateLimiter | None,
) -> list[Outcome]:
    """Copy one claimed batch and make it durable, keeping its leases alive meanwhile."""
    source, target = ctx.backend(scope.source), ctx.backend(scope.target)
    with leased(ctx, owner, run_id=scope.run_id):
        copying = start_copies(pool, source, target, scope, items, limiter)
        return made_durable(target, scope, copying())


def start_copies(
    pool: ThreadPoolExecutor,
    source: Backend,
    target: Backend,
    scope: Scope,
    items: list[Item],
    limiter: RateLimiter | None,
    processes: copy_processes.Processes | None = None,
) -> Callable[[], list[Outcome]]:
    """Hand the batch to the copy threads (many small files, where both backends gain from worker
    processes: to the copy processes);
    returns what waits for its outcomes (in no particular order). Small files go in groups: one
    task per 4 KiB file would cost as much as copying it."""

    def copy_here(group: list[Item]) -> list[Outcome]:
        with target.small_writes(scope.path.write_once) as write:
            return [_copy_one(source, target, item, scope, limiter, write) for item in group]

    waiting: list[Callable[[], list[Outcome]]] = []
    small = [i for i in items if i.size < SMALL]
    if processes is not None and len(small) >= PROCESS_MIN:
        items = [i for i in items if i.size >= SMALL]
        size = copy_processes.MESSAGE_FILES
        chunks = [small[n : n + size] for n in range(0, len(small), size)]
        jobs = [
            [(i.replica_id, i.source_key, i.key, i.size, i.expected.md5, i.expected.sha256, i.label, i.attempts > 1)
             for i in chunk]
            for chunk in chunks
        ]  # fmt: skip
        # the processes are fed and read on a thread of their own, beside the copy threads
        feeder = ThreadPoolExecutor(1, thread_name_prefix="levere-copy-processes")
        answers = feeder.submit(copy_processes.run, processes, jobs, scope.path.write_once)
        feeder.shutdown(wait=False)
        waiting.append(functools.partial(_outcomes, answers, chunks, scope, copy_here))
    groups: list[list[Item]] = []
    for item in items:
        if groups and item.size < SMALL and len(groups[-1]) < GROUP and groups[-1][-1].size < SMALL:
            groups[-1].append(item)
        else:
            groups.append([item])
    waiting += [pool.submit(copy_here, group).result for group in groups]
    return lambda: [outcome for wait in waiting for outcome in wait()]


def _outcomes(
    answers: Future[list[list[copy_processes.Result] | None]],
    chunks: list[list[Item]],
    scope: Scope,
    copy_here: Callable[[list[Item]], list[Outcome]],
) -> list[Outcome]:
    outcomes = []
    for chunk, results in zip(chunks, answers.result(), strict=True):
        if results is None:
            # its process died (the OOM killer, a signal): nothing of this chunk was recorded, so
            # copy it here (the next batch starts a new process)
            log.warning("a copy process died; copying its %d file(s) in this process", len(chunk))
            outcomes += copy_here(chunk)
            continue
        for item, (_, kind, message, damaged, copied) in zip(chunk, results, strict=True):
            if not kind:
                outcomes.append(Outcome(item, copied=copied))
                continue
            if kind == "NotFound":
                error: LevereError = NotFound(f"{item.label} is missing from {tier_words(scope.source)}")
            else:
                error = errors.from_name(kind, message)
            outcomes.append(Outcome(item, error=error, source_damaged=damaged))
    return outcomes


def process_pool(
    ctx: Context, source: Backend, target: Backend, limiter: RateLimiter | None
) -> copy_processes.Processes | None:
    """Processes for copying many small files, where both backends gain from them (see
    :mod:`levere.dataplane.copy_processes`); None to copy with threads only."""
    settings = ctx.settings.sync
    count = settings.processes or os.cpu_count() or 1
    if limiter is not None:
        return None
    return copy_processes.pool_for(source, target, count, max(1, settings.threads // count))


def made_durable(target: Backend, scope: Scope, outcomes: list[Outcome]) -> list[Outcome]:
    if any(o.error is None and not o.durable for o in outcomes):
        try:
            # adopted objects too: an earlier attempt may have published them without a flush
            target.flush()
        except (OSError, StorageUnavailable) as exc:
            error = StorageUnavailable(f"{tier_words(scope.target)} could not make the copies durable: {exc}")
            for outcome in outcomes:
                if outcome.error is None:
                    outcome.error = error
    return outcomes
