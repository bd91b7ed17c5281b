"""Projects: provisioning, members and their roles, facility assignment, quotas."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Facility, Project, ProjectFacility, ProjectMember, Quota, User, utcnow
from levere.domain.errors import Conflict, NoPlacement, NotFound, ValidationFailed
from levere.domain.roles import Action, ProjectRole, Subject, UserKind, allowed, require
from levere.domain.tiers import Placement, ProjectKind, Purpose, Tier, place
from levere.domain.units import format_size
from levere.services import accounts, audit, onboarding
from levere.services.notify import notify
from levere.services.views import (
    FacilityView,
    MemberView,
    ProjectView,
    QuotaView,
    facility_view,
    member_view,
    quota_view,
)


def placement(project: Project, purpose: Purpose) -> Placement:
    """Where ``project`` keeps its data for ``purpose`` (refused with :class:`NoPlacement`)."""
    return place(ProjectKind.of(project.sensitive), purpose)


def landing_tier(session: Session, project_id: str) -> Tier:
    """The tier where the project's deliveries land (and its uploads hold their quota)."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}")
    return placement(project, Purpose.LANDING).tier


def get_project(session: Session, identifier: str) -> Project:
    project = session.execute(
        select(Project).where((Project.identifier == identifier.strip().upper()) | (Project.id == identifier))
    ).scalar()
    if project is None:
        raise NotFound(f"no project {identifier}")
    return project


def membership(session: Session, project: Project, user: User) -> ProjectMember | None:
    return session.get(ProjectMember, (project.id, user.id))


def facility_assigned(session: Session, project: Project, user: User) -> bool:
    if user.kind != UserKind.FACILITY or user.facility_id is None:
        return False
    return session.get(ProjectFacility, (project.id, user.facility_id)) is not None


def subject_for(session: Session, project: Project, user: User) -> Subject:
    member = membership(session, project, user)
    return Subject(
        kind=UserKind(user.kind),
        project_role=ProjectRole(member.role) if member else None,
        facility_assigned=facility_assigned(session, project, user),
    )


def authorize(session: Session, user: User, identifier: str, action: Action) -> Project:
    """Load a project and check ``action`` on it for ``user``; the gate of every project use case."""
    project = get_project(session, identifier)
    require(subject_for(session, project, user), action, f"in project {project.identifier}")
    return project


def _visible(user: User) -> Any:
    """The condition on ``Project`` that selects the projects ``user`` may see (None: every one)."""
    if allowed(Subject(kind=UserKind(user.kind)), Action.PROJECT_LIST_ALL):
        return None
    member_of = select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)
    if user.kind == UserKind.FACILITY and user.facility_id:
        assigned = select(ProjectFacility.project_id).where(ProjectFacility.facility_id == user.facility_id)
        return Project.id.in_(member_of) | Project.id.in_(assigned)
    return Project.id.in_(member_of)


def visible_projects(session: Session, user: User) -> list[Project]:
    return _projects(session, _visible(user))


def _projects(session: Session, condition: Any) -> list[Project]:
    query = select(Project) if condition is None else select(Project).where(condition)
    return list(session.execute(query.order_by(Project.identifier)).scalars())


def project_views(session: Session, viewer: User, condition: Any) -> list[ProjectView]:
    """The projects matching ``condition`` (on ``Project``; None: all), by identifier, with their
    quotas, facilities and the viewer's role: four queries, however many projects there are."""
    found = _projects(session, condition)
    if not found:
        return []
    where = [] if condition is None else [condition]
    limits: dict[str, list[QuotaView]] = defaultdict(list)
    for quota in session.execute(
        select(Quota).join(Project, Project.id == Quota.project_id).where(*where).order_by(Quota.tier)
    ).scalars():
        limits[quota.project_id].append(quota_view(quota))
    assigned: dict[str, list[str]] = defaultdict(list)
    for project_id, name in session.execute(
        select(ProjectFacility.project_id, Facility.name)
        .join(Facility, Facility.id == ProjectFacility.facility_id)
        .join(Project, Project.id == ProjectFacility.project_id)
        .where(*where)
        .order_by(Facility.name)
    ):
        assigned[project_id].append(name)
    roles = {
        project_id: role
        for project_id, role in session.execute(
            select(ProjectMember.project_id, ProjectMember.role)
            .join(Project, Project.id == ProjectMember.project_id)
            .where(ProjectMember.user_id == viewer.id, *where)
        )
    }
    return [
        ProjectView(
            id=p.id,
            identifier=p.identifier,
            title=p.title,
            sensitive=p.sensitive,
            secure_project_id=p.secure_project_id,
            sync_mode=p.sync_mode,
            created_at=p.created_at,
            quotas=tuple(limits.get(p.id, ())),
            facilities=tuple(assigned.get(p.id, ())),
            my_role=roles.get(p.id),
        )
        for p in found
    ]


