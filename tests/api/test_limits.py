"""Maximums on the lists a request may carry, and provisioning an application at the maximum:
every member, account, invitation, welcome and audit event, made in a few statements."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from levere.config import Settings, SmtpSettings
from levere.context import Context
from levere.db.models import Application, AuditEvent, Invitation, Notification, ProjectMember, User
from levere.domain.applications import MAX_MEMBERS, RequestedMember
from levere.domain.errors import ValidationFailed
from levere.domain.roles import ProjectRole
from levere.services import applications, audit, invitations
from tests.helpers import auth, basic_world, complete_form, make_user, provisioned_project, token_for

ROLES = (ProjectRole.MEMBER, ProjectRole.VIEWER, ProjectRole.ADMIN)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # a thousand welcome e-mails would only test the mail sink; the rows are what is checked here.
    # JSON bodies may be larger than by default, so that the lists' own maximums are what refuses
    # (with the default cap a body this large is a 413 before it is parsed)
    return settings.model_copy(
        update={"smtp": SmtpSettings(enabled=False), "json_body_limit_bytes": 16 * 1024**2}
    )


def people(n: int) -> list[dict[str, str]]:
    return [{"email": f"person{i:05d}@uib.example.org", "role": ROLES[i % 3].value} for i in range(n)]


def count(ctx: Context, model: Any) -> int:
    with ctx.tx() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_too_many_members_is_a_422_naming_the_limit_and_stores_nothing(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    staff = auth(token_for(ctx, world.staff))
    before = count(ctx, Application), count(ctx, AuditEvent)
    # as a draft, even with nothing else filled in
    r = client.post("/api/applications", json={"members": people(MAX_MEMBERS + 1)}, headers=staff)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_failed"
    assert str(MAX_MEMBERS) in r.json()["details"]["fields"]["members"]
    r = client.post("/api/applications", json={"members": people(100_000)}, headers=staff)
    assert r.status_code == 422 and str(MAX_MEMBERS) in r.json()["message"]
    assert (count(ctx, Application), count(ctx, AuditEvent)) == before

    # editing a draft up to the maximum works, past it does not
    r = client.post("/api/applications", json={"title": "Big consortium"}, headers=staff)
    number = r.json()["number"]
    r = client.patch(f"/api/applications/{number}", json={"members": people(MAX_MEMBERS)}, headers=staff)
    assert r.status_code == 200, r.text
    assert len(r.json()["members"]) == MAX_MEMBERS
    r = client.patch(f"/api/applications/{number}", json={"members": people(MAX_MEMBERS + 1)}, headers=staff)
    assert r.status_code == 422 and str(MAX_MEMBERS) in r.text
    assert len(client.get(f"/api/applications/{number}", headers=staff).json()["members"]) == MAX_MEMBERS


def test_the_service_refuses_too_many_members_whatever_the_front_end(ctx: Context) -> None:
    world = basic_world(ctx)
    members = [RequestedMember(p["email"], ProjectRole(p["role"])) for p in people(MAX_MEMBERS + 1)]
    with pytest.raises(ValidationFailed) as caught:
        applications.create(
            ctx, world.staff, complete_form(world.facility.name, world.pi.email, members=members)
        )
    assert f"at most {MAX_MEMBERS}" in caught.value.fields["members"]


def test_other_request_lists_have_maximums(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    pi = auth(token_for(ctx, world.pi))
    r = client.post("/api/me/tokens", json={"name": "x", "scopes": ["read"] * 5}, headers=pi)
    assert r.status_code == 422 and "scopes" in r.json()["details"]["fields"]
    project = provisioned_project(ctx, world)
    paths = [f"RUN1/f{i}" for i in range(100_001)]
    r = client.post(f"/api/projects/{project}/free", json={"paths": paths}, headers=pi)
    assert r.status_code == 422 and "100000" in r.json()["details"]["fields"]["paths"]


def test_provisioning_at_the_maximum_creates_every_member_and_invitation(ctx: Context) -> None:
    world = basic_world(ctx)
    wanted = people(MAX_MEMBERS)
    # some already have accounts: one with a password (no invitation), one without (invited again)
    make_user(ctx, wanted[0]["email"])
    make_user(ctx, wanted[1]["email"], password=None)
    # the PI listed among the members is added once, as admin
    wanted[2] = {"email": world.pi.email, "role": "viewer"}
    members = [RequestedMember(p["email"], ProjectRole(p["role"])) for p in wanted]
    application = applications.create(
        ctx, world.staff, complete_form(world.facility.name, world.pi.email, members=members)
    )
    applications.submit(ctx, world.pi, str(application.number))
    users_before = count(ctx, User)
    _, project = applications.approve(ctx, world.helpdesk, str(application.number))

    with ctx.tx() as session:
        rows = session.execute(
            select(User.email, ProjectMember.role)
            .join(ProjectMember, ProjectMember.user_id == User.id)
            .where(ProjectMember.project_id == project.id)
        ).all()
        roles = dict(rows)
        invited_rows = {
            i.email: i
            for i in session.execute(select(Invitation).where(Invitation.project_id == project.id)).scalars()
        }
        welcomes = dict(
            session.execute(
                select(Notification.email, Notification.body).where(
                    Notification.subject.like(f"%joined project {project.identifier}%")
                )
            ).all()
        )
        chain = audit.verify_chain(session)
        added = session.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "member.added", AuditEvent.object_id == project.id)
        ).scalar_one()
    assert len(rows) == MAX_MEMBERS  # the PI once, and every other listed person
    assert roles[world.pi.email] == "admin"
    assert all(roles[p["email"]] == p["role"] for p in wanted if p["email"] != world.pi.email)
    assert count(ctx, User) == users_before + MAX_MEMBERS - 3  # the PI and two people had accounts
    # everyone without a password (the PI here too) is invited with their role; the one with a password is not
    invited = {p["email"] for p in wanted} - {wanted[0]["email"]}
    assert set(invited_rows) == invited
    assert all(invited_rows[e].role == roles[e] and invited_rows[e].accepted_at is None for e in invited)
    assert set(welcomes) == set(roles)
    assert "http://levere.test/invite/" not in welcomes[wanted[0]["email"]]
    assert chain.ok, chain.problem
    assert added == MAX_MEMBERS

    # a link from a welcome works: the newcomer sets a password and is a member
    link = welcomes[wanted[5]["email"]].split("http://levere.test/invite/")[1].split()[0]
    user = invitations.accept_invitation(ctx, link, "a long enough password")
    assert user.email == wanted[5]["email"]
