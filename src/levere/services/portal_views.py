"""What the portal's pages show, assembled in one transaction each and returned as frozen views.

These are the screens of the web portal that no other use case gives whole: the home page, an
application and a project with what the viewer may do to them, the helpdesk's paged dashboard and
its list of people. They build on the views and use cases the API shares (a delivery's page is
:func:`levere.services.deliveries.file_page`, the dashboard :func:`levere.services.overview.dashboard`), check the permission table as those do, and return
frozen views, so templates never touch the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from levere.context import Context
from levere.db.models import Facility, Project, User
from levere.domain.applications import EDITABLE, ApplicationState
from levere.domain.roles import Action, Subject, UserKind, allowed, require
from levere.services import applications as applications_service
from levere.services import overview, projects
from levere.services.views import (
    ApplicationView,
    ProjectPage,
    ProjectView,
    application_view,
)


@dataclass(frozen=True)
class Home:
    projects: tuple[ProjectView, ...]
    applications: tuple[ApplicationView, ...]
    may_apply: bool
    may_review: bool
    waiting_for_review: int


def home(ctx: Context, user: User) -> Home:
    subject = Subject(kind=UserKind(user.kind))
    visible = applications_service.visible(ctx, user)
    may_review = allowed(subject, Action.APPLICATION_QUEUE)
    waiting = sum(1 for a in visible if a.state == ApplicationState.SUBMITTED) if may_review else 0
    return Home(
        projects=tuple(projects.list_projects(ctx, user)),
        applications=tuple(visible),
        may_apply=allowed(subject, Action.APPLICATION_CREATE),
        may_review=may_review,
        waiting_for_review=waiting,
    )


@dataclass(frozen=True)
class ApplicationPage:
    """An application with what the viewer may do to it now."""

    application: ApplicationView
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
            application=application_view(application, project.identifier if project else None),
            may_edit=editable and allowed(subject, Action.APPLICATION_EDIT),
            may_submit=editable and allowed(subject, Action.APPLICATION_SUBMIT),
            may_review=state is ApplicationState.SUBMITTED and allowed(subject, Action.APPLICATION_REVIEW),
            may_withdraw=(state in EDITABLE or state is ApplicationState.SUBMITTED)
            and allowed(subject, Action.APPLICATION_WITHDRAW),
        )


@dataclass(frozen=True)
class ProjectScreen:
    """A project's page (:func:`levere.services.overview.project_page`) with whether the viewer may
    manage its members."""

    page: ProjectPage
    may_manage_members: bool


def project_page(ctx: Context, user: User, identifier: str, *, second_factor: bool = False) -> ProjectScreen:
    shown = overview.project_page(ctx, user, identifier, second_factor=second_factor)
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        subject = projects.subject_for(session, project, user)
        return ProjectScreen(page=shown, may_manage_members=allowed(subject, Action.MEMBER_MANAGE))


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
