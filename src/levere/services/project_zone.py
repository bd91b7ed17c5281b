"""A sensitive project's place in the secure zone, as the project's views show it.

A sensitive project has no working area (:func:`levere.domain.tiers.place` refuses it one), so
where a non-sensitive project's views show the area's quota, a sensitive project's show its users'
secure project and the shared disks the facility delivers to, with their quota, use and end date.

Design notes
------------
The disks are facts of the secure zone: like the helpdesk dashboard's open disks they are looked
up only for a sign-in that passed a second factor, only those the viewer may see
(:attr:`Action.DISK_READ`), and the lookup is an audit event. Without a second factor the view
still names the secure project (the project row holds it) and says the disks were not shown.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Project, SecureProject, SharedDisk, User, utcnow
from levere.domain.roles import Action, allowed
from levere.domain.secure import DiskState, SecureKind, effective_state
from levere.services import audit, projects
from levere.services.secure_disks import subject_for_disk
from levere.services.views import ProjectView, ProjectZoneView, ZoneDiskLine


def zone_view(
    session: Session, project: Project, viewer: User, *, second_factor: bool
) -> ProjectZoneView | None:
    """The secure project and shared disks of ``project`` (None for a non-sensitive project)."""
    if not project.sensitive:
        return None
    if not second_factor:
        return ProjectZoneView(secure_project=project.secure_project_id, disks_shown=False)
    now = utcnow()
    found = session.execute(
        select(SharedDisk)
        .join(SecureProject, SecureProject.id == SharedDisk.users_secure_id)
        .where(SecureProject.project_id == project.id, SecureProject.kind == SecureKind.USERS)
        .order_by(SharedDisk.created_at, SharedDisk.name)
    ).scalars()
    every = list(found)
    disks = [d for d in every if allowed(subject_for_disk(session, d, viewer), Action.DISK_READ)]
    audit.record(
        session, viewer, "disk.listed", "project", project.id,
        after={"count": len(disks), "project": project.identifier},
    )  # fmt: skip
    return ProjectZoneView(
        secure_project=project.secure_project_id,
        disks_shown=True,
        disks=tuple(
            ZoneDiskLine(
                name=d.name,
                state=effective_state(DiskState(d.state), d.ends_at, now).value,
                quota_bytes=d.quota_bytes,
                used_bytes=d.used_bytes,
                ends_at=d.ends_at,
            )
            for d in disks
        ),
        disks_hidden=len(every) - len(disks),
    )


def with_zone(
    session: Session, view: ProjectView, project: Project, viewer: User, *, second_factor: bool
) -> ProjectView:
    """``view`` with the project's zone filled in (unchanged for a non-sensitive project)."""
    zone = zone_view(session, project, viewer, second_factor=second_factor)
    return view if zone is None else replace(view, zone=zone)


def show_project(ctx: Context, actor: User, identifier: str, *, second_factor: bool) -> ProjectView:
    """A project with its quotas, facilities, the actor's role and, for a sensitive project, its
    secure project and shared disks."""
    with ctx.tx() as session:
        project = projects.authorize(session, actor, identifier, Action.PROJECT_READ)
        view = projects.project_view(session, project, actor)
        return with_zone(session, view, project, actor, second_factor=second_factor)
