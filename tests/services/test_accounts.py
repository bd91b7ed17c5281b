"""Accounts and sign-in through the API: password hashes, TOTP, tokens, rate limits, invitations."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update

from levere.cli.errors import hint_for
from levere.context import Context
from levere.db.models import ApiToken, Invitation, LoginAttempt, User, utcnow
from levere.domain.errors import AccessDenied, NotFound
from levere.domain.roles import UserKind
from levere.services import accounts, invitations
from tests.conftest import Mailbox, body_of
from tests.helpers import PASSWORD, auth, make_facility, make_user, token_for


def login(client: TestClient, email: str, password: str = PASSWORD, **extra: Any) -> Any:
    return client.post("/api/auth/login", json={"email": email, "password": password, **extra})


def all_values(ctx: Context, table: str) -> str:
    """Every value of every row of a table, as one text (to look for secrets stored in clear)."""
    with ctx.tx() as session:
        rows = session.execute(text(f"SELECT * FROM {table}")).all()
    return "\n".join(str(value) for row in rows for value in row)


# --- passwords ---------------------------------------------------------------------------------


def test_passwords_are_argon2id_and_never_stored_or_shown(ctx: Context, client: TestClient) -> None:
    user = make_user(ctx, "someone@uni.example.org")
    with ctx.tx() as session:
        stored = session.execute(select(User).where(User.email == user.email)).scalar_one()
        assert stored.password_hash is not None and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in all_values(ctx, "users")
    assert "argon2" not in repr(stored) and PASSWORD not in repr(stored)

    r = login(client, user.email)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert token.startswith("lvr_") and token not in all_values(ctx, "api_tokens")
    with ctx.tx() as session:
        record = session.execute(select(ApiToken)).scalar_one()
        assert token not in repr(record) and record.secret_hash not in repr(record)
    # no response about the account carries a secret
    me = client.get("/api/me", headers=auth(token)).json()
    assert "password_hash" not in me and "totp_secret" not in me and me["has_password"] is True
    listed = client.get("/api/me/tokens", headers=auth(token)).json()
    assert token not in str(listed) and "secret_hash" not in str(listed)


def test_change_password(ctx: Context, client: TestClient) -> None:
    user = make_user(ctx, "someone@uni.example.org")
    headers = auth(token_for(ctx, user))
    r = client.post(
        "/api/me/password", json={"current": "wrong one", "new": "a new password 1"}, headers=headers
    )
    assert r.status_code == 422 and "current" in r.json()["details"]["fields"]
    r = client.post("/api/me/password", json={"current": PASSWORD, "new": "short"}, headers=headers)
    assert r.status_code == 422 and "at least 10" in r.json()["message"]
    r = client.post(
        "/api/me/password", json={"current": PASSWORD, "new": "a new password 1"}, headers=headers
    )
    assert r.status_code == 200
    assert login(client, user.email).status_code == 401
    assert login(client, user.email, "a new password 1").status_code == 200


def test_wrong_password_and_unknown_account_read_the_same(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "someone@uni.example.org")
    wrong = login(client, "someone@uni.example.org", "not the password")
    unknown = login(client, "nobody@uni.example.org", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["message"] == unknown.json()["message"] == "wrong e-mail or password"


# --- two-factor sign-in ------------------------------------------------------------------------


# Codes: the confirmation uses the code of the current 30-second step and sign-ins the next step's
# (one step of clock drift is accepted); both stay valid for at least 30 seconds from ``now``, so
# the test needs no sleeping and no luck with step boundaries.


def test_helpdesk_must_enrol_totp_then_needs_a_code_once(ctx: Context, client: TestClient) -> None:
    operator = make_user(ctx, "operator@levere.test", UserKind.HELPDESK)
    r = login(client, operator.email)
    assert r.status_code == 200
    first = auth(r.json()["token"])
    assert r.json()["info"]["scopes"] == ["account"]
    # the first token only enrols: everything else is refused with a clear message
    for method, path in (("GET", "/api/applications/queue"), ("GET", "/api/projects"), ("GET", "/api/users")):
        denied = client.request(method, path, headers=first)
        assert denied.status_code == 403, path
        assert "set up two-factor sign-in first" in denied.json()["message"]
    assert client.get("/api/me", headers=first).status_code == 200
    # nor can it mint itself a better token
    r = client.post("/api/me/tokens", json={"name": "x", "scopes": ["review"]}, headers=first)
    assert r.status_code == 201 and r.json()["info"]["scopes"] == ["account"]

    uri = client.post("/api/me/totp", headers=first).json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/") and "issuer=levere" in uri
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    r = client.post(
        "/api/me/totp/confirm", json={"code": "000000" if totp.now() != "000000" else "111111"}, headers=first
    )
    assert r.status_code == 422 and "code" in r.json()["details"]["fields"]
    now = time.time()
    r = client.post("/api/me/totp/confirm", json={"code": totp.at(now)}, headers=first)
    assert r.status_code == 200 and r.json()["totp_enabled"] is True
    # the confirmation is the second factor: the enrol-only token is replaced by a full one at once
    upgraded = r.json()["token"]
    assert set(upgraded["info"]["scopes"]) == {"read", "write", "review", "account"}
    assert client.get("/api/me", headers=first).status_code == 401  # the enrol-only token is revoked
    assert client.get("/api/applications/queue", headers=auth(upgraded["token"])).status_code == 200

    r = login(client, operator.email)
    assert r.status_code == 401 and "one-time code" in r.json()["message"]
    # which option gives the code is the CLI's word (its hint), not the service's
    assert "--totp" not in r.json()["message"] and r.json()["details"]["reason"] == "one_time_code_missing"
    assert "--totp CODE" in hint_for(r.json()["error"], r.json()["details"])
    with ctx.tx() as session:  # five failures in a row would lock the account: start afresh
        session.execute(delete(LoginAttempt))
    # a wrong password says nothing about the code, right or wrong
    r = login(client, operator.email, "wrong password", totp=totp.at(now + 30))
    assert r.status_code == 401 and r.json()["message"] == "wrong e-mail or password"
    # the confirmation's code was used: the sign-in says so, and what to do
    r = login(client, operator.email, totp=totp.at(now))
    assert r.status_code == 401 and r.json()["error"] == "one_time_code_used"
    assert r.json()["message"] == "this code was already used; wait for the next one"
    # a code from long ago (expired) or a wrong one reads differently from a wrong password
    r = login(client, operator.email, totp=totp.at(now - 600))
    assert r.status_code == 401 and r.json()["error"] == "one_time_code_wrong"
    assert "wrong or has expired" in r.json()["message"]
    r = login(client, operator.email, totp=totp.at(now + 30))
    assert r.status_code == 200, r.text
    full = auth(r.json()["token"])
    assert set(r.json()["info"]["scopes"]) == {"read", "write", "review", "account"}
    assert client.get("/api/applications/queue", headers=full).status_code == 200
    # the same code is good once
    r = login(client, operator.email, totp=totp.at(now + 30))
    assert r.status_code == 401 and r.json()["error"] == "one_time_code_used"
    # enrolling twice is refused
    assert client.post("/api/me/totp", headers=full).status_code == 409


def test_a_reused_code_cannot_confirm_enrolment(ctx: Context, client: TestClient) -> None:
    user = make_user(ctx, "twice@uni.example.org")
    headers = auth(login(client, user.email).json()["token"])
    totp = pyotp.parse_uri(client.post("/api/me/totp", headers=headers).json()["otpauth_uri"])
    now = time.time()
    with ctx.tx() as session:  # as if the code had been used already
        session.merge(user).totp_last_step = int(now) // 30
    r = client.post("/api/me/totp/confirm", json={"code": totp.at(now)}, headers=headers)
    assert r.status_code == 422
    assert r.json()["details"]["fields"]["code"] == "this code was already used; wait for the next one"
    r = client.post("/api/me/totp/confirm", json={"code": totp.at(now + 30)}, headers=headers)
    assert r.status_code == 200 and r.json()["token"] is None  # a full token stays as it was
    assert client.get("/api/me", headers=headers).status_code == 200


def test_any_user_may_enrol_totp(ctx: Context, client: TestClient) -> None:
    user = make_user(ctx, "someone@uni.example.org")
    headers = auth(login(client, user.email).json()["token"])
    totp = pyotp.parse_uri(client.post("/api/me/totp", headers=headers).json()["otpauth_uri"])
    assert isinstance(totp, pyotp.TOTP)
    now = time.time()
    assert (
        client.post("/api/me/totp/confirm", json={"code": totp.at(now)}, headers=headers).status_code == 200
    )
    assert login(client, user.email).status_code == 401
    assert login(client, user.email, totp=totp.at(now + 30)).status_code == 200


def test_a_one_time_code_with_other_characters_is_a_wrong_code(ctx: Context, client: TestClient) -> None:
    """Found by the contract fuzzer: a code with non-ASCII characters crashed the comparison (500)."""
    user = make_user(ctx, "someone@uni.example.org")
    headers = auth(login(client, user.email).json()["token"])
    assert client.post("/api/me/totp", headers=headers).status_code == 200
    for code in ("\u0661\u0662\u0663\u0664\u0665\u0666", "\x1a\xde.\xc4"):
        r = client.post("/api/me/totp/confirm", json={"code": code}, headers=headers)
        assert r.status_code == 422 and r.json()["details"]["fields"]["code"].startswith("the one-time code")


# --- rate limits -------------------------------------------------------------------------------


def test_failed_sign_ins_lock_the_account_until_the_window_passes(ctx: Context, client: TestClient) -> None:
    # a window that a loaded machine does not outrun with four Argon2 checks (~0.2 s each, alone)
    ctx.settings.login_max_failures = 3
    ctx.settings.login_window_seconds = 4
    user = make_user(ctx, "someone@uni.example.org")
    for _ in range(3):
        assert login(client, user.email, "guess guess guess").status_code == 401
    last_failure = time.monotonic()
    r = login(client, user.email)  # even the right password
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_attempts" and "wait 4 seconds" in r.json()["message"]
    time.sleep(max(0.0, 4.1 - (time.monotonic() - last_failure)))
    assert login(client, user.email).status_code == 200


def test_failures_from_one_client_lock_out_that_client(ctx: Context, client: TestClient) -> None:
    ctx.settings.login_max_client_failures = 4
    make_user(ctx, "someone@uni.example.org")
    for i in range(4):
        assert login(client, f"guess{i}@uni.example.org", "guess guess guess").status_code == 401
    r = login(client, "someone@uni.example.org")
    assert r.status_code == 429


# --- tokens ------------------------------------------------------------------------------------


def test_scoped_tokens(ctx: Context, client: TestClient) -> None:
    user = make_user(ctx, "someone@uni.example.org", password=None)
    full = auth(token_for(ctx, user))
    r = client.post("/api/me/tokens", json={"name": "pipeline", "scopes": ["read"]}, headers=full)
    assert r.status_code == 201
    read_only = auth(r.json()["token"])
    assert client.get("/api/projects", headers=read_only).status_code == 200
    r = client.post("/api/applications", json={"title": "x"}, headers=read_only)
    assert r.status_code == 403 and "lacks the 'write' scope" in r.json()["message"]
    # managing tokens needs the account scope; a token never grants more than it has
    assert client.get("/api/me/tokens", headers=read_only).status_code == 403
    r = client.post("/api/me/tokens", json={"name": "more", "scopes": ["read", "write"]}, headers=full)
    assert r.status_code == 201 and r.json()["info"]["scopes"] == ["read", "write"]
    # login can ask for scopes too
    make_user(ctx, "other@uni.example.org")
    r = login(client, "other@uni.example.org", scopes=["read"], lifetime_days=1)
    assert r.json()["info"]["scopes"] == ["read"]
    assert client.post("/api/applications", json={}, headers=auth(r.json()["token"])).status_code == 403
    assert login(client, "other@uni.example.org", lifetime_days=400).status_code == 422


def test_expired_revoked_and_forged_tokens(ctx: Context, client: TestClient) -> None:
    user = make_user(ctx, "someone@uni.example.org", password=None)
    other = make_user(ctx, "other@uni.example.org", password=None)
    token = token_for(ctx, user)
    spare = token_for(ctx, user)
    token_id, spare_id = token.split("_")[1], spare.split("_")[1]

    listed = client.get("/api/me/tokens", headers=auth(token)).json()
    assert {t["id"] for t in listed} == {token_id, spare_id}
    assert all(t["revoked_at"] is None for t in listed)
    # someone else's token cannot be revoked (nor even seen)
    assert client.delete(f"/api/me/tokens/{spare_id}", headers=auth(token_for(ctx, other))).status_code == 404

    r = client.delete(f"/api/me/tokens/{spare_id}", headers=auth(token))
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.get("/api/me", headers=auth(spare))
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert [
        t["revoked_at"] is not None for t in client.get("/api/me/tokens", headers=auth(token)).json()
    ] == [
        False,
        True,
    ]

    with ctx.tx() as session:
        session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = client.get("/api/me", headers=auth(token))
    assert r.status_code == 401 and "expired" in r.json()["message"]

    fresh = token_for(ctx, user)
    for forged in (
        fresh[:-1] + ("A" if fresh[-1] != "A" else "B"),  # right id, wrong secret
        "lvr_0000000000000000_" + "x" * 43,
        "nonsense",
    ):
        r = client.get("/api/me", headers=auth(forged))
        assert r.status_code == 401 and "not valid" in r.json()["message"], forged
    assert client.get("/api/me", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/api/me").json()["message"].startswith("sign in first")
    assert client.get("/api/me", headers=auth(fresh)).status_code == 200


# --- accounts and invitations --------------------------------------------------------------------


def invitation_secret(message_body: str) -> str:
    return message_body.split("http://levere.test/invite/")[1].split()[0]


def test_helpdesk_makes_an_account_and_its_owner_sets_a_password(
    ctx: Context, client: TestClient, mailbox: Mailbox
) -> None:
    helpdesk = auth(token_for(ctx, make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK, password=None)))
    r = client.post(
        "/api/users", json={"email": "New.Person@Uni.example.org", "name": "New"}, headers=helpdesk
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "new.person@uni.example.org" and r.json()["has_password"] is False
    body = body_of(mailbox.wait_for("new.person@uni.example.org", "Your levere account"))
    assert "helpdesk@levere.test has made you a levere account" in body and "levere login" in body
    secret = invitation_secret(body)
    assert (
        login(client, "new.person@uni.example.org", "anything at all")
        .json()["message"]
        .endswith("follow the link in the invitation")
    )

    r = client.post("/api/invitations/accept", json={"secret": secret, "password": "short"})
    assert r.status_code == 422  # and the link still works
    r = client.post("/api/invitations/accept", json={"secret": secret, "password": "my own password 1"})
    assert r.status_code == 200 and r.json()["has_password"] is True
    assert login(client, "new.person@uni.example.org", "my own password 1").status_code == 200
    again = client.post("/api/invitations/accept", json={"secret": secret, "password": "another password 2"})
    assert again.status_code == 403 and "already used" in again.json()["message"]
    assert (
        client.post("/api/invitations/accept", json={"secret": "x" * 43, "password": "p" * 12}).status_code
        == 404
    )
    # a duplicate account is refused
    r = client.post("/api/users", json={"email": "new.person@uni.example.org"}, headers=helpdesk)
    assert r.status_code == 409


def test_an_expired_invitation_is_refused(ctx: Context, client: TestClient) -> None:
    with ctx.tx() as session:
        user = accounts.create_user(session, None, "late@uni.example.org")
        invitation, secret = invitations.create_invitation(ctx, session, None, user.email)
    with ctx.tx() as session:
        session.execute(
            update(Invitation)
            .where(Invitation.id == invitation.id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    r = client.post("/api/invitations/accept", json={"secret": secret, "password": "my own password 1"})
    assert r.status_code == 403 and "expired" in r.json()["message"]
    with ctx.tx() as session:
        assert session.execute(select(User.password_hash).where(User.email == user.email)).scalar() is None


def test_a_second_invitation_does_not_reset_a_password(ctx: Context, client: TestClient) -> None:
    with ctx.tx() as session:
        user = accounts.create_user(session, None, "twice@uni.example.org")
        _, first = invitations.create_invitation(ctx, session, None, user.email)
        _, second = invitations.create_invitation(ctx, session, None, user.email)
    assert (
        client.post(
            "/api/invitations/accept", json={"secret": first, "password": "first password 1"}
        ).status_code
        == 200
    )
    r = client.post("/api/invitations/accept", json={"secret": second, "password": "second password 2"})
    assert r.status_code == 409 and "already has a password" in r.json()["message"]
    assert "levere " not in r.json()["message"]
    assert (
        hint_for("conflict", r.json()["details"])
        == "sign in with 'levere login --email twice@uni.example.org'"
    )
    assert login(client, user.email, "first password 1").status_code == 200


def test_facility_staff_are_added_new_or_existing(ctx: Context, client: TestClient, mailbox: Mailbox) -> None:
    make_facility(ctx, "seq-a")
    helpdesk = auth(token_for(ctx, make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK, password=None)))
    make_user(ctx, "existing@uni.example.org", password=None)
    r = client.post(
        "/api/facilities/seq-a/staff", json={"email": "fresh@seq-a.example.org"}, headers=helpdesk
    )
    assert r.status_code == 201 and r.json()["kind"] == "facility"
    assert "staff of Seq-A" in body_of(mailbox.wait_for("fresh@seq-a.example.org", "Your levere account"))
    r = client.post(
        "/api/facilities/seq-a/staff", json={"email": "existing@uni.example.org"}, headers=helpdesk
    )
    assert r.status_code == 201 and r.json()["kind"] == "facility" and r.json()["facility_id"]
    mailbox.wait_for("existing@uni.example.org", "You are now staff of Seq-A")
    assert (
        client.post(
            "/api/facilities/seq-a/staff", json={"email": "existing@uni.example.org"}, headers=helpdesk
        ).status_code
        == 409
    )
    r = client.post("/api/facilities/seq-a/staff", json={"email": "helpdesk@levere.test"}, headers=helpdesk)
    assert r.status_code == 409 and "cannot also be staff" in r.json()["message"]
    assert (
        client.post(
            "/api/facilities/nowhere/staff", json={"email": "a@b.example.org"}, headers=helpdesk
        ).status_code
        == 404
    )
    r = client.post(
        "/api/users",
        json={"email": "x@y.example.org", "kind": "facility", "facility": "nowhere"},
        headers=helpdesk,
    )
    assert r.status_code == 422 and "facility" in r.json()["details"]["fields"]


BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [
    ("/api/auth/login", {"email": "a" * 400 + "@x.example.org", "password": "p"}, "email"),
    ("/api/users", {"email": "a" * 400 + "@x.example.org"}, "email"),
    ("/api/users", {"email": "ok@x.example.org", "name": "n" * 300}, "name"),
    ("/api/users", {"email": "not an email"}, "email"),
    ("/api/facilities", {"name": "f" * 100, "contact_email": "c@x.example.org"}, "name"),
    ("/api/applications", {"pi_email": "p" * 330 + "@x.example.org"}, "pi_email"),
    ("/api/applications", {"quota_area_bytes": "99999999P"}, "quota_area_bytes"),
    ("/api/applications", {"quota_area_bytes": -5}, "quota_area_bytes"),
    ("/api/applications", {"members": [{"email": "m" * 330 + "@x.example.org"}]}, "members.0.email"),
    ("/api/applications", {"members": [{"email": "m@x.example.org", "role": "owner"}]}, "members.0.role"),
]


def test_oversized_or_bad_input_is_a_422_naming_the_field(ctx: Context, client: TestClient) -> None:
    """Longer than a column holds must be refused before the database sees it (PostgreSQL would fail)."""
    helpdesk = auth(token_for(ctx, make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK, password=None)))
    for path, body, field in BAD_INPUT:
        r = client.post(path, json=body, headers=helpdesk)
        assert r.status_code == 422, (path, body, r.text)
        assert field in r.json()["details"]["fields"], r.json()


def test_account_errors_leave_the_commands_to_the_front_end(ctx: Context) -> None:
    """The service says what is wrong; the CLI's hint, by code and reason, says which command helps."""
    user = make_user(ctx, "plain@uni.example.org", password=None)
    with pytest.raises(NotFound) as not_started:
        accounts.finish_totp(ctx, user, "123456", "lvr_x_y")
    assert "levere" not in not_started.value.message
    assert "levere account totp-enrol" in hint_for(not_started.value.code, not_started.value.details)
    with pytest.raises(AccessDenied) as narrow:
        accounts.new_token(
            ctx, user, "wide", frozenset(accounts.ALL_SCOPES), None, frozenset({accounts.Scope.READ})
        )
    assert "levere" not in narrow.value.message and "'" not in narrow.value.message
    assert narrow.value.details["scopes"] == ["account", "review", "write"]
    assert "levere login" in hint_for(narrow.value.code, narrow.value.details)
    # a denial for another reason gets no sign-in hint
    assert hint_for("access_denied", {}) == ""