def project_view(session: Session, project: Project, viewer: User) -> ProjectView:
    return project_views(session, viewer, Project.id == project.id)[0]


def list_projects(ctx: Context, actor: User) -> list[ProjectView]:
    """The projects ``actor`` may see, by identifier, each with its quotas, facilities and the
    actor's role: a fixed number of queries, however many projects there are."""
    with ctx.tx() as session:
        return project_views(session, actor, _visible(actor))


def show_project(ctx: Context, actor: User, identifier: str) -> ProjectView:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.PROJECT_READ)
        return project_view(session, project, actor)


def list_members(ctx: Context, actor: User, identifier: str) -> list[MemberView]:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.MEMBER_LIST)
        return [member_view(m) for m in members(session, project)]


def members(session: Session, project: Project) -> list[ProjectMember]:
    return list(
        session.execute(
            select(ProjectMember)
            .where(ProjectMember.project_id == project.id)
            .order_by(ProjectMember.added_at)
        ).scalars()
    )


def facilities(session: Session, project: Project) -> list[Facility]:
    rows = session.execute(select(ProjectFacility).where(ProjectFacility.project_id == project.id)).scalars()
    return [row.facility for row in rows]


def quotas(session: Session, project: Project) -> dict[str, Quota]:
    rows = session.execute(select(Quota).where(Quota.project_id == project.id)).scalars()
    return {row.tier: row for row in rows}


# --- provisioning -------------------------------------------------------------------------------


@dataclass
class NewMember:
    email: str
    role: ProjectRole


def provision(
    ctx: Context,
    session: Session,
    actor: User,
    *,
    identifier: str,
    title: str,
    quota_bytes: Mapping[Tier, int],
    pi: User,
    members_wanted: list[NewMember],
    facility: Facility | None,
    sensitive: bool = False,
    secure_project_id: str = "",
) -> Project:
    """Create the project, its area, quotas, members and facility assignment in the caller's transaction."""
    project = Project(
        identifier=identifier, title=title, sensitive=sensitive, secure_project_id=secure_project_id
    )
    session.add(project)
    session.flush()
    # the quotas granted per tier are recorded as granted, whatever the project's placement
    for tier, limit in sorted(quota_bytes.items()):
        session.add(Quota(project_id=project.id, tier=Tier(tier).value, limit_bytes=limit))
    audit.record(
        session, actor, "project.provisioned", "project", project.id,
        after={"identifier": identifier, "title": title, "quota": quota_bytes, "sensitive": sensitive},
    )  # fmt: skip
    people = [(pi.email, ProjectRole.ADMIN)]
    people += [(m.email, m.role) for m in members_wanted if m.email.strip().lower() != pi.email]
    onboarding.add_members(ctx, session, actor, project, people)
    if facility is not None:
        _assign_facility(ctx, session, actor, project, facility, new_project=True)
    session.flush()
    try:
        landing = placement(project, Purpose.LANDING)
    except NoPlacement:
        # a sensitive project gets no working area on the ordinary tiers
        return project
    # the area is made last: if it fails, the transaction rolls back and nothing was provisioned
    ctx.backend(landing.tier).prepare_prefix(project.identifier)
    return project


def add_member(ctx: Context, actor: User, identifier: str, email: str, role: ProjectRole) -> MemberView:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.MEMBER_MANAGE)
        onboarding.add_members(ctx, session, actor, project, [(email, role)])
        session.flush()
        return _member(session, project, email)


def _member(session: Session, project: Project, email: str) -> MemberView:
    user = accounts.get_user_by_email(session, email)
    member = membership(session, project, user)
    if member is None:
        raise NotFound(f"{user.email} is not a member of {project.identifier}")
    return member_view(member)


def _admins_left(session: Session, project: Project, without: User) -> int:
    return sum(
        1 for m in members(session, project) if m.role == ProjectRole.ADMIN and m.user_id != without.id
    )


def remove_member(ctx: Context, actor: User, identifier: str, email: str) -> None:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.MEMBER_MANAGE)
        user = accounts.get_user_by_email(session, email)
        member = membership(session, project, user)
        if member is None:
            raise NotFound(f"{user.email} is not a member of {project.identifier}")
        if member.role == ProjectRole.ADMIN and _admins_left(session, project, user) == 0:
            raise Conflict(
                f"{user.email} is the last admin of {project.identifier}; make someone else admin first"
            )
        session.delete(member)
        audit.record(
            session,
            actor,
            "member.removed",
            "project",
            project.id,
            before={"email": user.email, "role": member.role},
        )
        notify(
            ctx, session, [user], f"[levere] Your access to {project.identifier} has ended",
            f"{actor.email} removed you from the project {project.identifier} ({project.title}).",
        )  # fmt: skip


