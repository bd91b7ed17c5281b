"""The copy engine behind sync (landing area -> long-term) and restore (long-term -> landing area),
along the copy paths the placement policy gives each project (:mod:`levere.domain.tiers`).

Design notes
------------
* Work is claimed in batches, in one short transaction: a conditional UPDATE moves replicas from
  "pending" or "failed" (or "copying" with an expired lease) to "copying" under a fresh lease token,
  and only the rows it really changed (RETURNING) belong to this worker. Two workers therefore never
  copy the same file at once: on PostgreSQL the second UPDATE waits for the first's row locks and
  re-checks its condition; SQLite has one writer at a time. A worker killed mid-copy leaves rows in
  "copying" whose lease runs out; the next claim takes them over.
* Quota: a replica in "copying" always holds a reservation of its file's size on the target tier.
  Claiming a pending or failed replica reserves (over quota: the replica fails with the numbers);
  taking over an expired lease does not (the reservation came with the row); becoming "present"
  settles it and failing releases it. Every transition out of "copying" is conditional on the lease
  token, so a worker that lost its lease changes nothing, and usage stays exact.
* Durability: local copies are committed without an fsync each and made durable by one syncfs per
  batch, before the batch becomes "present" in one UPDATE. A replica is "present" only once its
  bytes are durable and matched the manifest while they were copied.
* After a crash the target may hold an object whose replica is not "present" (published but not
  recorded, or not yet durable): a retry re-reads it, adopts it if it matches, replaces it if not.
* While a batch copies, a heartbeat thread renews its lease, so a long file never loses it.
* Failed replicas are retried by later claims, but not within the same pass (``since``), so a
  replica refused for want of quota does not spin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.dataplane.batch_copy import (
    NO_SYNC,
    Item,
    Outcome,
    Scope,
    leased,
    made_durable,
    process_pool,
    start_copies,
)
from levere.dataplane.claiming import (
    BATCH_FILES,
    STORED_SIZE,
    candidates,
    claim,
    fail,
    grouped,
    has_source,
    progress,
)
from levere.dataplane.copying import RateLimiter
from levere.dataplane.leases import new_owner, process_prefix, released_owner
from levere.db.models import Delivery, JobRun, Project, Replica, StoredFile, replicas_table, utcnow
from levere.domain.errors import LevereError, NotFound, StorageFull, StorageUnavailable
from levere.domain.jobruns import FINISHED, JobKind, JobRunState, job_run_sources, job_run_transition
from levere.domain.replicas import ReplicaState, replica_sources
from levere.domain.tiers import CopyPath, ProjectKind, restore_path, sync_path, tier_words
from levere.domain.units import count
from levere.services import audit, quotas
from levere.services.sync_notices import announce_failures, announce_if_synced

log = logging.getLogger(__name__)

#: each copy job's path from the project's kind: sync makes long-term copies, restore makes the
#: landing area's copies again
COPY_PATHS: dict[str, Callable[[ProjectKind], CopyPath]] = {
    JobKind.SYNC: sync_path,
    JobKind.RESTORE: restore_path,
}
#: list lengths kept in a run's report
REPORT_ITEMS = 50


@dataclass
class LaneResult:
    #: other workers still hold leases in this run's scope: look again after this many seconds
    wait_seconds: float = 0.0
    #: this process is stopping: the job is not done and goes back to the queue for the next worker
    resume: bool = False


# --- copying ------------------------------------------------------------------------------------


def finish(ctx: Context, session: Session, scope: Scope, owner: str, outcomes: list[Outcome]) -> None:
    """Record a copied batch: verified copies become present (quota settled), failures failed."""
    now = utcnow()
    sizes = {o.item.replica_id: o.item.size for o in outcomes}
    good = [o.item.replica_id for o in outcomes if o.error is None]
    present: list[str] = []
    if good:
        present = list(
            session.execute(
                update(Replica)
                .where(
                    Replica.id.in_(good),
                    Replica.lease_owner == owner,
                    Replica.state.in_(replica_sources(ReplicaState.PRESENT, ReplicaState.COPYING)),
                )
                .values(
                    state=ReplicaState.PRESENT,
                    reason="",
                    verified_at=now,
                    lease_expires_at=None,
                    updated_at=now,
                )
                .returning(Replica.id),
                execution_options=NO_SYNC,
            ).scalars()
        )
        if present:
            quotas.settle(session, scope.project_id, scope.target, sum(sizes[i] for i in present))
    done = set(present)
    _record_versions(session, [o for o in outcomes if o.item.replica_id in done])
    failed: list[str] = []
    bad = [(o.item, o.error.message) for o in outcomes if o.error is not None]
    for message, group in grouped(bad).items():
        failed += fail(session, owner, group, message, now)
    if failed:
        quotas.release(session, scope.project_id, scope.target, sum(sizes[i] for i in failed))
    for outcome in outcomes:
        if outcome.source_damaged and outcome.error is not None:
            _mark_source_damaged(session, scope, outcome.item, outcome.error.message, now)
    progress(session, scope.run_id, len(present), sum(sizes[i] for i in present), len(failed))
    if scope.kind == JobKind.SYNC and present:
        touched = {o.item.delivery_id for o in outcomes if o.item.replica_id in done}
        for delivery_id in sorted(touched):
            announce_if_synced(ctx, session, delivery_id, scope.target)


def _record_versions(session: Session, outcomes: list[Outcome]) -> None:
    """Remember which version of each new copy levere wrote (a store that keeps versions)."""
    rows = [{"rid": o.item.replica_id, "v": o.version} for o in outcomes if o.version is not None]
    if rows:  # claims cleared the column: a copy without a version needs nothing here
        t = replicas_table
        session.execute(t.update().where(t.c.id == bindparam("rid")).values(version_id=bindparam("v")), rows)


def _mark_source_damaged(session: Session, scope: Scope, item: Item, reason: str, now: datetime) -> None:
    session.execute(
        update(Replica)
        .where(
            Replica.file_id == item.file_id,
            Replica.tier == scope.source,
            Replica.state.in_(replica_sources(ReplicaState.DAMAGED, ReplicaState.PRESENT)),
        )
        .values(state=ReplicaState.DAMAGED, reason=reason, updated_at=now),
        execution_options=NO_SYNC,
    )
    audit.record(
        session, None, "replica.damaged", "file", item.file_id,
        after={"path": item.label, "tier": scope.source, "reason": reason},
    )  # fmt: skip


# --- one pass of a job --------------------------------------------------------------------------


def scope_of(session: Session, run: JobRun) -> Scope:
    """What a copy job copies, and from which tier to which (NoPlacement if the project has none)."""
    project = session.get(Project, run.project_id) if run.project_id is not None else None
    if project is None or run.kind not in COPY_PATHS:
        raise NotFound(f"job {run.id} is not a copy job")
    path = COPY_PATHS[run.kind](ProjectKind.of(project.sensitive))
    return Scope(run.id, run.kind, project.id, run.delivery_id, path)


def _start(ctx: Context, run_id: str, since: datetime) -> Scope | None:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        if run is None or run.state in FINISHED:
            return None
        scope = scope_of(session, run)
        if run.state == JobRunState.QUEUED:
            count, size = session.execute(
                candidates(scope, utcnow(), since).with_only_columns(
                    func.count(), func.coalesce(func.sum(STORED_SIZE), 0)
                )
            ).one()
            run.files_total, run.bytes_total = count, size
            run.started_at = utcnow()
        run.state = job_run_transition(run.state, JobRunState.RUNNING, f"job {run.id}")
        run.next_attempt_at = None
        return scope


def run_lane(ctx: Context, run_id: str) -> LaneResult:
    """Claim, copy and record batches of a sync or restore job until none is left.

    Raises ``StorageUnavailable`` (or ``StorageFull``: copying more files into a full tier would
    only fail each of them) after recording the batch it happened in, for the caller to retry
    later; the next pass retries the failed files.
    """
    since = utcnow()
    scope = _start(ctx, run_id, since)
    if scope is None:
        return LaneResult()
    settings = ctx.settings.sync
    limiter = RateLimiter(settings.bandwidth_limit) if settings.bandwidth_limit else None
    owner = new_owner()
    # copies are of stored objects: written in the target tier's stored form (Backend.stored_form)
    source, target = ctx.backend(scope.source), ctx.backend(scope.target).stored_form()

    def next_batch() -> list[Item]:
        if ctx.stopping.is_set():
            return []  # the process is stopping: what is not claimed yet is left to the next worker
        with ctx.tx() as session:
            return claim(
                session, scope, owner, target.backend_id, settings.lease_seconds, since,
                limit_files=settings.batch_files,
            )  # fmt: skip

    def settle(outcomes: list[Outcome]) -> LevereError | None:
        """Make a copied batch durable and record it; the storage fault it met, if any."""
        outcomes = made_durable(target, scope, outcomes)
        with ctx.tx() as session:
            finish(ctx, session, scope, owner, outcomes)
        return _fault(outcomes)

    # The database work and the flushes overlap the copying: the next batch is leased while
    # this one copies and queued at once (the copiers never wait between batches), and each
    # batch is flushed and recorded by the recorder thread while the following ones copy.
    down: LevereError | None = None
    with (
        leased(ctx, owner, run_id=scope.run_id),
        ThreadPoolExecutor(settings.threads, thread_name_prefix="levere-sync") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="levere-record") as recorder,
    ):
        recording: Future[LevereError | None] | None = None
        processes = process_pool(ctx, source, target, limiter)
        items = next_batch()
        copying = start_copies(pool, source, target, scope, items, limiter, processes) if items else None
        while copying is not None and down is None:
            following = next_batch()
            queued = (
                start_copies(pool, source, target, scope, following, limiter, processes)
                if following
                else None
            )
            outcomes = copying()
            if recording is not None:
                down = recording.result()
            recording = recorder.submit(settle, outcomes)
            down = down or _fault(outcomes)
            copying = queued
        if copying is not None:  # stopped by a fault: the batch in flight meets it too; record it
            outcomes = copying()
            if recording is not None:
                recording.result()
            recording = recorder.submit(settle, outcomes)
        if recording is not None:
            down = recording.result() or down
    if isinstance(down, StorageFull):
        raise StorageFull(f"{tier_words(scope.target)} is full: {down.message}", **down.details)
    if down is not None:
        raise down
    if ctx.stopping.is_set():
        return LaneResult(resume=True)
    with ctx.tx() as session:
        wait = _wait_before_closing(session, scope)
        if wait:
            return LaneResult(wait_seconds=wait)
        finalize(ctx, session, scope)
    return LaneResult()


def _fault(outcomes: list[Outcome]) -> LevereError | None:
    """The storage fault that stops a lane: a tier unreachable, or full."""
    return next((o.error for o in outcomes if isinstance(o.error, (StorageUnavailable, StorageFull))), None)


def release_leases_of_this_process(ctx: Context) -> int:
    """Give up every copy lease this process holds, for a worker that stops before its copies end.

    The rows stay "copying" with their reservations, and their lease has expired, so the next
    claim takes them over at once instead of after ``lease_seconds``; the lease owner changes, so
    a late outcome or heartbeat of the abandoned copies changes nothing. Returns the rows released.
    """
    prefix = process_prefix()
    now = utcnow()
    with ctx.tx() as session:
        result = session.execute(
            update(Replica)
            .where(
                Replica.state == ReplicaState.COPYING, Replica.lease_owner.startswith(prefix, autoescape=True)
            )
            .values(lease_owner=released_owner(), lease_expires_at=now - timedelta(seconds=1), updated_at=now)
        )
    released: int = result.rowcount  # type: ignore[attr-defined]
    if released:
        log.info("released the leases of %d file(s) being copied", released)
    return released


def _wait_before_closing(session: Session, scope: Scope) -> float:
    """Seconds to wait before this job may close: 0 when no work in its scope is left to anyone.

    One statement, so one snapshot: on PostgreSQL (read committed) two separate looks could each
    miss rows that another worker moves from "pending" to "copying" between them, and the job
    would close while they still copy. Rows leased to a live worker: look again once its lease
    could have run out. Rows pending (another worker is claiming them this very moment, skipped as
    locked) or leased to a dead worker (takeable now): look again shortly.
    """
    now = utcnow()
    live = and_(Replica.state == ReplicaState.COPYING, Replica.lease_expires_at >= now)
    takeable = or_(
        and_(Replica.state == ReplicaState.PENDING, has_source(scope)),
        and_(Replica.state == ReplicaState.COPYING, Replica.lease_expires_at < now),
    )
    soonest, waiting = session.execute(
        scope.files(
            select(
                func.min(case((live, Replica.lease_expires_at))),
                func.count(case((takeable, 1))),
            )
            .select_from(Replica)
            .join(StoredFile, StoredFile.id == Replica.file_id)
            .where(
                Replica.tier == scope.target, Replica.state.in_((ReplicaState.PENDING, ReplicaState.COPYING))
            )
        )
    ).one()
    if soonest is not None:
        return max(float((soonest - now).total_seconds()), 0.0) + 1.0
    return 1.0 if waiting else 0.0


def finalize(ctx: Context, session: Session, scope: Scope, error: str = "") -> bool:
    """Close the job with its report (once); True for the caller that closed it."""
    now = utcnow()
    # work that no pass can do: nothing intact to copy from
    stuck = scope.files(
        select(Replica.id)
        .join(StoredFile, StoredFile.id == Replica.file_id)
        .where(Replica.tier == scope.target, Replica.state == ReplicaState.PENDING, ~has_source(scope))
    )
    stuck_ids = list(session.execute(stuck).scalars())
    for start in range(0, len(stuck_ids), BATCH_FILES):
        session.execute(
            update(Replica)
            .where(
                Replica.id.in_(stuck_ids[start : start + BATCH_FILES]),
                Replica.state.in_(replica_sources(ReplicaState.FAILED, ReplicaState.PENDING)),
            )
            .values(
                state=ReplicaState.FAILED,
                reason=f"no intact copy on {tier_words(scope.source)} to copy from",
                updated_at=now,
            ),
            execution_options=NO_SYNC,
        )
    states = {
        state: {"files": n, "bytes": int(b)}
        for state, n, b in session.execute(
            scope.files(
                select(Replica.state, func.count(), func.coalesce(func.sum(STORED_SIZE), 0))
                .join(StoredFile, StoredFile.id == Replica.file_id)
                .where(Replica.tier == scope.target)
                .group_by(Replica.state)
            )
        ).all()
    }
    failures = session.execute(
        scope.files(
            select(Delivery.name, StoredFile.path, Replica.reason)
            .join(StoredFile, StoredFile.id == Replica.file_id)
            .join(Delivery, Delivery.id == StoredFile.delivery_id)
            .where(Replica.tier == scope.target, Replica.state == ReplicaState.FAILED)
            .order_by(Delivery.name, StoredFile.path)
            .limit(REPORT_ITEMS)
        )
    ).all()
    failed = states.get(ReplicaState.FAILED, {}).get("files", 0)
    report = {
        "tier": scope.target,
        "states": states,
        "failures": [{"path": f"{d}/{p}", "reason": r} for d, p, r in failures],
    }
    outcome = JobRunState.FAILED if failed or error else JobRunState.DONE
    closed = session.execute(
        update(JobRun)
        .where(JobRun.id == scope.run_id, JobRun.state.in_(job_run_sources(outcome)))
        .values(
            state=outcome,
            files_failed=failed,
            report=report,
            error=error or (f"{count(failed, 'file')} failed" if failed else ""),
            finished_at=now,
            next_attempt_at=None,
            updated_at=now,
        )
        .returning(JobRun.id),
        execution_options=NO_SYNC,
    ).scalar()
    if closed is None:
        return False
    if scope.kind == JobKind.SYNC and failed:
        announce_failures(ctx, session, scope)
    if scope.kind == JobKind.RESTORE:
        run = session.get(JobRun, scope.run_id)
        assert run is not None
        audit.record(
            session, None, "data.restored", "project", scope.project_id,
            after={"job": run.id, "files": run.files_done, "bytes": run.bytes_done, "failed": failed},
        )  # fmt: skip
    return True
