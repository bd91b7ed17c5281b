"""Signing in to the portal with an OpenID Connect provider in a real Chromium: the button, the
provider's own sign-in page (tests/oidc/provider.js), and back to the portal, signed in or told why not.

Playwright drives Debian's ``chromium`` (``scripts/install-test-deps.sh``); the portal is a real
``levere serve`` and the provider a real oidc-provider, each a child process stopped by its PID.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from levere.config import OidcSettings, Settings
from levere.context import Context
from levere.domain.roles import UserKind
from levere.services import federation
from tests.deliveries_support import Server
from tests.helpers import make_user
from tests.oidc import MFA, PASSWORD, Provider, run_provider

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"no browser at {CHROMIUM}: run scripts/install-test-deps.sh (Debian's chromium)",
)


@pytest.fixture
def portal(settings: Settings, tmp_path: Path) -> Server:
    """Not started yet: the provider must know the portal's callback first."""
    return Server(settings, tmp_path)


@pytest.fixture
def provider(portal: Server, tmp_path: Path) -> Iterator[Provider]:
    yield from run_provider(tmp_path, portal_redirects=(portal.url + federation.PORTAL_CALLBACK,))


@pytest.fixture
def running(ctx: Context, portal: Server, provider: Provider) -> Iterator[Server]:
    configured = {
        "providers": [
            {
                "name": "test-web", "title": "Test Login", "issuer": provider.issuer,
                "client_id": "levere-portal", "client_secret": "portal-secret-for-tests-only",
                "mfa_acr_values": MFA, "mfa_acr": [MFA], "device_grant": False,
            }
        ]
    }  # fmt: skip
    ctx.settings.oidc = OidcSettings.model_validate(configured)  # the test's links name the provider
    portal.start(LEVERE_OIDC=json.dumps(configured))
    yield portal
    portal.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        # as root in a container, Chromium's own sandbox cannot start; the pages are our own
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _at_the_provider(browser: Any, url: str, login: str, *, mfa: bool = False) -> Any:
    """Press "Sign in with Test Login" on the portal, and sign in on the provider's own page."""
    page = browser.new_context(base_url=url).new_page()
    page.goto("/portal/")
    if mfa:
        page.get_by_label("Ask Test Login for a second factor").check()
    page.get_by_role("button", name="Sign in with Test Login").click()
    page.wait_for_url("**/interaction/**")
    page.get_by_label("Account").fill(login)
    page.get_by_label("Password").fill(PASSWORD)
    if mfa:
        page.get_by_label("Second factor given").check()
    page.get_by_role("button", name="Sign in").click()
    return page


def test_sign_in_with_the_provider_lands_signed_in(ctx: Context, running: Server, browser: Any) -> None:
    make_user(ctx, "desk@levere.test", kind=UserKind.HELPDESK, password=None)
    root = make_user(ctx, "root@levere.test", kind=UserKind.HELPDESK, password=None)
    federation.link_identity(ctx, root, "desk@levere.test", "test-web", "alice")
    page = _at_the_provider(browser, running.url, "alice", mfa=True)
    page.wait_for_url(f"{running.url}/portal/")
    assert "desk@levere.test" in page.content()
    # the provider's second factor carried into the session: the helpdesk's pages open
    response = page.goto("/portal/dashboard")
    assert response is not None and response.status == 200


def test_an_unlinked_identity_is_told_how_to_get_linked(ctx: Context, running: Server, browser: Any) -> None:
    page = _at_the_provider(browser, running.url, "carol")
    page.wait_for_url("**/portal/auth/oidc/callback**")
    assert page.get_by_role("heading", name="Your identity is not linked to a levere account").count() == 1
    assert "ask the helpdesk" in page.locator("#sign-in-problem").inner_text()
    response = page.goto("/portal/")
    assert response is not None and "/portal/sign-in" in page.url  # still not signed in
