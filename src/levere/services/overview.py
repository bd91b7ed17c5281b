"""Pages that gather several use cases' facts: a project's page and the helpdesk's dashboard.

Each is one transaction and a fixed number of queries, however many projects, deliveries,
members or jobs there are: the rows of a kind are fetched together and grouped here, never one
query per project.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Delivery, JobRun, ProjectMember, Replica, StoredFile, User, utcnow
from levere.domain.jobruns import ACTIVE, JobRunState
from levere.domain.replicas import ReplicaState
from levere.domain.roles import Action, allowed, require
from levere.services import projects
from levere.services.accounts import subject_of
from levere.services.deliveries import delivery_views
from levere.services.jobruns import run_views
from levere.services.sync import _someone_on_it
from levere.services.views import (
    Dashboard,
    DeliverySummary,
    DeliveryView,
    JobRunView,
    ProjectPage,
    ProjectSummary,
    QuotaView,
    member_view,
)

#: the jobs a page lists: the newest of a project's, the newest failures on the dashboard
RECENT_JOBS = 5
FAILED_JOBS = 50
#: replica states that need someone's attention
PROBLEM_STATES = (ReplicaState.FAILED, ReplicaState.DAMAGED)


def summarise(deliveries: Iterable[DeliveryView]) -> DeliverySummary:
    found = list(deliveries)
    states = [d.state for d in found]
    return DeliverySummary(
        total=len(found),
        open=states.count("open"),
        sealed=states.count("sealed"),
        failed=states.count("failed"),
        files=sum(d.file_count for d in found),
        bytes=sum(d.total_bytes for d in found),
    )


def project_page(ctx: Context, actor: User, identifier: str) -> ProjectPage:
    """A project with its quota use per tier, its members, its deliveries and its recent jobs;
    members and deliveries only for those who may see them."""
    with ctx.tx() as session:
        project = projects.authorize(session, actor, identifier, Action.PROJECT_READ)
        subject = projects.subject_for(session, project, actor)
        view = projects.project_view(session, project, actor)
        members = (
            tuple(member_view(m) for m in projects.members(session, project))
            if allowed(subject, Action.MEMBER_LIST)
            else ()
        )
        deliveries: tuple[DeliveryView, ...] = ()
        jobs: tuple[JobRunView, ...] = ()
        if allowed(subject, Action.DELIVERY_READ):
            deliveries = tuple(delivery_views(session, project))
            runs = session.execute(
                select(JobRun)
                .where(JobRun.project_id == project.id)
                .order_by(JobRun.created_at.desc())
                .limit(RECENT_JOBS)
            ).scalars()
            jobs = tuple(run_views(session, list(runs)))
        return ProjectPage(
            project=view,
            members=members,
            deliveries=deliveries,
            summary=summarise(deliveries),
            recent_jobs=jobs,
        )


def dashboard(ctx: Context, actor: User) -> Dashboard:
    """Every project with its quota use per tier, member and delivery counts and files whose copy
    failed; the jobs that failed lately and those nobody is working on any more (helpdesk)."""
    require(subject_of(actor), Action.PROJECT_LIST_ALL)
    require(subject_of(actor), Action.JOB_READ_ALL)
    with ctx.tx() as session:
        views = projects.project_views(session, actor, None)
        members = _count_by_project(
            session, select(ProjectMember.project_id, func.count()), ProjectMember.project_id
        )
        problems = _count_by_project(
            session,
            select(StoredFile.project_id, func.count(func.distinct(StoredFile.id)))
            .join(Replica, Replica.file_id == StoredFile.id)
            .where(Replica.state.in_(PROBLEM_STATES)),
            StoredFile.project_id,
        )
        summaries = _delivery_summaries(session)
        empty = DeliverySummary(total=0, open=0, sealed=0, failed=0, files=0, bytes=0)
        lines = tuple(
            ProjectSummary(
                identifier=p.identifier,
                title=p.title,
                sensitive=p.sensitive,
                sync_mode=p.sync_mode,
                created_at=p.created_at,
                quotas=p.quotas,
                facilities=p.facilities,
                members=members.get(p.id, 0),
                deliveries=summaries.get(p.id, empty),
                problem_files=problems.get(p.id, 0),
            )
            for p in views
        )
        failed = session.execute(
            select(JobRun)
            .where(JobRun.state == JobRunState.FAILED)
            .order_by(JobRun.finished_at.desc())
            .limit(FAILED_JOBS)
        ).scalars()
        now = utcnow()
        lease = timedelta(seconds=ctx.settings.sync.lease_seconds)
        active = session.execute(select(JobRun).where(JobRun.state.in_(ACTIVE)).order_by(JobRun.created_at))
        stalled = [run for run in active.scalars() if not _someone_on_it(run, now, lease)]
        return Dashboard(
            projects=lines,
            failed_jobs=tuple(run_views(session, list(failed))),
            stalled_jobs=tuple(run_views(session, stalled)),
            tiers=_tier_totals(p.quotas for p in views),
        )


def _count_by_project(session: Session, query: Any, project_column: Any) -> dict[str, int]:
    return {project_id: int(n) for project_id, n in session.execute(query.group_by(project_column))}


def _delivery_summaries(session: Session) -> dict[str, DeliverySummary]:
    """Per project: its deliveries by state, and their files and bytes (two queries)."""
    states: dict[str, dict[str, int]] = defaultdict(dict)
    for project_id, state, n in session.execute(
        select(Delivery.project_id, Delivery.state, func.count()).group_by(
            Delivery.project_id, Delivery.state
        )
    ):
        states[project_id][state] = int(n)
    sizes = {
        project_id: (int(n), int(b))
        for project_id, n, b in session.execute(
            select(StoredFile.project_id, func.count(), func.coalesce(func.sum(StoredFile.size), 0)).group_by(
                StoredFile.project_id
            )
        )
    }
    return {
        project_id: DeliverySummary(
            total=sum(counts.values()),
            open=counts.get("open", 0),
            sealed=counts.get("sealed", 0),
            failed=counts.get("failed", 0),
            files=sizes.get(project_id, (0, 0))[0],
            bytes=sizes.get(project_id, (0, 0))[1],
        )
        for project_id, counts in states.items()
    }


def _tier_totals(quotas: Iterable[tuple[QuotaView, ...]]) -> tuple[QuotaView, ...]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for each in quotas:
        for q in each:
            total = totals[q.tier]
            total[0] += q.limit_bytes
            total[1] += q.used_bytes
            total[2] += q.reserved_bytes
    return tuple(
        QuotaView(tier=tier, limit_bytes=t[0], used_bytes=t[1], reserved_bytes=t[2])
        for tier, t in sorted(totals.items())
    )
