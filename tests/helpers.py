"""Builders for the people and objects tests need, made through the services (never raw inserts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from levere.db.models import Facility, User
from levere.domain.applications import ApplicationForm, RequestedMember
from levere.domain.roles import ProjectRole, UserKind
from levere.services import accounts, applications
from levere.services.context import Context

PASSWORD = "correct horse battery"
GiB = 1024**3


def make_user(
    ctx: Context, email: str, kind: UserKind = UserKind.USER, facility: Facility | None = None
) -> User:
    with ctx.tx() as session:
        return accounts.create_user(session, None, email, kind=kind, password=PASSWORD, facility=facility)


def make_facility(ctx: Context, name: str = "norseq-oslo") -> Facility:
    with ctx.tx() as session:
        helpdesk = session.merge(_system_helpdesk(ctx, session))
        return accounts.create_facility(session, helpdesk, name, name.title(), f"contact@{name}.example.org")


def _system_helpdesk(ctx: Context, session: Any) -> User:
    from sqlalchemy import select

    found = session.execute(select(User).where(User.email == "root-helpdesk@levere.test")).scalar()
    if found:
        return found  # type: ignore[no-any-return]
    return accounts.create_user(
        session, None, "root-helpdesk@levere.test", kind=UserKind.HELPDESK, password=PASSWORD
    )


def token_for(ctx: Context, user: User, scopes: frozenset[accounts.Scope] | None = None) -> str:
    with ctx.tx() as session:
        return accounts.issue_token(ctx, session, session.merge(user), "test", scopes).token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def complete_form(facility: str, pi: str, **changes: Any) -> ApplicationForm:
    form = ApplicationForm(
        title="Salmon lice transcriptomes",
        pi_email=pi,
        data_ownership="University of Bergen",
        funding_source="Research Council of Norway",
        grant_id="RCN-123456",
        description="RNA-seq of salmon lice across life stages.",
        facility=facility,
        quota_area_bytes=500 * GiB,
        quota_longterm_bytes=2000 * GiB,
        members=[RequestedMember("member@uib.example.org", ProjectRole.MEMBER)],
    )
    for key, value in changes.items():
        setattr(form, key, value)
    return form


@dataclass
class World:
    helpdesk: User
    facility: Facility
    staff: User
    pi: User


def basic_world(ctx: Context) -> World:
    facility = make_facility(ctx)
    return World(
        helpdesk=make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK),
        facility=facility,
        staff=make_user(ctx, "staff@norseq.example.org", UserKind.FACILITY, facility),
        pi=make_user(ctx, "pi@uib.example.org"),
    )


def provisioned_project(ctx: Context, world: World, **form_changes: Any) -> str:
    """An approved application's project identifier: drafted by staff, submitted by the PI."""
    application = applications.create(
        ctx, world.staff, complete_form(world.facility.name, world.pi.email, **form_changes)
    )
    applications.submit(ctx, world.pi, str(application.number))
    _, project = applications.approve(ctx, world.helpdesk, str(application.number))
    return project.identifier
