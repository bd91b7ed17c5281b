"""Pages that gather several use cases' facts: a project's page and the helpdesk's dashboard.

Each is one transaction and a fixed number of queries, however many projects, deliveries,
members or jobs there are: the rows of a kind are fetched together and grouped here, never one
query per project.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import (
    Delivery,
    JobRun,
    Project,
    ProjectMember,
    Quota,
    Replica,
    SharedDisk,
    StoredFile,
    User,
    utcnow,
)
from levere.domain.jobruns import ACTIVE, JobRunState
from levere.domain.replicas import ReplicaState
from levere.domain.roles import Action, allowed, require
from levere.domain.secure import DiskState, effective_state
from levere.services import audit, project_zone, projects
from levere.services.accounts import subject_of
from levere.services.deliveries import delivery_views
from levere.services.jobruns import run_views
from levere.services.sync_sweep import someone_on_it
from levere.services.views import (
    Dashboard,
    DeliverySummary,
    DeliveryView,
    JobRunView,
    OpenDiskView,
    ProjectPage,
    ProjectSummary,
    QuotaView,
    SyncProblem,
    member_view,
)

#: the jobs a page lists: the newest of a project's, the newest failures on the dashboard
RECENT_JOBS = 5
FAILED_JOBS = 50
#: deliveries with failed or damaged copies the dashboard lists
PROBLEM_DELIVERIES = 50
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


def project_page(ctx: Context, actor: User, identifier: str, *, second_factor: bool = False) -> ProjectPage:
    """A project with its quota use per tier (a sensitive one: its secure project and shared
    disks instead of a working area), its members, its deliveries and its recent jobs; members
    and deliveries only for those who may see them."""
    with ctx.tx() as session:
        project = projects.authorize(session, actor, identifier, Action.PROJECT_READ)
        subject = projects.subject_for(session, project, actor)
        view = project_zone.with_zone(
            session,
            projects.project_view(session, project, actor),
            project,
            actor,
            second_factor=second_factor,
        )
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


def dashboard(
    ctx: Context,
    actor: User,
    *,
    search: str = "",
    page: int = 1,
    per_page: int | None = None,
    second_factor: bool = False,
) -> Dashboard:
    """The projects (those whose identifier or title contains ``search``; page ``page`` of
    ``per_page``, or all) with their quota use per tier, member and delivery counts and files whose
    copy failed; the jobs that failed lately and those nobody is working on any more, the
    deliveries with failed or damaged copies (helpdesk); and, for a sign-in that passed a second
    factor (as everything about the secure zone needs), the shared disks still open."""
    require(subject_of(actor), Action.PROJECT_LIST_ALL)
    require(subject_of(actor), Action.JOB_READ_ALL)
    search = search.strip()
    with ctx.tx() as session:
        conditions: list[Any] = []
        if search:
            conditions.append(
                Project.identifier.contains(search.upper(), autoescape=True)
                | func.lower(Project.title).contains(search.lower(), autoescape=True)
            )
        matching = session.execute(select(func.count()).select_from(Project).where(*conditions)).scalar_one()
        pages, shown = 1, select(Project.id).where(*conditions)
        if per_page is not None:
            pages = max(1, -(-matching // per_page))
            page = min(max(1, page), pages)
            shown = shown.order_by(Project.identifier).offset((page - 1) * per_page).limit(per_page)
        else:
            page = 1
        in_page = Project.id.in_(shown.scalar_subquery())
        views = projects.project_views(session, actor, in_page) if matching else []
        members = _count_by_project(
            session,
            select(ProjectMember.project_id, func.count()).where(ProjectMember.project_id.in_(shown)),
            ProjectMember.project_id,
        )
        problems = _count_by_project(
            session,
            select(StoredFile.project_id, func.count(func.distinct(StoredFile.id)))
            .join(Replica, Replica.file_id == StoredFile.id)
            .where(Replica.state.in_(PROBLEM_STATES), StoredFile.project_id.in_(shown)),
            StoredFile.project_id,
        )
        summaries = _delivery_summaries(session, shown)
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
        stalled = [run for run in active.scalars() if not someone_on_it(run, now, lease)]
        return Dashboard(
            projects=lines,
            failed_jobs=tuple(run_views(session, list(failed))),
            stalled_jobs=tuple(run_views(session, stalled)),
            tiers=_tier_totals(session),
            sync_problems=_sync_problems(session),
            open_disks=_open_disks(session, actor, now) if second_factor else (),
            disks_shown=second_factor,
            matching=matching,
            search=search,
            page=page,
            pages=pages,
        )


def _sync_problems(session: Session) -> tuple[SyncProblem, ...]:
    """Deliveries with failed or damaged copies, per tier, the most troubled first (one query)."""
    failed = func.sum(case((Replica.state == ReplicaState.FAILED, 1), else_=0))
    damaged = func.sum(case((Replica.state == ReplicaState.DAMAGED, 1), else_=0))
    rows = session.execute(
        select(Project.identifier, Delivery.name, Replica.tier, failed, damaged)
        .join(StoredFile, StoredFile.id == Replica.file_id)
        .join(Delivery, Delivery.id == StoredFile.delivery_id)
        .join(Project, Project.id == StoredFile.project_id)
        .where(Replica.state.in_(PROBLEM_STATES))
        .group_by(Project.identifier, Delivery.name, Replica.tier)
        .order_by(func.count().desc(), Project.identifier, Delivery.name)
        .limit(PROBLEM_DELIVERIES)
    ).all()
    return tuple(SyncProblem(p, d, tier, int(f or 0), int(g or 0)) for p, d, tier, f, g in rows)


def _open_disks(session: Session, actor: User, now: datetime) -> tuple[OpenDiskView, ...]:
    """Shared disks open at ``now``, the first to close first. Listing them is a read in the secure
    zone, so it is an audit event, as the zone's own listing is."""
    disks = [
        d
        for d in session.execute(
            select(SharedDisk).where(SharedDisk.state == DiskState.OPEN.value).order_by(SharedDisk.ends_at)
        ).scalars()
        if effective_state(DiskState(d.state), d.ends_at, now) is DiskState.OPEN
    ]
    if disks:
        audit.record(
            session, actor, "disk.listed", "shared_disk", "*", after={"count": len(disks), "on": "dashboard"}
        )
    return tuple(
        OpenDiskView(
            name=d.name,
            facility_project=d.facility_secure.identifier,
            users_project=d.users_secure.identifier,
            used_bytes=d.used_bytes,
            quota_bytes=d.quota_bytes,
            ends_at=d.ends_at,
        )
        for d in disks
    )


