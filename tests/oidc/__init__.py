"""A real OpenID Connect provider for tests (the npm package oidc-provider, see provider.js), and the
person's side of signing in there, driven over HTTP as a browser would.

The provider takes a free port from the system each time it starts and says which on its first line of
output; everything reads the issuer (``Provider.issuer``) from there. There is no fixed port and no
setting for one, so two test runs at once, or a provider left behind by a killed run, never meet. The
fixture stops its provider by PID, and the provider also exits when its stdin (a pipe from the test
process) closes, which is what happens when the test process is killed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from joserfc.jwk import KeySet, RSAKey

from levere.config import OidcProviderSettings, OidcSettings

HERE = Path(__file__).parent
MFA = "https://refeds.org/profile/mfa"
SFA = "https://refeds.org/profile/sfa"
PASSWORD = "test-password"
#: the portal's callback as the tests' settings make it (public_url http://levere.test)
PORTAL_REDIRECT = "http://levere.test/auth/oidc/callback"


@dataclass
class Provider:
    issuer: str
    #: the provider's own signing keys (private), so tests can make tokens it would make
    keys: KeySet


def node_ready() -> str | None:
    """Why the provider cannot run here, or None when it can (installing its packages if needed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed (Debian: apt-get install nodejs npm)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            return f"npm ci in tests/oidc failed: {done.stderr.strip()[-300:]}"
    return None


#: the provider's first line of output, naming the issuer on the port it was given
LISTENING = re.compile(rb"oidc-provider listening on (http://127\.0\.0\.1:\d+)\n")


def _discovery_answers(issuer: str) -> bool:
    try:
        return httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def run_provider(
    folder: Path, portal_redirects: tuple[str, ...] = (PORTAL_REDIRECT,), **ttl_seconds: int
) -> Iterator[Provider]:
    """Start provider.js on a free loopback port, wait for its discovery document, stop it by PID
    afterwards; ``portal_redirects`` are the redirect URIs its confidential (portal) client accepts."""
    reason = node_ready()
    if reason:
        pytest.skip(f"no OpenID Connect test provider: {reason}")
    key = RSAKey.generate_key(2048, parameters={"kid": "test-provider-key", "use": "sig", "alg": "RS256"})
    keys = KeySet([key])
    jwks_file = folder / "jwks.json"
    jwks_file.write_text(json.dumps(keys.as_dict(private=True)))
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "OIDC_PORTAL_REDIRECT_URIS": ",".join(portal_redirects),
        "OIDC_STOP_WITH_STDIN": "1",
    }
    env.update({f"OIDC_TTL_{name.upper()}": str(value) for name, value in ttl_seconds.items()})
    log_file = folder / "provider.log"
    log = log_file.open("wb")
    process = subprocess.Popen(
        ["node", str(HERE / "provider.js"), "0", str(jwks_file)],
        cwd=HERE,
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=log,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        issuer = None
        while True:
            if issuer is None and (listening := LISTENING.search(log_file.read_bytes())):
                issuer = listening.group(1).decode()
            if issuer is not None and _discovery_answers(issuer):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test provider did not start: {log_file.read_text()[-500:]}")
            time.sleep(0.1)
        yield Provider(issuer=issuer, keys=keys)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- the person's side ------------------------------------------------------------------------------


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}"\s+value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"\s+name="{name}"', html
    )
    assert found, f"no hidden field {name} in the page: {html[:300]}"
    return unescape(found.group(1))


def _follow(browser: httpx.Client, response: httpx.Response, stop_at: str | None = None) -> httpx.Response:
    """Follow redirects one by one, stopping before one that goes to ``stop_at``."""
    while response.is_redirect:
        target = urljoin(str(response.url), response.headers["location"])
        if stop_at and target.startswith(stop_at):
            return response
        response = browser.get(target)
    return response


def _sign_in_form(
    browser: httpx.Client, page: httpx.Response, login: str, mfa: bool, deny: bool
) -> httpx.Response:
    uid = urlsplit(str(page.url)).path.rsplit("/", 1)[-1]
    assert "/interaction/" in str(page.url), f"expected the sign-in form, got {page.url}: {page.text[:200]}"
    base = f"{page.url.scheme}://{page.url.netloc.decode()}"
    if deny:
        return browser.post(f"{base}/interaction/{uid}/abort")
    form = {"login": login, "password": PASSWORD}
    if mfa:
        form["mfa"] = "yes"
    return browser.post(f"{base}/interaction/{uid}/login", data=form)


def browser_sign_in(
    authorization_url: str,
    redirect_uri: str,
    login: str = "alice",
    *,
    mfa: bool = False,
    deny: bool = False,
    deliver: bool = False,
) -> dict[str, str]:
    """Sign in at the provider as a person would; the query the provider sends to ``redirect_uri``
    (which ``deliver`` also visits, as the browser would)."""
    with httpx.Client(timeout=10) as browser:
        page = _follow(browser, browser.get(authorization_url))
        answer = _follow(browser, _sign_in_form(browser, page, login, mfa, deny), stop_at=redirect_uri)
        assert answer.is_redirect, (
            f"the provider did not redirect back: {answer.status_code} {answer.text[:300]}"
        )
        location = answer.headers["location"]
        if deliver:
            browser.get(location)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def approve_device(
    verification_uri: str, user_code: str, login: str = "alice", *, mfa: bool = False, deny: bool = False
) -> str:
    """Enter a device code at the provider and sign in (or cancel); the page it ends on."""
    with httpx.Client(timeout=10) as browser:
        entry = browser.get(verification_uri)
        confirm = browser.post(
            verification_uri, data={"xsrf": _hidden(entry.text, "xsrf"), "user_code": user_code}
        )
        assert confirm.status_code == 200, confirm.text[:300]
        page = _follow(
            browser,
            browser.post(
                verification_uri,
                data={"xsrf": _hidden(confirm.text, "xsrf"), "user_code": user_code, "confirm": "yes"},
            ),
        )
        done = _follow(browser, _sign_in_form(browser, page, login, mfa, deny))
        return done.text


LOOPBACK = "http://127.0.0.1:53111/callback"


def providers(issuer: str) -> OidcSettings:
    return OidcSettings(
        providers=[
            OidcProviderSettings(
                name="test", title="Test Login", issuer=issuer, client_id="levere-cli",
                mfa_acr_values=MFA, mfa_acr=[MFA], scopes=["openid", "email", "profile", "crypt4gh"],
            ),
            OidcProviderSettings(
                name="test-web", issuer=issuer, client_id="levere-portal",
                client_secret="portal-secret-for-tests-only", mfa_acr_values=MFA, mfa_acr=[MFA],
                device_grant=False,
            ),
        ]
    )  # fmt: skip
