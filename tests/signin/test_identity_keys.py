"""Crypt4GH public keys from the identity: the test provider releases ``crypt4ghPublicKeys`` for
dora (two keys, and two entries that are not keys); a sign-in keeps the valid ones on her linked
identity, logs the others without their content, and the keys are the default recipients the API,
the CLI (``levere account show``) and the portal's account page show."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from levere.api.app import create_app
from levere.auth import oidc
from levere.config import Settings
from levere.context import Context
from levere.crypt4gh.keys import PublicKey
from levere.db.models import AuditEvent, FederatedIdentity
from levere.domain.roles import UserKind
from levere.services import federation, identity_keys, portal_sessions
from tests.conftest import LiveServer
from tests.helpers import auth, make_user
from tests.oidc import LOOPBACK, Provider, browser_sign_in, providers, run_provider

DORA_KEYS = {"3e9aebd81d95bd8f", "c3e36083960ae13b"}
NOT_KEYS = ("AAAAAAAAAAAAAAAA", "not a key at all")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from run_provider(tmp_path_factory.mktemp("oidc"))


@pytest.fixture
def settings(settings: Settings, provider: Provider) -> Settings:
    oidc.CACHE.clear()
    settings.oidc = providers(provider.issuer)
    return settings


def sign_in(ctx: Context, login: str, token_name: str = "cli") -> federation.SignedIn:
    start = federation.start_browser(ctx, "test", LOOPBACK)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, login)
    return federation.finish_browser(ctx, answer["state"], answer["code"], token_name=token_name)


def linked(ctx: Context, email: str, subject: str) -> None:
    make_user(ctx, email, password=None)
    root = make_user(ctx, f"root-{subject}@levere.test", kind=UserKind.HELPDESK, password=None)
    federation.link_identity(ctx, root, email, "test", subject)


def keys_updated(ctx: Context) -> int:
    with ctx.tx() as session:
        return session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "identity.keys_updated")
        ).scalar_one()


def test_a_sign_in_keeps_the_valid_keys_the_provider_released(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    linked(ctx, "dora@levere.test", "dora")
    with caplog.at_level(logging.WARNING, logger="levere.services.identity_keys"):
        signed_in = sign_in(ctx, "dora")
    keys = identity_keys.default_recipient_keys(ctx, signed_in.user)
    assert {k.fingerprint for k in keys} == DORA_KEYS
    assert all(k.provider == "test" and isinstance(k.public_key(), PublicKey) for k in keys)
    assert all(k.pem.startswith("-----BEGIN CRYPT4GH PUBLIC KEY-----\n") for k in keys)  # the bare line too
    # the two entries that are not keys were left out, each with a warning that does not repeat it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("not a Crypt4GH public key" in w for w in warnings)
    assert "low-order" in warnings[0]
    assert not any(bad in w for w in warnings for bad in NOT_KEYS)
    assert keys_updated(ctx) == 1
    # the same keys at the next sign-in change nothing
    sign_in(ctx, "dora")
    assert keys_updated(ctx) == 1
    with ctx.tx() as session:
        link = session.execute(
            select(FederatedIdentity).where(FederatedIdentity.subject == "dora")
        ).scalar_one()
        assert len(link.crypt4gh_public_keys) == 2


def test_no_keys_released_means_no_default_recipient(ctx: Context) -> None:
    linked(ctx, "alice@levere.test", "alice")
    signed_in = sign_in(ctx, "alice")
    assert identity_keys.default_recipient_keys(ctx, signed_in.user) == []
    assert keys_updated(ctx) == 0


def test_the_api_and_the_portal_account_page_show_the_keys(ctx: Context) -> None:
    linked(ctx, "dora@levere.test", "dora")
    token = sign_in(ctx, "dora").issued.token
    portal = sign_in(ctx, "dora", token_name=portal_sessions.SESSION_TOKEN_NAME).issued.token
    with TestClient(create_app(ctx, start_worker=False)) as client:
        listed = client.get("/api/me/recipient-keys", headers=auth(token))
        assert listed.status_code == 200
        assert {k["fingerprint"] for k in listed.json()} == DORA_KEYS
        identities = client.get("/api/me/identities", headers=auth(token)).json()
        assert len(identities[0]["crypt4gh_public_keys"]) == 2
        client.cookies.set("levere_session", portal)
        page = client.get("/portal/account/tokens")
        assert page.status_code == 200
        assert "Crypt4GH keys from your sign-in" in page.text
        assert all(f"<code>{fp}</code>" in page.text for fp in DORA_KEYS)


def test_levere_account_show_lists_the_keys(live_server: LiveServer, tmp_path: Path) -> None:
    linked(live_server.ctx, "dora@levere.test", "dora")
    token = sign_in(live_server.ctx, "dora").issued.token
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")} | {
        "LEVERE_URL": live_server.url,
        "LEVERE_TOKEN": token,
        "LEVERE_CLI_CONFIG": str(tmp_path / "cli.toml"),
        "COLUMNS": "300",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "levere.cli.main", "account", "show"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert all(fp in shown.stdout for fp in DORA_KEYS), shown.stdout
    assert "S0pQvp1TcRvIXkydQld6kPry2bFgC4bmX8DwLNRaQxk=" in shown.stdout
