"""Invitations with mail off and on: links handed to the inviter, the link's page, list and resend, and
mail recorded while mail was off being sent once it is on (a real SMTP sink)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from levere.context import Context
from levere.db.models import AuditEvent, Invitation, Notification, utcnow
from levere.domain.roles import UserKind
from levere.services import accounts, notify
from tests.cli_live import Cli
from tests.conftest import LiveServer, Mailbox, body_of
from tests.helpers import auth, basic_world, complete_form, make_user, token_for

INVITE = "http://levere.test/invite/"


def _secret(link: str) -> str:
    assert link.startswith(INVITE), link
    return link.removeprefix(INVITE)


def _helpdesk(ctx: Context) -> dict[str, str]:
    return auth(token_for(ctx, make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK, password=None)))


def _accept(client: TestClient, link: str) -> int:
    r = client.post(
        "/api/invitations/accept", json={"secret": _secret(link), "password": "my own password 1"}
    )
    return r.status_code


def test_with_mail_off_every_inviting_answer_carries_the_link(ctx: Context, client: TestClient) -> None:
    ctx.settings.smtp.enabled = False
    world = basic_world(ctx)
    helpdesk, staff, pi = (auth(token_for(ctx, u)) for u in (world.helpdesk, world.staff, world.pi))

    r = client.post("/api/users", json={"email": "ola@uib.example.org"}, headers=helpdesk)
    assert r.status_code == 201 and r.json()["mail_enabled"] is False
    [handed] = r.json()["invitation_links"]
    assert handed["email"] == "ola@uib.example.org" and handed["expires_at"]
    assert _accept(client, handed["link"]) == 200  # the link works

    r = client.post(
        f"/api/facilities/{world.facility.name}/staff",
        json={"email": "kari@norseq.example.org"},
        headers=helpdesk,
    )
    assert [h["email"] for h in r.json()["invitation_links"]] == ["kari@norseq.example.org"]

    # a facility drafts for a PI without an account: the PI's link goes to the facility
    form = complete_form(world.facility.name, "new.pi@uib.example.org").__dict__ | {"members": []}
    form = {k: v for k, v in form.items() if v is not None}
    r = client.post("/api/applications", json=form, headers=staff)
    assert r.status_code == 201, r.text
    assert [h["email"] for h in r.json()["invitation_links"]] == ["new.pi@uib.example.org"]

    # approval invites the members without an account: the links go to the helpdesk
    body = form | {
        "pi_email": world.pi.email,
        "members": [{"email": "ingrid@uib.example.org", "role": "member"}],
    }
    number = client.post("/api/applications", json=body, headers=staff).json()["number"]
    assert client.post(f"/api/applications/{number}/submit", headers=pi).status_code == 200
    r = client.post(f"/api/applications/{number}/approve", json={}, headers=helpdesk)
    assert r.status_code == 200, r.text
    identifier = r.json()["identifier"]
    # (the world's PI has no password yet either, so is invited as the project's admin)
    assert {h["email"] for h in r.json()["invitation_links"]} == {"ingrid@uib.example.org", world.pi.email}
    assert r.json()["quotas"]  # the project's answer is all there besides

    # a project admin adds someone new: the link goes to the admin; someone with an account gets none
    r = client.post(
        f"/api/projects/{identifier}/members",
        json={"email": "guest@ntnu.example.org", "role": "viewer"},
        headers=pi,
    )
    assert r.status_code == 201 and r.json()["role"] == "viewer"
    [handed] = r.json()["invitation_links"]
    assert _accept(client, handed["link"]) == 200
    r = client.post(
        f"/api/projects/{identifier}/members",
        json={"email": "ola@uib.example.org", "role": "viewer"},
        headers=pi,
    )
    assert r.status_code == 201 and r.json()["invitation_links"] == []


def test_with_mail_on_links_are_e_mailed_not_handed_over_and_never_logged(
    ctx: Context, client: TestClient, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    helpdesk = _helpdesk(ctx)
    caplog.set_level(logging.DEBUG)
    r = client.post("/api/users", json={"email": "ola@uib.example.org"}, headers=helpdesk)
    assert r.json()["mail_enabled"] is True and r.json()["invitation_links"] == []
    body = body_of(mailbox.wait_for("ola@uib.example.org", "Your levere account"))
    link = INVITE + body.split(INVITE)[1].split()[0]
    assert f"levere account accept-invite {link}" in body  # the e-mail says which command takes the link
    ctx.settings.smtp.enabled = False
    handed = client.post("/api/users", json={"email": "kari@uib.example.org"}, headers=helpdesk).json()
    secrets = [_secret(link), _secret(handed["invitation_links"][0]["link"])]
    assert not any(secret in caplog.text for secret in secrets)


def test_asking_again_for_an_invited_person_says_so(ctx: Context, client: TestClient) -> None:
    ctx.settings.smtp.enabled = False
    helpdesk = _helpdesk(ctx)
    client.post("/api/users", json={"email": "ola@uib.example.org"}, headers=helpdesk)
    r = client.post("/api/users", json={"email": "Ola@uib.example.org"}, headers=helpdesk)
    assert r.status_code == 409 and r.json()["error"] == "already_invited"
    assert r.json()["details"] == {"email": "ola@uib.example.org"}
    assert "already invited" in r.json()["message"]
    r = client.post(
        "/api/facilities", json={"name": "seq", "contact_email": "c@seq.example.org"}, headers=helpdesk
    )
    client.post("/api/facilities/seq/staff", json={"email": "kari@seq.example.org"}, headers=helpdesk)
    r = client.post("/api/facilities/seq/staff", json={"email": "kari@seq.example.org"}, headers=helpdesk)
    assert r.status_code == 409 and r.json()["error"] == "already_invited"


def test_the_helpdesk_lists_and_resends_pending_invitations(ctx: Context, client: TestClient) -> None:
    ctx.settings.smtp.enabled = False
    helpdesk = _helpdesk(ctx)
    first = client.post("/api/users", json={"email": "ola@uib.example.org", "name": "Ola"}, headers=helpdesk)
    old_link = first.json()["invitation_links"][0]["link"]
    done = client.post("/api/users", json={"email": "kari@uib.example.org"}, headers=helpdesk).json()
    assert _accept(client, done["invitation_links"][0]["link"]) == 200
    stale = client.post("/api/users", json={"email": "per@uib.example.org"}, headers=helpdesk).json()
    with ctx.tx() as session:  # per's link has lapsed
        session.execute(
            update(Invitation)
            .where(Invitation.email == "per@uib.example.org")
            .values(expires_at=utcnow() - timedelta(hours=1))
        )
    assert stale["invitation_links"]

    listed = client.get("/api/invitations", headers=helpdesk).json()
    assert [(i["email"], i["name"], i["invited_by"], i["expired"]) for i in listed] == [
        ("ola@uib.example.org", "Ola", "helpdesk@levere.test", False),
        ("per@uib.example.org", "", "helpdesk@levere.test", True),
    ]  # kari has set a password: no longer pending

    r = client.post("/api/invitations/ola@uib.example.org/resend", headers=helpdesk)
    assert r.status_code == 200 and r.json()["email"] == "ola@uib.example.org"
    [handed] = r.json()["invitation_links"]
    assert handed["link"] != old_link
    r = client.post(
        "/api/invitations/accept", json={"secret": _secret(old_link), "password": "my own password 1"}
    )
    assert r.status_code == 403 and "newer invitation link" in r.json()["message"]
    assert _accept(client, handed["link"]) == 200
    # an expired invitation is re-sent the same way
    r = client.post("/api/invitations/per@uib.example.org/resend", headers=helpdesk)
    assert _accept(client, r.json()["invitation_links"][0]["link"]) == 200
    assert client.get("/api/invitations", headers=helpdesk).json() == []

    r = client.post("/api/invitations/kari@uib.example.org/resend", headers=helpdesk)
    assert r.status_code == 409 and "already set a password" in r.json()["message"]
    r = client.post("/api/invitations/nobody@uib.example.org/resend", headers=helpdesk)
    assert r.status_code == 404
    with ctx.tx() as session:
        resent = (
            session.execute(select(AuditEvent).where(AuditEvent.action == "invitation.resent"))
            .scalars()
            .all()
        )
    assert [e.after["email"] for e in resent if e.after] == ["ola@uib.example.org", "per@uib.example.org"]


def test_the_link_opens_a_page_that_says_what_to_run(ctx: Context, client: TestClient) -> None:
    ctx.settings.smtp.enabled = False
    helpdesk = _helpdesk(ctx)
    link = client.post("/api/users", json={"email": "ola@uib.example.org"}, headers=helpdesk).json()[
        "invitation_links"
    ][0]["link"]
    path = link.removeprefix("http://levere.test")
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f"levere account accept-invite {link}" in r.text and "portal" in r.text
    assert "<script" not in r.text.lower() and "src=" not in r.text and "<link" not in r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert client.get(path).status_code == 200  # opening it changes nothing
    assert _accept(client, link) == 200
    r = client.get(path)
    assert r.status_code == 410 and "already used" in r.text and "levere login" in r.text
    r = client.get("/invite/not-a-real-secret")
    assert r.status_code == 404 and "not valid" in r.text
    r = client.get("/invite/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert "<script>" not in r.text

    link = client.post("/api/users", json={"email": "per@uib.example.org"}, headers=helpdesk).json()[
        "invitation_links"
    ][0]["link"]
    client.post("/api/invitations/per@uib.example.org/resend", headers=helpdesk)
    r = client.get(link.removeprefix("http://levere.test"))
    assert r.status_code == 410 and "newer one" in r.text


# --- mail recorded while mail was off ------------------------------------------------------------


def test_mail_recorded_while_off_is_sent_once_mail_is_on(
    ctx: Context, client: TestClient, mailbox: Mailbox
) -> None:
    ctx.settings.smtp.enabled = False
    helpdesk = _helpdesk(ctx)
    client.post("/api/users", json={"email": "old@uib.example.org"}, headers=helpdesk)
    client.post("/api/users", json={"email": "ola@uib.example.org"}, headers=helpdesk)
    with ctx.tx() as session:  # one of them was recorded long ago
        session.execute(
            update(Notification)
            .where(Notification.email == "old@uib.example.org")
            .values(created_at=utcnow() - timedelta(hours=ctx.settings.smtp.max_age_hours + 1))
        )
    assert notify.catch_up(ctx) == notify.CatchUp(0, 0, 0)  # mail is still off: nothing moves
    assert mailbox.messages == []

    ctx.settings.smtp.enabled = True
    assert ctx.jobs is not None
    ctx.jobs.enqueue("catch_up_emails")  # as serve and worker do at start-up (and then periodically)
    body = body_of(mailbox.wait_for("ola@uib.example.org", "Your levere account"))
    assert "levere account accept-invite http://levere.test/invite/" in body
    assert _accept(client, INVITE + body.split(INVITE)[1].split()[0]) == 200
    with ctx.tx() as session:
        states = {
            email: state
            for email, state in session.execute(select(Notification.email, Notification.email_state))
        }
        old = session.execute(
            select(Notification).where(Notification.email == "old@uib.example.org")
        ).scalar_one()
    assert states == {"ola@uib.example.org": "sent", "old@uib.example.org": "expired"}
    assert "72 hours" in old.email_error
    assert mailbox.to("old@uib.example.org") == []
    # sent once: another run sends nothing again
    assert notify.catch_up(ctx) == notify.CatchUp(0, 0, 0)
    assert len(mailbox.to("ola@uib.example.org")) == 1


def test_a_resent_invitation_is_the_only_one_that_goes_out_once_mail_is_on(
    ctx: Context, client: TestClient, mailbox: Mailbox
) -> None:
    """Mail recorded while mail was off carries a link that a resend ended: it is never sent."""
    ctx.settings.smtp.enabled = False
    helpdesk = _helpdesk(ctx)
    first = client.post("/api/users", json={"email": "ola@uib.example.org"}, headers=helpdesk).json()
    client.post("/api/invitations/ola@uib.example.org/resend", headers=helpdesk)
    ctx.settings.smtp.enabled = True
    notify.catch_up(ctx)
    sent = mailbox.to("ola@uib.example.org")
    assert len(sent) == 1, [m["Subject"] for m in sent]
    body = body_of(sent[0])
    assert first["invitation_links"][0]["link"] not in body
    assert _accept(client, INVITE + body.split(INVITE)[1].split()[0]) == 200
    with ctx.tx() as session:
        states = sorted(
            (state, error)
            for state, error in session.execute(
                select(Notification.email_state, Notification.email_error).where(
                    Notification.email == "ola@uib.example.org"
                )
            )
        )
    assert states == [("expired", "not sent: a newer invitation link replaced it"), ("sent", "")]


def test_a_worker_starting_with_mail_on_sends_what_waits(
    ctx: Context, client: TestClient, mailbox: Mailbox, smtp_server: tuple[Mailbox, int], tmp_path: Path
) -> None:
    """A real ``levere worker`` process, started after mail was turned on, sends mail recorded before."""
    ctx.settings.smtp.enabled = False
    client.post("/api/users", json={"email": "ola@uib.example.org"}, headers=_helpdesk(ctx))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")} | {
        "LEVERE_DATABASE_URL": ctx.settings.resolved_database_url,
        "LEVERE_DATA_DIR": str(tmp_path / "worker-data"),
        "LEVERE_PUBLIC_URL": "http://levere.test",
        "LEVERE_SMTP__ENABLED": "true",
        "LEVERE_SMTP__PORT": str(smtp_server[1]),
        "LEVERE_SMTP__SENDER": "levere@test.invalid",
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "levere.cli.main", "worker", "--threads", "1"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        body = body_of(mailbox.wait_for("ola@uib.example.org", "Your levere account", timeout=60))
        assert "levere account accept-invite" in body
    finally:
        log.close()
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    with ctx.tx() as session:
        assert session.execute(select(Notification.email_state)).scalar_one() == "sent"


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(url=live_server.url, home=tmp_path / "cli")


def test_the_commands_print_the_link_while_mail_is_off(cli: Cli, live_server: LiveServer) -> None:
    ctx = live_server.ctx
    ctx.settings.smtp.enabled = False
    operator = make_user(ctx, "operator@levere.test", UserKind.HELPDESK, password=None)
    with ctx.tx() as session:
        full = accounts.issue_token(ctx, session, session.merge(operator), "cli").token
    cli.config("op").parent.mkdir(parents=True)  # signed in already (two-factor sign-in is tested apart)
    cli.config("op").write_text(f'url = "{cli.url}"\ntoken = "{full}"\n')

    out = cli.ok("op", "users", "create", "ola@uib.example.org", "--name", "Ola")
    assert "account ola@uib.example.org (user) created\n" in out and "invitation e-mailed" not in out
    assert "mail is off, so no invitation was e-mailed: give ola@uib.example.org this link" in out
    link = re.search(r"levere account accept-invite (\S+)", out)
    assert link and link.group(1).startswith(INVITE)

    line = cli.fails("op", "users", "create", "ola@uib.example.org")
    assert line == (
        "error: ola@uib.example.org is already invited and has not set a password yet; "
        "send a fresh link with 'levere invitations resend ola@uib.example.org'"
    )
    assert "ola@uib.example.org" in cli.ok("op", "invitations", "list")
    out = cli.ok("op", "invitations", "resend", "ola@uib.example.org")
    fresh = re.search(r"levere account accept-invite (\S+)", out)
    assert fresh and fresh.group(1) != link.group(1)
    assert "earlier links no longer work" in out

    cli.ok("op", "facilities", "create", "seq", "--contact", "c@seq.example.org")
    out = cli.ok("op", "facilities", "add-staff", "seq", "kari@seq.example.org")
    assert "is now staff of seq" in out and "accept-invite http://levere.test/invite/" in out

    # the invited person runs the printed command verbatim (the link names the public address,
    # which in this test is not where the server listens: --url says where it is)
    cli.ok("ola", "account", "accept-invite", fresh.group(1), "--url", cli.url, password="ola password 1")
    assert [i["email"] for i in cli.json("op", "invitations", "list")] == ["kari@seq.example.org"]
