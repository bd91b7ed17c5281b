"""Signing in to the portal with an OpenID Connect provider, through HTTP, against the real test
provider (tests/oidc/provider.js): the button, the callback, the session it starts, and each refusal.

The same journey in Chromium is in ``tests/web/test_portal_oidc_browser.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from html import escape
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from levere.auth import oidc
from levere.config import OidcProviderSettings, Settings
from levere.context import Context
from levere.db.models import ApiToken, FederatedIdentity, User
from levere.domain.roles import UserKind
from levere.services import federation, invitations
from levere.services.accounts import sha256
from levere.web.federated import FLOW_COOKIE
from tests.helpers import make_user
from tests.oidc import PORTAL_REDIRECT, Provider, browser_sign_in, providers, run_provider
from tests.portal_support import csrf_of


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from run_provider(tmp_path_factory.mktemp("oidc"))


@pytest.fixture
def settings(settings: Settings, provider: Provider) -> Settings:
    oidc.CACHE.clear()
    settings.oidc = providers(provider.issuer)
    return settings


def link(ctx: Context, email: str, subject: str, kind: UserKind = UserKind.USER) -> None:
    make_user(ctx, email, kind=kind, password=None)
    root = make_user(ctx, "root@levere.test", kind=UserKind.HELPDESK, password=None)
    federation.link_identity(ctx, root, email, "test-web", subject)


def press(client: TestClient, page_url: str, provider: str = "test-web", **fields: str) -> Any:
    """Open a page and press its "Sign in with ..." button: the answer sends the browser away."""
    page = client.get(page_url)
    assert f'action="/portal/auth/oidc/{provider}"' in page.text
    return client.post(
        f"/portal/auth/oidc/{provider}", data={"csrf": csrf_of(page.text), **fields}, follow_redirects=False
    )


def destination(started: Any) -> str:
    """Where the page the button answered with moves on to (its ``Refresh`` header, and its link)."""
    assert started.status_code == 200, started.text[:300]
    url = started.headers["refresh"].split("url=", 1)[1]
    assert f'href="{escape(url)}"' in started.text
    return url


def come_back(client: TestClient, answer: dict[str, str]) -> Any:
    """The provider's redirect to levere's callback, followed to the portal's page."""
    first = client.get("/auth/oidc/callback", params=answer, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/portal/auth/oidc/callback?")
    return client.get(first.headers["location"], follow_redirects=False)


def sign_in_at_provider(client: TestClient, login: str, page_url: str = "/portal/sign-in", **kw: Any) -> Any:
    started = press(client, page_url, **{k: v for k, v in kw.items() if k in ("next", "mfa", "invitation")})
    answer = browser_sign_in(
        destination(started), PORTAL_REDIRECT, login, mfa=bool(kw.get("mfa")), deny=kw.get("deny", False)
    )
    return come_back(client, answer)


def count(ctx: Context, model: Any) -> int:
    with ctx.tx() as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_the_sign_in_page_has_a_button_for_every_provider(client: TestClient) -> None:
    page = client.get("/portal/sign-in")
    assert "Sign in with Test Login" in page.text  # the provider's title
    assert "Sign in with test-web" in page.text  # no title: its name
    assert page.text.count('name="mfa"') == 2


def test_signing_in_with_a_provider_starts_a_session_like_a_password(
    ctx: Context, client: TestClient
) -> None:
    link(ctx, "alice@levere.test", "alice")
    started = press(client, "/portal/sign-in", next="/portal/account/tokens")
    location = destination(started)
    assert location.startswith(ctx.settings.oidc.providers[1].issuer)
    assert "code_challenge_method=S256" in location and "nonce=" in location
    cookie = started.headers["set-cookie"]
    assert f"{FLOW_COOKIE}=" in cookie and "HttpOnly" in cookie and "Path=/portal" in cookie
    answer = browser_sign_in(location, PORTAL_REDIRECT, "alice")
    landed = come_back(client, answer)
    assert landed.status_code == 303 and landed.headers["location"] == "/portal/account/tokens"
    assert any(c.startswith("levere_session=") for c in landed.headers.get_list("set-cookie"))
    home = client.get("/portal/")
    assert home.status_code == 200 and "alice@levere.test" in home.text
    token = client.cookies.get("levere_session") or ""
    with ctx.tx() as session:
        record = session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar_one()
        assert record.name == "portal session" and not record.second_factor
        # a session's lifetime, not an API token's
        assert (
            record.expires_at - record.created_at
        ).total_seconds() <= ctx.settings.portal_session_minutes * 60 + 5
    # the state is spent: the same answer again signs nobody in
    again = come_back(client, answer)
    assert again.status_code == 400


def test_a_second_factor_from_the_provider_gives_the_helpdesk_a_full_session(
    ctx: Context, client: TestClient
) -> None:
    link(ctx, "desk@levere.test", "alice", kind=UserKind.HELPDESK)
    landed = sign_in_at_provider(client, "alice", mfa="yes")
    assert landed.status_code == 303 and landed.headers["location"] == "/portal/"
    token = client.cookies.get("levere_session") or ""
    with ctx.tx() as session:
        record = session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar_one()
        assert record.second_factor
    assert client.get("/portal/dashboard").status_code == 200


def test_the_helpdesk_without_a_second_factor_may_only_manage_the_account(
    ctx: Context, client: TestClient
) -> None:
    link(ctx, "desk@levere.test", "alice", kind=UserKind.HELPDESK)
    sign_in_at_provider(client, "alice")
    refused = client.get("/portal/dashboard", follow_redirects=False)
    assert refused.status_code == 303 and refused.headers["location"] == "/portal/account/two-factor"


def test_an_unlinked_identity_gets_a_page_saying_how_to_get_linked(ctx: Context, client: TestClient) -> None:
    users = count(ctx, User)
    page = sign_in_at_provider(client, "carol")
    assert page.status_code == 403
    assert "not linked to a levere account" in page.text
    assert "invitation" in page.text and "helpdesk" in page.text
    assert "levere_session" not in page.headers.get("set-cookie", "")
    assert count(ctx, User) == users and count(ctx, FederatedIdentity) == 0
    assert client.get("/portal/", follow_redirects=False).status_code == 303  # not signed in


def test_a_callback_this_browser_did_not_start_is_refused(ctx: Context, client: TestClient) -> None:
    """Someone else's answer (their code, their state) must not sign this browser in as them."""
    link(ctx, "alice@levere.test", "alice")
    started = press(client, "/portal/sign-in")
    answer = browser_sign_in(destination(started), PORTAL_REDIRECT, "alice")
    with TestClient(client.app) as victim:
        refused = come_back(victim, answer)
        assert refused.status_code == 400 and "browser that started it" in refused.text
        assert "levere_session" not in victim.cookies
    # the flow is untouched: the browser that started it still finishes it
    assert come_back(client, answer).status_code == 303


def test_a_sign_in_cancelled_at_the_provider_says_so(ctx: Context, client: TestClient) -> None:
    page = sign_in_at_provider(client, "alice", deny=True)
    assert page.status_code == 401 and "cancelled or refused at the provider" in page.text


def test_a_provider_that_is_down_gets_a_clear_page(ctx: Context, client: TestClient) -> None:
    ctx.settings.oidc.providers.append(
        OidcProviderSettings(name="down", title="Down Login", issuer="http://127.0.0.1:9", client_id="x")
    )
    started = press(client, "/portal/sign-in", provider="down")
    assert started.status_code == 502
    assert "not answering" in started.text and "Nothing was changed" in started.text


def test_an_invitation_accepted_with_a_provider_links_the_identity(ctx: Context, client: TestClient) -> None:
    root = make_user(ctx, "root@levere.test", kind=UserKind.HELPDESK, password=None)
    with ctx.tx() as session:
        _, secret = invitations.create_invitation(ctx, session, session.merge(root), "new@levere.test")
    page = client.get(f"/portal/invite/{secret}")
    assert "Sign in with test-web" in page.text and f'name="invitation" value="{secret}"' in page.text
    landed = sign_in_at_provider(client, "bob", page_url=f"/portal/invite/{secret}", invitation=secret)
    assert landed.status_code == 303
    assert "new@levere.test" in client.get("/portal/").text
    assert invitations.link_state(ctx, secret) is invitations.LinkState.USED
    with ctx.tx() as session:
        linked = session.execute(select(FederatedIdentity)).scalar_one()
        assert linked.subject == "bob" and urlsplit(linked.issuer).hostname == "127.0.0.1"
    # a used invitation's button is refused with a page that says so, before the provider is asked
    client.cookies.clear()
    used = press(client, "/portal/sign-in", invitation=secret)
    assert used.status_code == 410 and "invitation" in used.text