def _count_by_project(session: Session, query: Any, project_column: Any) -> dict[str, int]:
    return {project_id: int(n) for project_id, n in session.execute(query.group_by(project_column))}


def _delivery_summaries(session: Session, shown: Any) -> dict[str, DeliverySummary]:
    """Per project of ``shown`` (a query of project ids): its deliveries by state, and their files
    and bytes (two queries)."""
    states: dict[str, dict[str, int]] = defaultdict(dict)
    for project_id, state, n in session.execute(
        select(Delivery.project_id, Delivery.state, func.count())
        .where(Delivery.project_id.in_(shown))
        .group_by(Delivery.project_id, Delivery.state)
    ):
        states[project_id][state] = int(n)
    sizes = {
        project_id: (int(n), int(b))
        for project_id, n, b in session.execute(
            select(StoredFile.project_id, func.count(), func.coalesce(func.sum(StoredFile.size), 0))
            .where(StoredFile.project_id.in_(shown))
            .group_by(StoredFile.project_id)
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


def _tier_totals(session: Session) -> tuple[QuotaView, ...]:
    """Limit, use and reservations summed over every project, per tier (one query)."""
    rows = session.execute(
        select(
            Quota.tier,
            func.coalesce(func.sum(Quota.limit_bytes), 0),
            func.coalesce(func.sum(Quota.used_bytes), 0),
            func.coalesce(func.sum(Quota.reserved_bytes), 0),
        )
        .group_by(Quota.tier)
        .order_by(Quota.tier)
    ).all()
    return tuple(
        QuotaView(tier=tier, limit_bytes=int(limit), used_bytes=int(used), reserved_bytes=int(reserved))
        for tier, limit, used, reserved in rows
    )
