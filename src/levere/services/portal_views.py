"""What the portal's pages show, assembled in one transaction each and returned as frozen views.

These are the screens of the web portal (home, application, project, delivery, helpdesk dashboard);
each function checks the permission table exactly as the API's use cases do, and returns plain
values, so templates never touch the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from levere.context import Context
from levere.db.models import Application, Delivery, Facility, Project, ProjectMember, Quota, StoredFile, User
from levere.domain.applications import EDITABLE, ApplicationState
from levere.domain.roles import Action, Subject, UserKind, allowed, require
from levere.services import applications as applications_service
from levere.services import deliveries, projects
from levere.services.deliveries import FileView


@dataclass(frozen=True)
class ProjectRow:
    identifier: str
    title: str
    sensitive: bool
    my_role: str | None


@dataclass(frozen=True)
class ApplicationRow:
    number: int
    title: str
    state: str
    pi_email: str
    facility: str
    submitted_at: datetime | None


@dataclass(frozen=True)
class Home:
    projects: tuple[ProjectRow, ...]
    applications: tuple[ApplicationRow, ...]
    may_apply: bool
    may_review: bool
    waiting_for_review: int


def _application_row(application: Application) -> ApplicationRow:
    return ApplicationRow(
        number=application.number,
        title=application.title,
        state=application.state,
        pi_email=application.pi_email,
        facility=application.facility.name if application.facility else "",
        submitted_at=application.submitted_at,
    )


def home(ctx: Context, user: User) -> Home:
    subject = Subject(kind=UserKind(user.kind))
    with ctx.tx() as session:
        found = projects.visible_projects(session, user)
        roles = dict(
            session.execute(
                select(ProjectMember.project_id, ProjectMember.role).where(ProjectMember.user_id == user.id)
            ).all()
        )
        rows = tuple(ProjectRow(p.identifier, p.title, p.sensitive, roles.get(p.id)) for p in found)
    visible = applications_service.visible(ctx, user)
    may_review = allowed(subject, Action.APPLICATION_QUEUE)
    waiting = sum(1 for a in visible if a.state == ApplicationState.SUBMITTED) if may_review else 0
    return Home(
        projects=rows,
        applications=tuple(_application_row(a) for a in visible),
        may_apply=allowed(subject, Action.APPLICATION_CREATE),
        may_review=may_review,
        waiting_for_review=waiting,
    )


@dataclass(frozen=True)
class RequestedMemberRow:
    email: str
    role: str


@dataclass(frozen=True)
class ApplicationPage:
    number: int
    state: str
    title: str
    pi_email: str
    data_ownership: str
    funding_source: str
    grant_id: str
    description: str
    facility: str
    quota_area_bytes: int
    quota_longterm_bytes: int
    sensitive: bool
    secure_project_id: str
    members: tuple[RequestedMemberRow, ...]
    review_comment: str
    granted_area_bytes: int | None
    granted_longterm_bytes: int | None
    submitted_at: datetime | None
    decided_at: datetime | None
    project: str | None  # identifier, once approved
    may_edit: bool
    may_submit: bool
    may_review: bool
    may_withdraw: bool


def application_page(ctx: Context, user: User, ref: str) -> ApplicationPage:
    with ctx.tx() as session:
        application = applications_service.get(session, user, ref)
        subject = applications_service.subject_for(user, application)
        state = ApplicationState(application.state)
        project = session.get(Project, application.project_id) if application.project_id else None
        editable = state in EDITABLE
        return ApplicationPage(
            number=application.number,
            state=application.state,
            title=application.title,
            pi_email=application.pi_email,
            data_ownership=application.data_ownership,
            funding_source=application.funding_source,
            grant_id=application.grant_id,
            description=application.description,
            facility=application.facility.name if application.facility else "",
            quota_area_bytes=application.quota_area_bytes,
            quota_longterm_bytes=application.quota_longterm_bytes,
            sensitive=application.sensitive,
            secure_project_id=application.secure_project_id,
            members=tuple(RequestedMemberRow(m["email"], m["role"]) for m in application.members),
            review_comment=application.review_comment,
            granted_area_bytes=application.granted_area_bytes,
            granted_longterm_bytes=application.granted_longterm_bytes,
            submitted_at=application.submitted_at,
            decided_at=application.decided_at,
            project=project.identifier if project else None,
            may_edit=editable and allowed(subject, Action.APPLICATION_EDIT),
            may_submit=editable and allowed(subject, Action.APPLICATION_SUBMIT),
            may_review=state is ApplicationState.SUBMITTED and allowed(subject, Action.APPLICATION_REVIEW),
            may_withdraw=(state in EDITABLE or state is ApplicationState.SUBMITTED)
            and allowed(subject, Action.APPLICATION_WITHDRAW),
        )


def review_queue(ctx: Context, user: User) -> tuple[ApplicationRow, ...]:
    return tuple(_application_row(a) for a in applications_service.queue(ctx, user))


@dataclass(frozen=True)
class QuotaRow:
    tier: str
    limit_bytes: int
    used_bytes: int
    reserved_bytes: int

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.used_bytes / self.limit_bytes)) if self.limit_bytes else 0


@dataclass(frozen=True)
class MemberRow:
    email: str
    name: str
    role: str
    has_account: bool


@dataclass(frozen=True)
class DeliveryRow:
    name: str
    state: str
    file_count: int
    total_bytes: int
    created_at: datetime


@dataclass(frozen=True)
class ProjectPage:
    identifier: str
    title: str
    sensitive: bool
    my_role: str | None
    facilities: tuple[str, ...]
    quotas: tuple[QuotaRow, ...]
    members: tuple[MemberRow, ...]
    deliveries: tuple[DeliveryRow, ...]
    may_manage_members: bool


def _quota_row(quota: Quota) -> QuotaRow:
    return QuotaRow(quota.tier, quota.limit_bytes, quota.used_bytes, quota.reserved_bytes)


def project_page(ctx: Context, user: User, identifier: str) -> ProjectPage:
    with ctx.tx() as session:
        project = projects.authorize(session, user, identifier, Action.PROJECT_READ)
        subject = projects.subject_for(session, project, user)
        member = projects.membership(session, project, user)
        members = tuple(
            MemberRow(m.user.email, m.user.name, m.role, m.user.password_hash is not None)
            for m in projects.members(session, project)
        ) if allowed(subject, Action.MEMBER_LIST) else ()  # fmt: skip
        quotas = tuple(_quota_row(q) for _, q in sorted(projects.quotas(session, project).items()))
        facilities = tuple(f.name for f in projects.facilities(session, project))
        rows: tuple[DeliveryRow, ...] = ()
        if allowed(subject, Action.DELIVERY_READ):
            found = session.execute(
                select(Delivery).where(Delivery.project_id == project.id).order_by(Delivery.created_at)
            ).scalars()
            counts = {
                delivery_id: (int(n), int(total))
                for delivery_id, n, total in session.execute(
                    select(StoredFile.delivery_id, func.count(), func.coalesce(func.sum(StoredFile.size), 0))
                    .where(StoredFile.project_id == project.id)
                    .group_by(StoredFile.delivery_id)
                ).all()
            }  # every delivery's count and size in one query
            rows = tuple(DeliveryRow(d.name, d.state, *counts.get(d.id, (0, 0)), d.created_at) for d in found)
        return ProjectPage(
            identifier=project.identifier,
            title=project.title,
            sensitive=project.sensitive,
            my_role=member.role if member else None,
            facilities=facilities,
            quotas=quotas,
            members=members,
            deliveries=rows,
            may_manage_members=allowed(subject, Action.MEMBER_MANAGE),
        )


@dataclass(frozen=True)
class DeliveryPage:
    project: str
    name: str
    state: str
    file_count: int
    total_bytes: int
    files: tuple[FileView, ...]  # this page of the matching files
    matching: int
    search: str
    page: int
    pages: int


def delivery_page(
    ctx: Context,
    user: User,
    identifier: str,
    name: str,
    *,
    search: str = "",
    page: int = 1,
    per_page: int = 100,
) -> DeliveryPage:
    """One page of a delivery's files, those whose path contains ``search``, in path order."""
    with ctx.tx() as session:
        project = projects.authorize(session, user, identifier, Action.DELIVERY_READ)
        delivery = deliveries.get_delivery(session, project, name)
        view = deliveries.delivery_view(session, project, delivery)
        conditions = [StoredFile.delivery_id == delivery.id]
        if search:
            conditions.append(StoredFile.path.contains(search, autoescape=True))
        matching = view.file_count  # without a search every file matches: no second count
        if search:
            matching = session.execute(
                select(func.count()).select_from(StoredFile).where(*conditions)
            ).scalar_one()
        pages = max(1, -(-matching // per_page))
        page = min(max(1, page), pages)
        wanted = list(
            session.execute(
                select(StoredFile.id)
                .where(*conditions)
                .order_by(StoredFile.path)
                .offset((page - 1) * per_page)
                .limit(per_page)
            ).scalars()
        )
        # by id: the page's files and their copies are then found by primary key and unique index
        files = deliveries.file_views(session, StoredFile.id.in_(wanted)) if wanted else []
        return DeliveryPage(
            project=project.identifier,
            name=delivery.name,
            state=delivery.state,
            file_count=view.file_count,
            total_bytes=view.total_bytes,
            files=tuple(files),
            matching=matching,
            search=search,
            page=page,
            pages=pages,
        )


@dataclass(frozen=True)
class DashboardRow:
    identifier: str
    title: str
    quotas: tuple[QuotaRow, ...]


@dataclass(frozen=True)
class Dashboard:
    rows: tuple[DashboardRow, ...]  # this page of the matching projects
    matching: int
    search: str
    page: int
    pages: int


def dashboard(ctx: Context, user: User, *, search: str = "", page: int = 1, per_page: int = 100) -> Dashboard:
    """Projects with their quota use per tier (for the helpdesk), a page at a time, in three queries;
    ``search`` keeps those whose identifier or title contains it."""
    with ctx.tx() as session:
        require(Subject(kind=UserKind(user.kind)), Action.PROJECT_LIST_ALL)
        conditions = []
        if search:
            conditions.append(
                Project.identifier.contains(search.upper(), autoescape=True)
                | Project.title.contains(search, autoescape=True)
            )
        matching = session.execute(select(func.count()).select_from(Project).where(*conditions)).scalar_one()
        pages = max(1, -(-matching // per_page))
        page = min(max(1, page), pages)
        found = session.execute(
            select(Project.id, Project.identifier, Project.title)
            .where(*conditions)
            .order_by(Project.identifier)
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
        by_project: dict[str, list[QuotaRow]] = {}
        quotas = select(Quota).where(Quota.project_id.in_([p.id for p in found])).order_by(Quota.tier)
        for quota in session.execute(quotas).scalars():
            by_project.setdefault(quota.project_id, []).append(_quota_row(quota))
        rows = tuple(DashboardRow(p.identifier, p.title, tuple(by_project.get(p.id, ()))) for p in found)
        return Dashboard(rows=rows, matching=matching, search=search, page=page, pages=pages)


@dataclass(frozen=True)
class UserRow:
    email: str
    name: str
    kind: str
    facility: str
    has_password: bool
    two_factor: bool
    active: bool


@dataclass(frozen=True)
class FacilityRow:
    name: str
    display_name: str
    contact_email: str
    staff: int


@dataclass(frozen=True)
class People:
    users: tuple[UserRow, ...]
    facilities: tuple[FacilityRow, ...]


def people(ctx: Context, user: User) -> People:
    """Every account and facility (for the helpdesk), in three queries."""
    with ctx.tx() as session:
        require(Subject(kind=UserKind(user.kind)), Action.USER_LIST)
        facilities = list(session.execute(select(Facility).order_by(Facility.name)).scalars())
        names = {f.id: f.name for f in facilities}
        staff = dict(
            session.execute(
                select(User.facility_id, func.count())
                .where(User.facility_id.is_not(None))
                .group_by(User.facility_id)
            ).all()
        )
        users = tuple(
            UserRow(
                u.email,
                u.name,
                u.kind,
                names.get(u.facility_id or "", ""),
                u.password_hash is not None,
                u.totp_enabled,
                u.active,
            )
            for u in session.execute(select(User).order_by(User.email)).scalars()
        )
        return People(
            users=users,
            facilities=tuple(
                FacilityRow(f.name, f.display_name, f.contact_email, int(staff.get(f.id, 0)))
                for f in facilities
            ),
        )
