"""Bad input to federated sign-in, each refused with a clear message and nothing changed: ID tokens
that do not verify (made with the real provider's own key, or another), replayed state, a code used
twice, device codes denied or expired, providers that are down or answer garbage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import func, select

from levere.auth import oidc
from levere.config import OidcProviderSettings, OidcSettings, Settings
from levere.context import Context
from levere.db.models import ApiToken, SignInFlow
from levere.domain.errors import AuthenticationFailed, Conflict, NotFound, ProviderUnavailable
from levere.domain.roles import UserKind
from levere.services import federation
from tests.conftest import free_port
from tests.helpers import make_user
from tests.oidc import LOOPBACK, Provider, approve_device, browser_sign_in, providers, run_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    # device codes live 3 seconds here, so that one can expire within a test
    yield from run_provider(tmp_path_factory.mktemp("oidc"), device_code=3)


@pytest.fixture
def fed(settings: Settings, provider: Provider) -> Iterator[Context]:
    oidc.CACHE.clear()
    settings.oidc = providers(provider.issuer)
    context = Context.build(settings)
    make_user(context, "alice@levere.test", password=None)
    root = make_user(context, "root@levere.test", kind=UserKind.HELPDESK, password=None)
    federation.link_identity(context, root, "alice@levere.test", "test", "alice")
    yield context
    context.close()


def counts(ctx: Context) -> tuple[int, int]:
    with ctx.tx() as session:
        tokens = session.execute(select(func.count()).select_from(ApiToken)).scalar_one()
        flows = session.execute(select(func.count()).select_from(SignInFlow)).scalar_one()
    return tokens, flows


# --- ID tokens that must not verify ------------------------------------------------------------------


def claims(provider: Provider, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": provider.issuer,
        "sub": "alice",
        "aud": "levere-cli",
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(
    provider: Provider,
    payload: dict[str, Any],
    key: RSAKey | None = None,
    kid: str | None = "test-provider-key",
) -> str:
    header = {"alg": "RS256"} | ({"kid": kid} if kid else {})
    return jwt.encode(header, payload, key or provider.keys.keys[0])


def settings_of(fed: Context) -> OidcProviderSettings:
    return federation.provider(fed, "test")


def test_a_token_the_provider_signed_for_us_verifies(fed: Context, provider: Provider) -> None:
    """The control: the cases below differ from this one in one thing each."""
    identity = oidc.verify_id_token(settings_of(fed), {"id_token": signed(provider, claims(provider))}, "n-1")
    assert identity.subject == "alice"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"iss": "https://other.example"}, "wrong 'iss'"),
        ({"aud": "someone-else"}, "issued for another client"),
        ({"aud": ["levere-cli", "someone-else"]}, "issued for another client"),  # several, without azp
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "has expired"),
        ({"nonce": "n-2"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"sub": None}, "lacks 'sub'"),
    ],
)
def test_an_id_token_with_a_wrong_claim_is_refused(
    fed: Context, provider: Provider, change: dict[str, Any], words: str
) -> None:
    token = signed(provider, claims(provider, **change))
    with pytest.raises(AuthenticationFailed, match=words):
        oidc.verify_id_token(settings_of(fed), {"id_token": token}, "n-1")


def test_an_id_token_by_a_key_the_provider_does_not_publish_is_refused(
    fed: Context, provider: Provider
) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    token = signed(provider, claims(provider), stranger, kid="stranger")
    with pytest.raises(AuthenticationFailed, match="does not publish"):
        oidc.verify_id_token(settings_of(fed), {"id_token": token}, "n-1")
    # the same key under the provider's own key id: the signature does not verify
    forged = signed(provider, claims(provider), stranger, kid="test-provider-key")
    with pytest.raises(AuthenticationFailed, match="no key test publishes verifies"):
        oidc.verify_id_token(settings_of(fed), {"id_token": forged}, "n-1")


def test_an_unsigned_or_malformed_id_token_is_refused(fed: Context, provider: Provider) -> None:
    import base64

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = f"{part({'alg': 'none'})}.{part(claims(provider))}."
    with pytest.raises(AuthenticationFailed, match="unsigned"):
        oidc.verify_id_token(settings_of(fed), {"id_token": unsigned}, "n-1")
    with pytest.raises(AuthenticationFailed, match="malformed"):
        oidc.verify_id_token(settings_of(fed), {"id_token": "not.a.token"}, "n-1")
    with pytest.raises(ProviderUnavailable, match="no ID token"):
        oidc.verify_id_token(settings_of(fed), {"access_token": "x"}, "n-1")


# --- flows used wrongly -----------------------------------------------------------------------------


def test_a_replayed_state_and_a_code_used_twice_are_refused(fed: Context) -> None:
    start = federation.start_browser(fed, "test", LOOPBACK)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "alice")
    federation.finish_browser(fed, answer["state"], answer["code"])
    before = counts(fed)
    with pytest.raises(Conflict, match="already used"):
        federation.finish_browser(fed, answer["state"], answer["code"])
    # the same code under a fresh state: the provider refuses it (and its PKCE verifier differs)
    again = federation.start_browser(fed, "test", LOOPBACK)
    with pytest.raises(AuthenticationFailed, match="refused the sign-in"):
        federation.finish_browser(fed, again.state, answer["code"])
    with pytest.raises(NotFound, match="not known"):
        federation.finish_browser(fed, "made-up-state", answer["code"])
    tokens, _ = counts(fed)
    assert tokens == before[0]  # no token was issued by any of the refused attempts


def test_an_answer_naming_another_issuer_is_refused(fed: Context) -> None:
    start = federation.start_browser(fed, "test", LOOPBACK)
    answer = browser_sign_in(start.authorization_url, LOOPBACK, "alice")
    with pytest.raises(AuthenticationFailed, match="not from"):
        federation.finish_browser(fed, answer["state"], answer["code"], iss="https://mix-up.example")


def test_a_device_code_denied_at_the_provider_is_refused(fed: Context) -> None:
    start = federation.start_device(fed, "test")
    approve_device(start.verification_uri, start.user_code, "alice", deny=True)
    tokens, _ = counts(fed)
    with pytest.raises(AuthenticationFailed, match="denied"):
        federation.poll_device(fed, start.handle)
    with pytest.raises(Conflict):
        federation.poll_device(fed, start.handle)  # spent
    assert counts(fed)[0] == tokens


def test_a_device_code_that_expired_is_refused(fed: Context) -> None:
    start = federation.start_device(fed, "test")
    time.sleep(3.5)
    with pytest.raises((AuthenticationFailed, Conflict), match="expired"):
        federation.poll_device(fed, start.handle)


# --- providers that are down or talk nonsense -------------------------------------------------------


class Garbage(BaseHTTPRequestHandler):
    """HTML where JSON belongs; under /mismatch, a discovery document naming another issuer."""

    def do_GET(self) -> None:
        body = b"<html>we are down for maintenance</html>"
        if self.path.startswith("/mismatch/"):
            body = json.dumps(
                {
                    "issuer": "https://elsewhere.example",
                    "authorization_endpoint": "https://elsewhere.example/auth",
                    "token_endpoint": "https://elsewhere.example/token",
                    "jwks_uri": "https://elsewhere.example/jwks",
                }
            ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def garbage() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("where", "words"),
    [("down", "cannot be reached"), ("garbage", "not JSON"), ("mismatch", "names the issuer")],
)
def test_a_provider_down_or_answering_garbage_is_refused_and_nothing_is_kept(
    fed: Context, garbage: str, where: str, words: str
) -> None:
    issuer = {
        "down": f"http://127.0.0.1:{free_port()}",
        "garbage": garbage,
        "mismatch": f"{garbage}/mismatch",
    }[where]
    bad = OidcProviderSettings(name="bad", issuer=issuer, client_id="levere-cli", timeout_seconds=2)
    fed.settings.oidc = OidcSettings(providers=[*fed.settings.oidc.providers, bad])
    before = counts(fed)
    with pytest.raises(ProviderUnavailable, match=words) as refused:
        federation.start_browser(fed, "bad", LOOPBACK)
    assert "bad" in refused.value.message
    with pytest.raises(ProviderUnavailable, match=words):
        federation.start_device(fed, "bad")
    assert counts(fed) == before
