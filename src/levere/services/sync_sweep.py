"""The periodic sweep: work nobody is doing (a job whose worker stopped, files left waiting or
leased by dead workers) goes back to the queue."""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from levere.context import Context, after_commit
from levere.dataplane import COPY_PATHS
from levere.db.models import JobRun, Project, Replica, StoredFile, utcnow
from levere.domain.errors import NoPlacement
from levere.domain.jobruns import ACTIVE, JobKind, JobRunState
from levere.domain.replicas import ReplicaState
from levere.domain.tiers import ProjectKind, Purpose, placement_on, tier_words
from levere.services import audit
from levere.services.jobruns import enqueue, new_run

log = logging.getLogger(__name__)

#: how long pending work may wait before the periodic sweep starts a job for it
SWEEP_GRACE = timedelta(minutes=2)


def sweep(ctx: Context) -> list[str]:
    """Put work nobody is doing back in the queue: jobs whose worker stopped (killed, or a queue
    lost with a restarted embedded worker) are queued again, and files left waiting or leased by
    dead workers get a job. Returns the ids of the jobs queued."""
    now = utcnow()
    lease = timedelta(seconds=ctx.settings.sync.lease_seconds)
    queued: list[str] = []
    with ctx.tx() as session:
        active = list(session.execute(select(JobRun).where(JobRun.state.in_(ACTIVE))).scalars())
        covered: set[tuple[str | None, JobKind]] = set()
        for run in active:
            covered.add((run.project_id, JobKind(run.kind)))
            if someone_on_it(run, now, lease):
                continue
            run.updated_at = now  # the resumed worker's heartbeat takes over from here
            run_id, kind = run.id, run.kind
            after_commit(session, functools.partial(enqueue, ctx, kind, run_id))
            audit.record(
                session, None, "job.resumed", "job", run.id, after={"kind": kind, "state": run.state}
            )
            queued.append(run.id)
        rows = session.execute(
            select(StoredFile.project_id, Project.sensitive, Replica.tier, Project.sync_mode, Replica.state)
            .join(Replica, Replica.file_id == StoredFile.id)
            .join(Project, Project.id == StoredFile.project_id)
            .where(
                or_(
                    (Replica.state == ReplicaState.COPYING) & (Replica.lease_expires_at < now),
                    (Replica.state == ReplicaState.PENDING) & (Replica.updated_at < now - SWEEP_GRACE),
                )
            )
            .distinct()
        ).all()
        wanted: set[tuple[str, JobKind]] = set()
        for project_id, sensitive, tier, sync_mode, state in rows:
            try:
                purpose = placement_on(ProjectKind.of(sensitive), tier).purpose
            except NoPlacement:
                log.warning("project %s has replicas on %s, where it keeps no data", project_id, tier)
                continue
            # copies wait for long-term storage (a sync) or to be remade on the landing area (a restore)
            kind = JobKind.SYNC if purpose is Purpose.LONGTERM else JobKind.RESTORE
            if kind == JobKind.SYNC and state == ReplicaState.PENDING and sync_mode != "auto":
                continue  # manual projects wait for the helpdesk
            wanted.add((project_id, kind))
        for project_id, kind in sorted(wanted - covered):
            project = session.get(Project, project_id)
            assert project is not None
            target = COPY_PATHS[kind](ProjectKind.of(project.sensitive)).target
            run = new_run(ctx, session, kind, project)
            audit.record(
                session, None, f"{kind}.requested", "project", project_id,
                after={"job": run.id, "tier": tier_words(target), "by": "sweep"},
            )  # fmt: skip
            queued.append(run.id)
    return queued


def someone_on_it(run: JobRun, now: datetime, lease: timedelta) -> bool:
    """Whether a worker is (or soon will be) on this job: a running job's heartbeat touches it
    every third of a lease; a retrying one is due at ``next_attempt_at``; a queued one is young."""
    if run.state == JobRunState.RUNNING:
        return run.updated_at > now - 2 * lease
    if run.state == JobRunState.RETRYING:
        return run.next_attempt_at is None or run.next_attempt_at > now - 2 * lease
    return run.created_at > now - max(2 * lease, timedelta(minutes=15))
