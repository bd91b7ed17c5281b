"""The application -> review -> provisioning flow, through the API, with e-mails checked in a real SMTP sink."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from levere.context import Context
from levere.db.models import Application, AuditEvent, Project
from levere.domain.roles import UserKind
from tests.conftest import Mailbox, body_of
from tests.helpers import GiB, auth, basic_world, make_user, token_for

FORM: dict[str, Any] = {
    "title": "Salmon lice transcriptomes",
    "pi_email": "pi@uib.example.org",
    "data_ownership": "University of Bergen",
    "funding_source": "Research Council of Norway",
    "grant_id": "RCN-123456",
    "description": "RNA-seq of salmon lice across life stages.",
    "facility": "norseq-oslo",
    "quota_area_bytes": "500G",
    "quota_longterm_bytes": "2T",
    "members": [
        {"email": "newcomer@uib.example.org", "role": "member"},
        {"email": "viewer@uib.example.org", "role": "viewer"},
    ],
}


def counts(ctx: Context) -> tuple[int, int, int]:
    with ctx.tx() as s:
        return (
            s.execute(select(func.count()).select_from(Application)).scalar_one(),
            s.execute(select(func.count()).select_from(Project)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
        )


def test_staff_drafts_pi_submits_helpdesk_approves_with_adjusted_quota(
    ctx: Context, client: TestClient, mailbox: Mailbox
) -> None:
    world = basic_world(ctx)
    staff, pi, helpdesk = (auth(token_for(ctx, u)) for u in (world.staff, world.pi, world.helpdesk))

    r = client.post("/api/applications", json=FORM, headers=staff)
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    assert r.json()["state"] == "draft"
    assert r.json()["quota_area_bytes"] == 500 * GiB
    confirm = mailbox.wait_for("pi@uib.example.org", f"confirm application {number}")
    assert "staff@norseq.example.org" in body_of(confirm)

    # only the PI submits; the drafting staff member cannot
    assert client.post(f"/api/applications/{number}/submit", headers=staff).status_code == 403
    r = client.post(f"/api/applications/{number}/submit", headers=pi)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "submitted"
    mailbox.wait_for("helpdesk@levere.test", f"New application {number}")

    queue = client.get("/api/applications/queue", headers=helpdesk).json()
    assert [a["number"] for a in queue] == [number]

    r = client.post(
        f"/api/applications/{number}/approve",
        json={"area_quota": "400G", "comment": "start smaller"},
        headers=helpdesk,
    )
    assert r.status_code == 200, r.text
    project = r.json()
    identifier = project["identifier"]
    assert identifier.startswith("LEV-")
    quotas = {q["tier"]: q["limit_bytes"] for q in project["quotas"]}
    assert quotas == {"area": 400 * GiB, "longterm": 2 * 1024 * GiB}
    assert project["facilities"] == ["norseq-oslo"]
    assert (ctx.settings.data_dir / "storage" / "area" / identifier).is_dir()

    members = {m["email"]: m for m in client.get(f"/api/projects/{identifier}/members", headers=pi).json()}
    assert members["pi@uib.example.org"]["role"] == "admin"
    assert members["newcomer@uib.example.org"]["role"] == "member"
    assert members["newcomer@uib.example.org"]["has_account"] is False
    assert members["viewer@uib.example.org"]["role"] == "viewer"

    approved = mailbox.wait_for("pi@uib.example.org", "approved")
    text = body_of(approved)
    assert identifier in text and "400.0 GiB" in text and "you asked for 500.0 GiB" in text
    invite = body_of(mailbox.wait_for("newcomer@uib.example.org", f"joined project {identifier}"))
    assert "as member" in invite and "http://levere.test/invite/" in invite
    assert f"levere download {identifier}" in invite and "levere login" in invite
    facility_mail = mailbox.wait_for("contact@norseq-oslo.example.org", f"{identifier} is ready")
    assert f"levere deliver {identifier}" in body_of(facility_mail)
    mailbox.wait_for("staff@norseq.example.org", f"{identifier} is ready")

    # the new member sets a password from the link and signs in
    secret = invite.split("http://levere.test/invite/")[1].split()[0]
    r = client.post("/api/invitations/accept", json={"secret": secret, "password": "a long enough password"})
    assert r.status_code == 200, r.text
    r = client.post(
        "/api/auth/login", json={"email": "newcomer@uib.example.org", "password": "a long enough password"}
    )
    assert r.status_code == 200
    newcomer = auth(r.json()["token"])
    assert [p["identifier"] for p in client.get("/api/projects", headers=newcomer).json()] == [identifier]
    # the link works once
    again = client.post("/api/invitations/accept", json={"secret": secret, "password": "another password 1"})
    assert again.status_code == 403 and "already used" in again.json()["message"]

    # in-app notifications mirror the e-mails
    notes = client.get("/api/me/notifications", headers=pi).json()
    assert any("approved" in n["subject"] for n in notes)


def test_incomplete_application_names_the_fields_and_changes_nothing(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    pi = auth(token_for(ctx, world.pi))
    r = client.post(
        "/api/applications", json={"title": "Only a title", "facility": "norseq-oslo"}, headers=pi
    )
    assert r.status_code == 201
    number = r.json()["number"]
    before = counts(ctx)
    r = client.post(f"/api/applications/{number}/submit", headers=pi)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation_failed"
    fields = body["details"]["fields"]
    assert set(fields) >= {
        "data_ownership",
        "funding_source",
        "description",
        "quota_area_bytes",
        "quota_longterm_bytes",
    }
    assert "required" in fields["description"]
    assert counts(ctx) == before
    assert client.get(f"/api/applications/{number}", headers=pi).json()["state"] == "draft"


def test_bad_field_values_are_named(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    pi = auth(token_for(ctx, world.pi))
    bad = FORM | {"pi_email": "not-an-email", "quota_area_bytes": "lots", "secure_project_id": "tsd-1"}
    r = client.post("/api/applications", json=bad, headers=pi)
    assert r.status_code == 422
    assert "quota_area_bytes" in r.json()["details"]["fields"]
    r = client.post(
        "/api/applications", json=FORM | {"pi_email": "not-an-email", "facility": "nowhere"}, headers=pi
    )
    assert r.status_code == 422
    fields = r.json()["details"]["fields"]
    assert "pi_email" in fields


def test_review_transitions_are_enforced(ctx: Context, client: TestClient, mailbox: Mailbox) -> None:
    world = basic_world(ctx)
    pi, helpdesk = auth(token_for(ctx, world.pi)), auth(token_for(ctx, world.helpdesk))
    number = client.post("/api/applications", json=FORM, headers=pi).json()["number"]
    # a draft cannot be approved
    r = client.post(f"/api/applications/{number}/approve", json={}, headers=helpdesk)
    assert r.status_code == 409 and "draft" in r.json()["message"]
    client.post(f"/api/applications/{number}/submit", headers=pi)
    # rejection needs a reason
    assert (
        client.post(f"/api/applications/{number}/reject", json={"reason": " "}, headers=helpdesk).status_code
        == 422
    )
    r = client.post(
        f"/api/applications/{number}/request-changes",
        json={"reason": "add the grant id of WP2"},
        headers=helpdesk,
    )
    assert r.json()["state"] == "changes_requested"
    assert "add the grant id of WP2" in body_of(mailbox.wait_for("pi@uib.example.org", "needs changes"))
    r = client.patch(f"/api/applications/{number}", json={"grant_id": "RCN-999"}, headers=pi)
    assert r.status_code == 200 and r.json()["grant_id"] == "RCN-999"
    client.post(f"/api/applications/{number}/submit", headers=pi)
    r = client.post(f"/api/applications/{number}/reject", json={"reason": "duplicate of 1"}, headers=helpdesk)
    assert r.json()["state"] == "rejected"
    assert "duplicate of 1" in body_of(mailbox.wait_for("pi@uib.example.org", "rejected"))

    before = counts(ctx)
    r = client.post(f"/api/applications/{number}/approve", json={}, headers=helpdesk)
    assert r.status_code == 409
    assert r.json()["error"] == "invalid_transition"
    assert r.json()["message"] == f"application {number} is rejected and cannot be approved"
    assert counts(ctx) == before
    # and a rejected application can no longer be edited
    assert client.patch(f"/api/applications/{number}", json={"title": "x"}, headers=pi).status_code == 409


def test_forged_expired_and_revoked_tokens_are_refused(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    before = counts(ctx)
    for token in ("lvr_0000000000000000_forged", "nonsense", ""):
        r = client.post("/api/applications", json=FORM, headers=auth(token))
        assert r.status_code == 401, token
    good = token_for(ctx, world.pi)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert client.get("/api/me", headers=auth(forged)).status_code == 401
    token_id = good.split("_")[1]
    assert client.delete(f"/api/me/tokens/{token_id}", headers=auth(good)).status_code == 200
    r = client.get("/api/me", headers=auth(good))
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    assert counts(ctx)[:2] == before[:2]


def test_wrong_role_changes_nothing(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    outsider = make_user(ctx, "outsider@example.org", UserKind.USER)
    pi = auth(token_for(ctx, world.pi))
    number = client.post("/api/applications", json=FORM, headers=pi).json()["number"]
    client.post(f"/api/applications/{number}/submit", headers=pi)
    before = counts(ctx)
    for who in (world.pi, world.staff, outsider):
        r = client.post(f"/api/applications/{number}/approve", json={}, headers=auth(token_for(ctx, who)))
        assert r.status_code == 403, who
        assert r.json()["error"] == "access_denied"
    assert counts(ctx)[:2] == before[:2]