def set_role(ctx: Context, actor: User, identifier: str, email: str, role: ProjectRole) -> MemberView:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.MEMBER_MANAGE)
        user = accounts.get_user_by_email(session, email)
        member = membership(session, project, user)
        if member is None:
            raise NotFound(f"{user.email} is not a member of {project.identifier}")
        if member.role == role:
            return member_view(member)
        if member.role == ProjectRole.ADMIN and _admins_left(session, project, user) == 0:
            raise Conflict(
                f"{user.email} is the last admin of {project.identifier}; make someone else admin first"
            )
        before = member.role
        member.role = role.value
        audit.record(
            session, actor, "member.role_changed", "project", project.id,
            before={"email": user.email, "role": before}, after={"email": user.email, "role": role.value},
        )  # fmt: skip
        notify(
            ctx, session, [user], f"[levere] Your role in {project.identifier} is now {role.value}",
            f"{actor.email} changed your role in {project.identifier} ({project.title}) from {before} to {role.value}.",
        )  # fmt: skip
        return member_view(member)


def _assign_facility(
    ctx: Context, session: Session, actor: User, project: Project, facility: Facility, new_project: bool
) -> None:
    if session.get(ProjectFacility, (project.id, facility.id)) is not None:
        raise Conflict(f"{facility.name} is already assigned to {project.identifier}")
    session.add(ProjectFacility(project_id=project.id, facility_id=facility.id, assigned_by_id=actor.id))
    session.flush()
    audit.record(
        session, actor, "project.facility_assigned", "project", project.id, after={"facility": facility.name}
    )
    to: list[User | str] = [facility.contact_email, *accounts.facility_staff(session, facility.id)]
    try:
        landing = placement(project, Purpose.LANDING).tier
    except NoPlacement as exc:
        notify(
            ctx, session, to, f"[levere] {project.identifier} is assigned to {facility.display_name}",
            f"You have been assigned to {project.identifier} ({project.title}).\n{exc.message}.\n",
        )  # fmt: skip
        return
    limits = quotas(session, project)
    area = limits[landing].limit_bytes if landing in limits else 0
    what = "A new project area is ready" if new_project else "You have been assigned to an existing project"
    notify(
        ctx, session, to,
        f"[levere] {project.identifier} is ready for deliveries from {facility.display_name}",
        f"{what}: {project.identifier} ({project.title}).\n"
        f"Working-area quota: {format_size(area)}.\n\n"
        f"Deliver a run folder with:  levere deliver {project.identifier} RUN_FOLDER\n",
    )  # fmt: skip


def assign_facility(ctx: Context, actor: User, identifier: str, facility_name: str) -> FacilityView:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.PROJECT_ASSIGN_FACILITY)
        facility = accounts.get_facility(session, facility_name)
        _assign_facility(ctx, session, actor, project, facility, new_project=False)
        return facility_view(facility)


def update_settings(
    ctx: Context, actor: User, identifier: str, *, sync_mode: Literal["auto", "manual"] | None = None
) -> ProjectView:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.PROJECT_SETTINGS)
        before = {"sync_mode": project.sync_mode}
        if sync_mode is not None:
            if sync_mode not in ("auto", "manual"):
                raise ValidationFailed({"sync_mode": "must be 'auto' or 'manual'"})
            project.sync_mode = sync_mode
        if before == {"sync_mode": project.sync_mode}:
            return project_view(session, project, actor)  # nothing changed: nothing to record
        audit.record(
            session,
            actor,
            "project.settings_changed",
            "project",
            project.id,
            before,
            {"sync_mode": project.sync_mode},
        )
        return project_view(session, project, actor)


def set_quota(ctx: Context, actor: User, identifier: str, tier: str, limit_bytes: int) -> QuotaView:
    """Helpdesk changes a granted quota; never below what is already used or reserved."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.PROJECT_QUOTA)
        if limit_bytes <= 0:
            raise ValidationFailed({"limit": "a quota must be larger than zero"})
        quota = session.execute(
            select(Quota).where(Quota.project_id == project.id, Quota.tier == tier).with_for_update()
        ).scalar()
        if quota is None:
            tiers = ", ".join(sorted(quotas(session, project)))
            raise NotFound(f"{project.identifier} has no {tier} tier (tiers: {tiers})")
        if limit_bytes < quota.used_bytes + quota.reserved_bytes:
            raise Conflict(
                f"{format_size(limit_bytes)} is less than the {format_size(quota.used_bytes + quota.reserved_bytes)} "
                f"already used or reserved on {tier}"
            )
        before = {"tier": tier, "limit_bytes": quota.limit_bytes}
        quota.limit_bytes = limit_bytes
        audit.record(
            session,
            actor,
            "project.quota_changed",
            "project",
            project.id,
            before,
            {"tier": tier, "limit_bytes": limit_bytes},
        )
        return quota_view(quota)


def new_identifier(session: Session, number: int) -> str:
    return f"LEV-{utcnow().year}-{number:04d}"
