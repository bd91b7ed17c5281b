"""A sensitive project has no working area: approval grants it no area quota, and its views (the
service, the API, the portal and the CLI) show its users' secure project and shared disks instead."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.db.models import Application, AuditEvent, Quota, User, utcnow
from levere.domain.errors import ValidationFailed
from levere.domain.roles import ProjectRole
from levere.services import accounts, applications, project_zone, projects, secure, secure_disks, sync
from tests.cli_live import Cli
from tests.conftest import LiveServer, Mailbox, body_of
from tests.helpers import GiB, World, auth, basic_world, complete_form, provisioned_project

USERS, FACILITY = "p1234", "p11"


def _token(ctx: Context, user: User, second_factor: bool) -> str:
    with ctx.tx() as session:
        issued = accounts.issue_token(ctx, session, session.merge(user), "test")
        issued.record.second_factor = second_factor
    return issued.token


def _sensitive(ctx: Context, world: World) -> tuple[str, str]:
    """A sensitive project (its form asked for a 500 GiB area, as the shared form allows) with a
    shared disk of 3 GiB; returns the project's identifier and the disk's name."""
    identifier = provisioned_project(ctx, world, sensitive=True, secure_project_id=USERS)
    secure.register(ctx, world.helpdesk, FACILITY, facility=world.facility.name)
    disk = secure_disks.create(
        ctx,
        world.helpdesk,
        facility_project=FACILITY,
        users_project=USERS,
        ends_at=utcnow() + timedelta(days=20),
        quota_bytes=3 * GiB,
    )
    return identifier, disk.name


def test_approving_a_sensitive_application_grants_no_area_quota(ctx: Context, mailbox: Mailbox) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world, sensitive=True, secure_project_id=USERS)
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        limits = {
            q.tier: q.limit_bytes
            for q in session.execute(select(Quota).where(Quota.project_id == project.id)).scalars()
        }
        application = session.execute(
            select(Application).where(Application.project_id == project.id)
        ).scalar_one()
        assert limits == {"longterm": 2000 * GiB}
        assert application.granted_area_bytes is None and application.granted_longterm_bytes == 2000 * GiB
    # the applicant hears that the area asked for is not granted, and why
    told = body_of(mailbox.wait_for(world.pi.email, f"approved: project {identifier}"))
    assert "no working area" in told and "500.0 GiB area quota asked for is not granted" in told
    assert f"secure project (sensitive data): {USERS}" in told
    # the helpdesk's notice of the submission said so before the review
    review = body_of(mailbox.wait_for(world.helpdesk.email, "New application"))
    assert (
        "area quota requested: none (500.0 GiB asked, not granted: sensitive data has no working area)"
        in review
    )


def test_a_sensitive_application_needs_no_area_quota_and_a_reviewer_cannot_grant_one(ctx: Context) -> None:
    world = basic_world(ctx)
    form = complete_form(world.facility.name, world.pi.email, sensitive=True, quota_area_bytes=0)
    application = applications.create(ctx, world.staff, form)
    applications.submit(ctx, world.pi, str(application.number))  # complete without an area quota
    with pytest.raises(ValidationFailed, match="no working area") as refused:
        applications.approve(ctx, world.helpdesk, str(application.number), area_bytes=10 * GiB)
    assert "area_quota" in refused.value.fields
    with ctx.tx() as session:
        assert session.get(Application, application.id).state == "submitted"  # type: ignore[union-attr]
    _, project = applications.approve(ctx, world.helpdesk, str(application.number))
    assert [q.tier for q in project.quotas] == ["longterm"]
    # a non-sensitive application still needs one
    plain = complete_form(world.facility.name, world.pi.email, quota_area_bytes=0, title="Plain")
    draft = applications.create(ctx, world.staff, plain)
    with pytest.raises(ValidationFailed, match="working area"):
        applications.submit(ctx, world.pi, str(draft.number))


def test_the_services_show_the_secure_project_and_its_disks_in_place_of_an_area(ctx: Context) -> None:
    world = basic_world(ctx)
    identifier, disk = _sensitive(ctx, world)
    plain = provisioned_project(ctx, world, title="Plain")

    shown = project_zone.show_project(ctx, world.pi, identifier, second_factor=True)
    assert shown.quota("area") is None and shown.zone is not None
    assert shown.zone.secure_project == USERS and shown.zone.disks_shown
    (line,) = shown.zone.disks
    assert (line.name, line.state, line.quota_bytes, line.used_bytes) == (disk, "open", 3 * GiB, 0)
    assert line.ends_at > utcnow() + timedelta(days=19)
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        listed = session.execute(
            select(AuditEvent).where(AuditEvent.action == "disk.listed", AuditEvent.object_id == project.id)
        ).scalars().all()  # fmt: skip
        assert len(listed) == 1 and listed[0].after == {"count": 1, "project": identifier}

    # without a second factor the secure project is named, the disks are not looked up
    hidden = project_zone.show_project(ctx, world.pi, identifier, second_factor=False)
    assert hidden.zone is not None and hidden.zone.secure_project == USERS
    assert not hidden.zone.disks_shown and hidden.zone.disks == ()
    # a non-sensitive project has its area and no zone
    ordinary = project_zone.show_project(ctx, world.pi, plain, second_factor=True)
    assert ordinary.zone is None and ordinary.quota("area") is not None

    status = sync.status(ctx, world.helpdesk, identifier, second_factor=True)
    assert status.sensitive and [q.tier for q in status.quotas] == ["longterm"]
    assert status.zone is not None and [d.name for d in status.zone.disks] == [disk]


def test_the_api_shows_the_secure_project_and_disks(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    identifier, disk = _sensitive(ctx, world)
    strong = auth(_token(ctx, world.pi, second_factor=True))
    weak = auth(_token(ctx, world.pi, second_factor=False))

    body = client.get(f"/api/projects/{identifier}", headers=strong).json()
    assert [q["tier"] for q in body["quotas"]] == ["longterm"]
    assert body["zone"]["secure_project"] == USERS and body["zone"]["disks_shown"] is True
    (shown,) = body["zone"]["disks"]
    assert shown["name"] == disk and shown["quota_bytes"] == 3 * GiB and shown["used_bytes"] == 0
    assert shown["state"] == "open" and shown["ends_at"]

    body = client.get(f"/api/projects/{identifier}", headers=weak).json()
    assert body["zone"] == {"secure_project": USERS, "disks_shown": False, "disks": [], "disks_hidden": 0}

    status = client.get(f"/api/projects/{identifier}/sync-status", headers=strong).json()
    assert status["sensitive"] is True and "area" not in status["quotas"]
    assert [d["name"] for d in status["zone"]["disks"]] == [disk]

    page = client.get(f"/api/projects/{identifier}/overview", headers=strong).json()
    assert page["project"]["zone"]["disks"][0]["name"] == disk


def _cells(page: str) -> list[list[str]]:
    found = re.search(r'<table id="shared-disks">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert found, "no table of shared disks"
    rows = re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in rows]
    return [[" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in row] for row in cells]


def test_the_portal_project_page_shows_the_secure_zone_instead_of_an_area(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    identifier, disk = _sensitive(ctx, world)
    client.cookies.set("levere_session", _token(ctx, world.pi, second_factor=True), path="/portal")
    page = client.get(f"/portal/projects/{identifier}").text
    assert 'id="zone-heading">Secure zone' in page and "it has no project area" in page
    assert f'id="secure-project">{USERS}<' in page
    (row,) = _cells(page)
    assert row[0] == disk and row[1] == "open" and row[3] == "3.0 GiB"
    assert not re.search(r'<span class="tier">area</span>', page)  # no area quota bar
    assert 'id="use-area"' not in page  # and no chart of an area

    client.cookies.set("levere_session", _token(ctx, world.pi, second_factor=False), path="/portal")
    page = client.get(f"/portal/projects/{identifier}").text
    assert f'id="secure-project">{USERS}<' in page and 'id="shared-disks"' not in page
    assert "confirm with your one-time code</a>" in page


def test_levere_status_and_projects_show_word_the_secure_zone(
    live_server: LiveServer, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    world = basic_world(ctx)
    identifier, disk = _sensitive(ctx, world)
    cli = Cli(url=live_server.url, home=tmp_path / "cli")
    strong = {"LEVERE_TOKEN": _token(ctx, world.pi, second_factor=True), "COLUMNS": "200"}
    shown = cli.ok("pi", "projects", "show", identifier, env=strong)
    assert "none: sensitive data is kept encrypted in the secure zone" in shown
    assert re.search(rf"secure project\s+{USERS}", shown)
    assert re.search(rf"shared disk {disk}\s+open, 0 B used of 3.0 GiB, ends 20", shown)
    assert "quota area" not in shown and "quota longterm" in shown
    status = cli.ok("pi", "status", identifier, env=strong)
    assert f"shared disk {disk}" in status and "quota project area" not in status
    assert "quota long-term" in status
    assert cli.json("pi", "status", identifier, env=strong)["zone"]["disks"][0]["name"] == disk
    weak = {"LEVERE_TOKEN": _token(ctx, world.pi, second_factor=False), "COLUMNS": "200"}
    hidden = cli.ok("pi", "status", identifier, env=weak)
    assert "sign in with a second factor to see them" in hidden and disk not in hidden


def test_a_viewer_whose_role_shows_no_disk_is_told_so_rather_than_that_there_is_none(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    identifier, _disk = _sensitive(ctx, world)
    projects.add_member(ctx, world.pi, identifier, "viewer@uib.example.org", ProjectRole.VIEWER)
    with ctx.tx() as session:
        viewer = session.execute(select(User).where(User.email == "viewer@uib.example.org")).scalar_one()

    shown = project_zone.show_project(ctx, viewer, identifier, second_factor=True)
    assert shown.zone is not None and shown.zone.disks == () and shown.zone.disks_hidden == 1
    assert project_zone.show_project(ctx, world.pi, identifier, second_factor=True).zone.disks_hidden == 0  # type: ignore[union-attr]

    client.cookies.set("levere_session", _token(ctx, viewer, second_factor=True), path="/portal")
    page = client.get(f"/portal/projects/{identifier}").text
    assert "1 shared disk, which your role in it does not let you see" in page
    assert "No shared disk yet" not in page
