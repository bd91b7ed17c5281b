"""Federated sign-in against a real OpenID Connect provider (tests/oidc/provider.js): the browser
flow with PKCE, the device grant, identity links, and the second factor the provider asserts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select

from levere.api.deps import SecondFactorUser
from levere.auth import oidc
from levere.config import Settings
from levere.context import Context
from levere.db.models import AuditEvent, FederatedIdentity, User
from levere.domain.errors import AuthenticationFailed, Conflict, ValidationFailed
from levere.domain.roles import UserKind
from levere.services import accounts, federation, invitations
from levere.services.accounts import Scope, resolve_token
from tests.helpers import auth, make_user
from tests.oidc import (
    LOOPBACK,
    PORTAL_REDIRECT,
    Provider,
    approve_device,
    browser_sign_in,
    providers,
    run_provider,
)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from run_provider(tmp_path_factory.mktemp("oidc"))


@pytest.fixture
def fed(settings: Settings, provider: Provider) -> Iterator[Context]:
    oidc.CACHE.clear()
    settings.oidc = providers(provider.issuer)
    context = Context.build(settings)
    yield context
    context.close()


@pytest.fixture
def client_for() -> Iterator[Callable[[Context], Any]]:
    from fastapi.testclient import TestClient

    from levere.api.app import create_app

    opened: list[TestClient] = []

    def make(ctx: Context) -> TestClient:
        opened.append(TestClient(create_app(ctx, start_worker=False)).__enter__())
        return opened[-1]

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def link(ctx: Context, email: str, subject: str, kind: UserKind = UserKind.USER) -> User:
    user = make_user(ctx, email, kind=kind, password=None)
    root = make_user(ctx, "root@levere.test", kind=UserKind.HELPDESK, password=None)
    federation.link_identity(ctx, root, email, "test", subject)
    return user


def audit_count(ctx: Context, action: str) -> int:
    with ctx.tx() as session:
        return session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        ).scalar_one()


def test_browser_sign_in_with_pkce_issues_a_levere_token(fed: Context) -> None:
    link(fed, "alice@levere.test", "alice")
    start = federation.start_browser(fed, "test", LOOPBACK)
    assert "code_challenge_method=S256" in start.authorization_url
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "alice")
    assert answer["state"] == start.state
    signed_in = federation.finish_browser(fed, answer["state"], answer["code"], iss=answer.get("iss"))
    assert signed_in.user.email == "alice@levere.test" and not signed_in.second_factor
    with fed.tx() as session:
        user, scopes = resolve_token(session, signed_in.issued.token)
    assert user.email == "alice@levere.test" and Scope.WRITE in scopes
    assert audit_count(fed, "user.signed_in") == 1


def test_the_portal_client_is_confidential_and_mfa_is_recognised(fed: Context) -> None:
    link(fed, "alice@levere.test", "alice")
    start = federation.start_browser(fed, "test-web", PORTAL_REDIRECT, mfa=True)
    assert "acr_values=" in start.authorization_url
    answer = browser_sign_in(start.authorization_url, PORTAL_REDIRECT, "alice", mfa=True)
    signed_in = federation.finish_browser(fed, answer["state"], answer["code"])
    assert signed_in.second_factor and signed_in.issued.record.second_factor


def test_device_grant_signs_in_after_the_person_approves(fed: Context) -> None:
    link(fed, "alice@levere.test", "alice")
    start = federation.start_device(fed, "test")
    assert isinstance(federation.poll_device(fed, start.handle), federation.StillPending)
    approve_device(start.verification_uri, start.user_code, "alice")
    signed_in = federation.poll_device(fed, start.handle)
    assert isinstance(signed_in, federation.SignedIn)
    assert signed_in.user.email == "alice@levere.test"
    with pytest.raises(Conflict, match="already used"):
        federation.poll_device(fed, start.handle)


def test_an_identity_linked_to_no_account_is_refused_and_nothing_is_made(fed: Context) -> None:
    start = federation.start_browser(fed, "test", LOOPBACK)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "carol")
    with fed.tx() as session:
        users_before = session.execute(select(func.count()).select_from(User)).scalar_one()
    with pytest.raises(AuthenticationFailed, match="not linked to a levere account") as refused:
        federation.finish_browser(fed, answer["state"], answer["code"])
    assert "carol@uni.example" in refused.value.message
    with fed.tx() as session:
        assert session.execute(select(func.count()).select_from(User)).scalar_one() == users_before
        assert session.execute(select(func.count()).select_from(FederatedIdentity)).scalar_one() == 0


def test_an_invitation_accepted_with_the_identity_links_it(fed: Context) -> None:
    root = make_user(fed, "root@levere.test", kind=UserKind.HELPDESK, password=None)
    with fed.tx() as session:
        _, secret = invitations.create_invitation(fed, session, session.merge(root), "new@levere.test")
    start = federation.start_browser(fed, "test", LOOPBACK, invitation=secret)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "bob")
    signed_in = federation.finish_browser(fed, answer["state"], answer["code"])
    # bob's provider address is unverified and different: the invitation, not the e-mail, links
    assert signed_in.user.email == "new@levere.test"
    assert invitations.link_state(fed, secret) is invitations.LinkState.USED
    assert audit_count(fed, "identity.linked") == 1
    again = federation.start_browser(fed, "test", LOOPBACK)
    answer = browser_sign_in(again.authorization_url, LOOPBACK, "bob")
    assert federation.finish_browser(fed, answer["state"], answer["code"]).user.email == "new@levere.test"


def test_a_helpdesk_operator_without_mfa_gets_an_account_only_token(fed: Context) -> None:
    link(fed, "ops@levere.test", "alice", kind=UserKind.HELPDESK)
    start = federation.start_browser(fed, "test", LOOPBACK)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "alice")
    signed_in = federation.finish_browser(fed, answer["state"], answer["code"])
    assert signed_in.needs_second_factor
    assert signed_in.issued.record.scopes == [Scope.ACCOUNT.value]
    start = federation.start_browser(fed, "test", LOOPBACK, mfa=True)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "alice", mfa=True)
    signed_in = federation.finish_browser(fed, answer["state"], answer["code"])
    assert not signed_in.needs_second_factor and Scope.REVIEW.value in signed_in.issued.record.scopes


def test_a_redirect_elsewhere_is_refused(fed: Context) -> None:
    with pytest.raises(ValidationFailed):
        federation.start_browser(fed, "test", "https://evil.example/callback")


def test_levere_totp_steps_a_federated_sign_in_up(fed: Context, client_for: Any) -> None:
    link(fed, "ops@levere.test", "alice", kind=UserKind.HELPDESK)
    with fed.tx() as session:
        ops = session.execute(select(User).where(User.email == "ops@levere.test")).scalar_one()
        secret = pyotp.parse_uri(accounts.totp_begin(session, ops)).secret
        ops.totp_enabled = True
    start = federation.start_browser(fed, "test", LOOPBACK)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "alice")
    weak = federation.finish_browser(fed, answer["state"], answer["code"]).issued.token
    api = client_for(fed)
    refused = api.get("/api/users", headers=auth(weak))
    assert refused.status_code == 403 and "step-up" in refused.json()["message"]
    wrong = api.post("/api/me/step-up", json={"code": "000000"}, headers=auth(weak))
    assert wrong.status_code == 401
    stepped = api.post("/api/me/step-up", json={"code": pyotp.TOTP(secret).now()}, headers=auth(weak))
    assert stepped.status_code == 200, stepped.text
    strong = stepped.json()["token"]
    assert api.get("/api/users", headers=auth(strong)).status_code == 200
    assert api.get("/api/me", headers=auth(weak)).status_code == 401  # the weak token was replaced
    assert federation.has_second_factor(fed, strong) and audit_count(fed, "token.stepped_up") == 1


def test_a_second_factor_route_refuses_a_token_without_one_and_says_how(fed: Context) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from levere.api.app import create_app

    app: FastAPI = create_app(fed, start_worker=False)

    @app.get("/api/test-secure-zone", openapi_extra={"x-levere-action": None})
    def secure(actor: SecondFactorUser) -> dict[str, str]:
        return {"email": actor.email}

    link(fed, "alice@levere.test", "alice")
    tokens = {}
    for mfa in (False, True):
        start = federation.start_browser(fed, "test", LOOPBACK, mfa=mfa)
        answer = browser_sign_in(start.authorization_url, LOOPBACK, "alice", mfa=mfa)
        tokens[mfa] = federation.finish_browser(fed, answer["state"], answer["code"]).issued.token
    with TestClient(app) as api:
        refused = api.get("/api/test-secure-zone", headers=auth(tokens[False]))
        assert refused.status_code == 403
        assert "--mfa" in refused.json()["message"] and "step-up" in refused.json()["message"]
        assert api.get("/api/test-secure-zone", headers=auth(tokens[True])).json() == {
            "email": "alice@levere.test"
        }


def test_the_api_flows_as_the_portal_and_the_cli_call_them(fed: Context, client_for: Any) -> None:
    link(fed, "alice@levere.test", "alice")
    api = client_for(fed)
    listed = api.get("/api/auth/providers").json()
    assert {p["name"]: p["device_grant"] for p in listed} == {"test": True, "test-web": False}
    start = api.post("/api/auth/oidc/test-web/browser", json={"redirect_uri": PORTAL_REDIRECT, "mfa": True})
    assert start.status_code == 200, start.text
    answer = browser_sign_in(start.json()["authorization_url"], PORTAL_REDIRECT, "alice", mfa=True)
    finished = api.post("/api/auth/oidc/callback", json={**answer, "token_name": "portal"})
    assert finished.status_code == 200, finished.text
    body = finished.json()
    assert body["email"] == "alice@levere.test" and body["second_factor"] is True
    assert api.get("/api/me", headers=auth(body["token"]["token"])).json()["email"] == "alice@levere.test"
    replayed = api.post("/api/auth/oidc/callback", json=answer)
    assert replayed.status_code == 409 and "already used" in replayed.json()["message"]
    device = api.post("/api/auth/oidc/test/device", json={}).json()
    assert (
        api.post("/api/auth/oidc/device/poll", json={"handle": device["handle"]}).json()["status"]
        == "pending"
    )
    approve_device(device["verification_uri"], device["user_code"], "alice")
    polled = api.post("/api/auth/oidc/device/poll", json={"handle": device["handle"]}).json()
    assert polled["status"] == "signed_in" and polled["signed_in"]["email"] == "alice@levere.test"
    elsewhere = api.post("/api/auth/oidc/test/browser", json={"redirect_uri": "https://evil.example/cb"})
    assert elsewhere.status_code == 422
    unknown = api.post("/api/auth/oidc/nope/device", json={})
    assert unknown.status_code == 404 and "test, test-web" in unknown.json()["message"]
