"""Every step tells the people it concerns, by e-mail (a real SMTP sink) and in the app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.db.models import Notification
from levere.domain.roles import ProjectRole, UserKind
from levere.services import applications, notify, projects
from tests.conftest import Mailbox, body_of, free_port
from tests.helpers import (
    auth,
    basic_world,
    complete_form,
    make_facility,
    make_user,
    provisioned_project,
    token_for,
)


def in_app(ctx: Context, email: str, subject_part: str) -> Notification:
    """The in-app notification of ``email``'s account about ``subject_part``."""
    with ctx.tx() as session:
        found = [
            n
            for n in session.execute(select(Notification).where(Notification.email == email)).scalars()
            if subject_part in n.subject
        ]
    assert found, f"no in-app notification for {email} about {subject_part!r}"
    assert found[0].user_id is not None, f"{email} was e-mailed but has no in-app notification"
    return found[0]


def told(ctx: Context, mailbox: Mailbox, email: str, subject_part: str) -> str:
    """Assert ``email`` got both an e-mail and an in-app notification; return the e-mail's text."""
    body = body_of(mailbox.wait_for(email, subject_part)).replace("\r\n", "\n")
    note = in_app(ctx, email, subject_part)
    assert note.email_state == "sent"
    assert body.strip() == note.body.strip()
    return body


def test_the_application_flow_tells_everyone_concerned(ctx: Context, mailbox: Mailbox) -> None:
    world = basic_world(ctx)
    second_helpdesk = make_user(ctx, "helpdesk2@levere.test", UserKind.HELPDESK, password=None)
    app = applications.create(ctx, world.staff, complete_form(world.facility.name, world.pi.email))
    ref = str(app.number)
    body = told(ctx, mailbox, world.pi.email, f"Please confirm application {ref}")
    assert world.staff.email in body and f"levere applications submit {ref}" in body

    # a PI named later is asked to confirm too
    draft = applications.create(ctx, world.staff, complete_form(world.facility.name, ""))
    applications.update(ctx, world.staff, str(draft.number), {"pi_email": "other.pi@uib.example.org"})
    body = told(ctx, mailbox, "other.pi@uib.example.org", f"Please confirm application {draft.number}")
    assert "http://levere.test/invite/" in body  # no account yet: a link to set a password

    applications.submit(ctx, world.pi, ref)
    for operator in (world.helpdesk.email, second_helpdesk.email):
        assert "area quota requested: 500.0 GiB" in told(ctx, mailbox, operator, f"New application {ref}")
    for person in (world.pi.email, world.staff.email):  # the PI and whoever drafted it
        told(ctx, mailbox, person, f"Application {ref} was submitted")

    applications.request_changes(ctx, world.helpdesk, ref, "name WP2's grant")
    for person in (world.pi.email, world.staff.email):
        assert "name WP2's grant" in told(ctx, mailbox, person, f"Application {ref} needs changes")

    applications.submit(ctx, world.pi, ref)
    _, project = applications.approve(ctx, world.helpdesk, ref, comment="welcome")
    for person in (world.pi.email, world.staff.email):
        body = told(ctx, mailbox, person, f"Application {ref} approved")
        assert project.identifier in body and "Comment from the helpdesk: welcome" in body
    # the area is ready: the facility's contact address (e-mail only) and its staff (also in-app)
    facility_mail = body_of(mailbox.wait_for(world.facility.contact_email, f"{project.identifier} is ready"))
    assert "A new project area is ready" in facility_mail
    told(ctx, mailbox, world.staff.email, f"{project.identifier} is ready")
    # members listed on the form are welcomed; one without an account gets a link
    welcome = told(ctx, mailbox, "member@uib.example.org", f"joined project {project.identifier}")
    assert "as member" in welcome and "http://levere.test/invite/" in welcome
    assert f"levere download {project.identifier}" in welcome
    told(ctx, mailbox, world.pi.email, f"joined project {project.identifier} as admin")

    other = applications.create(ctx, world.pi, complete_form(world.facility.name, world.pi.email))
    applications.submit(ctx, world.pi, str(other.number))
    applications.reject(ctx, world.helpdesk, str(other.number), "one project is enough")
    assert "one project is enough" in told(
        ctx, mailbox, world.pi.email, f"Application {other.number} was rejected"
    )


