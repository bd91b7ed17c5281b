"""Job runs: the background work people ask for (sync, restore, verify), as rows they can watch.

A run is created in the requesting transaction and queued once that commits; huey tasks on any
worker do the work and record progress, retries and a final report on the row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context, after_commit
from levere.db.models import Delivery, JobRun, Project, User
from levere.domain.errors import NotFound
from levere.domain.jobruns import JobKind
from levere.domain.roles import Action, require
from levere.services.accounts import subject_of
from levere.services.projects import authorize


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


def enqueue(ctx: Context, kind: str, run_id: str) -> None:
    """Hand the run to the workers (see :mod:`levere.jobs.dispatch`)."""
    from levere.jobs import dispatch  # its tasks call back into the services that call this

    dispatch.submit(ctx, kind, run_id)


def run_out(session: Session, run: JobRun) -> dict[str, Any]:
    """A job run as the API shows it."""
    project = session.get(Project, run.project_id) if run.project_id else None
    delivery = session.get(Delivery, run.delivery_id) if run.delivery_id else None
    creator = session.get(User, run.created_by_id) if run.created_by_id else None
    return {
        "id": run.id,
        "kind": run.kind,
        "project": project.identifier if project else None,
        "delivery": delivery.name if delivery else None,
        "state": run.state,
        "files_total": run.files_total,
        "files_done": run.files_done,
        "files_failed": run.files_failed,
        "bytes_total": run.bytes_total,
        "bytes_done": run.bytes_done,
        "attempt": run.attempt,
        "next_attempt_at": run.next_attempt_at,
        "error": run.error,
        "report": run.report,
        "created_by": creator.email if creator else "levere",
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def get_run(ctx: Context, actor: User, run_id: str, identifier: str | None = None) -> dict[str, Any]:
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
        return run_out(session, run)


def list_runs(ctx: Context, actor: User, identifier: str, limit: int = 20) -> list[dict[str, Any]]:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        runs = session.execute(
            select(JobRun)
            .where(JobRun.project_id == project.id)
            .order_by(JobRun.created_at.desc())
            .limit(max(1, min(limit, 200)))
        ).scalars()
        return [run_out(session, r) for r in runs]
