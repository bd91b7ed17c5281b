"""Job runs: the background work people ask for (sync, restore, verify, the zone's analysis and
release), as rows they can watch.

A run is created in the requesting transaction and queued once that commits; huey tasks on any
worker do the work and record progress, retries and a final report on the row.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context, after_commit
from levere.db.models import Delivery, JobRun, Project, SharedDisk, User
from levere.domain.errors import NotFound
from levere.domain.jobruns import FINISHED, JobKind
from levere.domain.roles import Action, require
from levere.services.accounts import subject_of
from levere.services.projects import authorize
from levere.services.views import JobRunView, job_run_view


def new_run(
    ctx: Context,
    session: Session,
    kind: JobKind,
    project: Project | None,
    *,
    delivery: Delivery | None = None,
    actor: User | None = None,
) -> JobRun:
    """A job run, queued once the transaction commits."""
    run = JobRun(
        kind=kind,
        project_id=project.id if project else None,
        delivery_id=delivery.id if delivery else None,
        created_by_id=actor.id if actor else None,
    )
    session.add(run)
    session.flush()
    run_id = run.id
    after_commit(session, lambda: enqueue(ctx, kind, run_id))
    return run


def disk_run(session: Session, run_id: str) -> tuple[JobRun, Delivery, SharedDisk] | None:
    """A secure-zone job's run (analysis, release) with its delivery and that delivery's shared
    disk; None for a run gone or finished (an attempt then has nothing to do)."""
    run = session.get(JobRun, run_id)
    if run is None or run.state in FINISHED:
        return None
    delivery = session.get(Delivery, run.delivery_id) if run.delivery_id else None
    if delivery is None or delivery.shared_disk_id is None:
        raise NotFound(f"job {run_id} names no delivery on a shared disk")
    disk = session.get(SharedDisk, delivery.shared_disk_id)
    assert disk is not None  # the delivery's foreign key
    return run, delivery, disk


def enqueue(ctx: Context, kind: str, run_id: str) -> None:
    """Hand the run to the workers (see :mod:`levere.jobs.dispatch`)."""
    from levere.jobs import dispatch  # its tasks call back into the services that call this

    dispatch.submit(ctx, kind, run_id)


def run_views(session: Session, runs: Sequence[JobRun]) -> list[JobRunView]:
    """Job runs as people see them, their project, delivery and creator named: three queries
    however many runs."""
    names: dict[str, str] = {}
    for model, label, ids in (
        (Project, Project.identifier, {r.project_id for r in runs if r.project_id}),
        (Delivery, Delivery.name, {r.delivery_id for r in runs if r.delivery_id}),
        (User, User.email, {r.created_by_id for r in runs if r.created_by_id}),
    ):
        if ids:
            names.update(
                {
                    row_id: name
                    for row_id, name in session.execute(select(model.id, label).where(model.id.in_(ids)))
                }
            )
    return [
        job_run_view(
            r,
            project=names.get(r.project_id) if r.project_id else None,
            delivery=names.get(r.delivery_id) if r.delivery_id else None,
            created_by=names.get(r.created_by_id) if r.created_by_id else None,
        )
        for r in runs
    ]


def run_view(session: Session, run: JobRun) -> JobRunView:
    return run_views(session, [run])[0]


def get_run(ctx: Context, actor: User, run_id: str, identifier: str | None = None) -> JobRunView:
    """A job run. A project's run is for anyone who may read its deliveries, whether or not the
    project is named; a run that spans every project is for those who may see such runs."""
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        if identifier is not None:
            project = authorize(session, actor, identifier, Action.DELIVERY_READ)
            if run is None or run.project_id != project.id:
                raise NotFound(f"{project.identifier} has no job {run_id}")
        elif run is not None and run.project_id is not None:
            owner = session.get(Project, run.project_id)
            authorize(session, actor, owner.identifier if owner else "", Action.DELIVERY_READ)
        else:
            require(subject_of(actor), Action.JOB_READ_ALL)
            if run is None:
                raise NotFound(f"no job {run_id}")
        return run_view(session, run)


def list_runs(ctx: Context, actor: User, identifier: str, limit: int = 20) -> list[JobRunView]:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        runs = session.execute(
            select(JobRun)
            .where(JobRun.project_id == project.id)
            .order_by(JobRun.created_at.desc())
            .limit(max(1, min(limit, 200)))
        ).scalars()
        return run_views(session, list(runs))