def test_member_changes_tell_the_member(ctx: Context, mailbox: Mailbox, client: TestClient) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    make_user(ctx, "colleague@uib.example.org", password=None)
    pi = auth(token_for(ctx, world.pi))
    members = f"/api/projects/{identifier}/members"

    r = client.post(members, json={"email": "colleague@uib.example.org", "role": "viewer"}, headers=pi)
    assert r.status_code == 201
    body = told(ctx, mailbox, "colleague@uib.example.org", f"joined project {identifier} as viewer")
    assert "read and download its data" in body

    assert (
        client.put(f"{members}/colleague@uib.example.org", json={"role": "admin"}, headers=pi).status_code
        == 200
    )
    body = told(ctx, mailbox, "colleague@uib.example.org", f"role in {identifier} is now admin")
    assert "from viewer to admin" in body and world.pi.email in body

    assert client.delete(f"{members}/colleague@uib.example.org", headers=pi).status_code == 204
    told(ctx, mailbox, "colleague@uib.example.org", f"access to {identifier} has ended")
    # the in-app list is the user's own, newest first
    colleague = auth(token_for(ctx, make_user_lookup(ctx, "colleague@uib.example.org")))
    subjects = [n["subject"] for n in client.get("/api/me/notifications", headers=colleague).json()]
    assert len(subjects) == 3 and "has ended" in subjects[0]
    assert client.post("/api/me/notifications/read", headers=colleague).json() == {"marked": 3}
    assert client.get("/api/me/notifications", params={"unread": True}, headers=colleague).json() == []


def make_user_lookup(ctx: Context, email: str) -> object:
    from levere.services.accounts import get_user_by_email

    with ctx.tx() as session:
        return get_user_by_email(session, email)


def test_assigning_a_facility_to_an_existing_project_tells_the_facility(
    ctx: Context, mailbox: Mailbox
) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    bergen = make_facility(ctx, "norseq-bergen")
    staff = make_user(ctx, "staff@bergen.example.org", UserKind.FACILITY, bergen, password=None)
    projects.assign_facility(ctx, world.pi, identifier, "norseq-bergen")
    body = told(ctx, mailbox, staff.email, f"{identifier} is ready for deliveries from Norseq-Bergen")
    assert "assigned to an existing project" in body and f"levere deliver {identifier}" in body
    mailbox.wait_for(bergen.contact_email, f"{identifier} is ready")


def test_a_rolled_back_change_tells_nobody(ctx: Context, mailbox: Mailbox) -> None:
    user = make_user(ctx, "someone@uni.example.org", password=None)
    with pytest.raises(RuntimeError), ctx.tx() as session:
        notify.notify(ctx, session, [user], "[levere] never", "this change fails")
        raise RuntimeError("the change failed after notifying")
    with ctx.tx() as session:
        assert session.execute(select(Notification)).first() is None
    notify.send_pending_emails(ctx)
    assert mailbox.to("someone@uni.example.org") == []


def test_mail_server_down_the_change_commits_and_mail_follows_later(
    ctx: Context, mailbox: Mailbox, client: TestClient, smtp_server: tuple[Mailbox, int]
) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    mailbox.clear()
    ctx.settings.smtp.port = free_port()  # nothing listens there
    ctx.settings.smtp.timeout_seconds = 5
    pi = auth(token_for(ctx, world.pi))
    r = client.post(
        f"/api/projects/{identifier}/members",
        json={"email": "late@uib.example.org", "role": "member"},
        headers=pi,
    )
    assert r.status_code == 201, r.text  # the change itself does not wait for, nor fail on, e-mail
    members = client.get(f"/api/projects/{identifier}/members", headers=pi).json()
    assert "late@uib.example.org" in {m["email"] for m in members}
    with ctx.tx() as session:
        note = session.execute(
            select(Notification).where(Notification.email == "late@uib.example.org")
        ).scalar_one()
    assert note.email_state == "pending"
    assert "Connection" in note.email_error or "refused" in note.email_error.lower(), note.email_error
    assert mailbox.to("late@uib.example.org") == []

    ctx.settings.smtp.port = smtp_server[1]  # the mail server is back
    assert notify.send_pending_emails(ctx) == 0
    mailbox.wait_for("late@uib.example.org", f"joined project {identifier}")
    with ctx.tx() as session:
        note = session.execute(
            select(Notification).where(Notification.email == "late@uib.example.org")
        ).scalar_one()
    assert note.email_state == "sent" and note.email_error == ""
    # sent once only
    assert notify.send_pending_emails(ctx) == 0
    assert len(mailbox.to("late@uib.example.org")) == 1


def test_without_smtp_mail_is_kept_in_app_only(ctx: Context, mailbox: Mailbox) -> None:
    ctx.settings.smtp.enabled = False
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    projects.add_member(ctx, world.pi, identifier, "quiet@uib.example.org", ProjectRole.VIEWER)
    note = in_app(ctx, "quiet@uib.example.org", f"joined project {identifier}")
    assert note.email_state == "disabled"
    assert mailbox.messages == []
