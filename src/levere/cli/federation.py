"""``levere login --provider NAME``: sign in with an OpenID Connect provider, and identity links.

Design notes
------------
The service is the relying party (see :mod:`levere.services.federation`); the CLI only shows the
person where to go and carries the answer back. With the device grant it shows a code and a URL
and polls; otherwise (RFC 8252) it listens on a loopback port for the provider's redirect, prints
the URL to open, and hands the ``code`` and ``state`` it receives to the service. Either way the
result is levere's own scoped, expiring token, saved as ``levere login`` saves one.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

import typer

from levere.cli.client import Client, Credentials
from levere.cli.output import State, console, done, err_console, result, show, table
from levere.domain.errors import AuthenticationFailed

#: the longest a sign-in may wait for the person (the service refuses the flow after its own limit)
WAIT_SECONDS = 15 * 60


def _say(text: str) -> None:
    """Instructions for the person: on stderr under --json, so that stdout holds only the result."""
    (err_console if State.json_output else console).print(text, markup=False, highlight=False)


def login_with_provider(
    creds: Credentials,
    provider: str,
    *,
    mfa: bool,
    browser: bool,
    token_name: str,
    wait: float = WAIT_SECONDS,
) -> None:
    anonymous = Client(Credentials(url=creds.url))
    known = {p["name"]: p for p in anonymous.get("/auth/providers")}
    if provider not in known:
        names = ", ".join(known) or "none are configured on this service"
        raise AuthenticationFailed(f"no sign-in provider named {provider!r} (known: {names})")
    body = {"mfa": mfa}
    if known[provider]["device_grant"] and not browser:
        signed_in = _device(anonymous, provider, body, token_name, wait)
    else:
        signed_in = _loopback(anonymous, provider, body, token_name, wait)
    email = signed_in["email"]
    creds.token, creds.email = signed_in["token"]["token"], email
    path = creds.save()
    info = signed_in["token"]["info"]
    result(
        {"email": email, "provider": provider, "second_factor": signed_in["second_factor"],
         "token_id": info["id"], "scopes": info["scopes"], "expires_at": info["expires_at"],
         "saved_in": str(path)},
        f"signed in as {email} with {provider}; token '{info['name']}' expires {info['expires_at'][:10]} "
        f"(saved in {path})",
    )  # fmt: skip
    if signed_in["needs_second_factor"]:
        _say(
            f"Your account needs a second factor, and {provider} did not assert one: this token can only "
            f"manage your account. Sign in again with 'levere login --provider {provider} --mfa'."
        )


def _device(
    client: Client, provider: str, body: dict[str, Any], token_name: str, wait: float
) -> dict[str, Any]:
    start = client.post(f"/auth/oidc/{quote(provider, safe='')}/device", body)
    _say(f"To sign in, open {start['verification_uri']} and enter the code {start['user_code']}")
    if start.get("verification_uri_complete"):
        _say(f"(or open {start['verification_uri_complete']})")
    interval = max(1, int(start["interval"]))
    deadline = time.monotonic() + min(wait, float(start["expires_in"]))
    while True:
        time.sleep(interval)
        answer = client.post("/auth/oidc/device/poll", {"handle": start["handle"], "token_name": token_name})
        if answer["status"] == "signed_in":
            signed_in: dict[str, Any] = answer["signed_in"]
            return signed_in
        interval = max(interval, int(answer.get("interval") or interval))
        if time.monotonic() > deadline:
            raise AuthenticationFailed("the code was not entered in time; run the same command again")


class _Callback(BaseHTTPRequestHandler):
    """Takes the provider's one redirect to the loopback address, and answers the browser."""

    received: dict[str, str] | None = None

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        type(self).received = {k: v[0] for k, v in parse_qs(parts.query).items()}
        page = b"<!DOCTYPE html><title>levere</title><p>You can close this window and go back to the terminal.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the URL holds the code: never log it


def _loopback(
    client: Client, provider: str, body: dict[str, Any], token_name: str, wait: float
) -> dict[str, Any]:
    class Handler(_Callback):  # a class of its own per sign-in: it holds that sign-in's answer
        received = None

    handler: type[_Callback] = Handler
    server = HTTPServer(("127.0.0.1", 0), handler)
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        start = client.post(
            f"/auth/oidc/{quote(provider, safe='')}/browser", {**body, "redirect_uri": redirect_uri}
        )
        _say(f"To sign in, open this address in a browser on this machine:\n{start['authorization_url']}")
        deadline = time.monotonic() + wait
        while handler.received is None:
            if time.monotonic() > deadline:
                raise AuthenticationFailed("the sign-in was not finished in time; run the same command again")
            time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
    received = handler.received
    if "error" in received:
        reason = received.get("error_description") or received["error"]
        raise AuthenticationFailed(f"the provider refused the sign-in: {reason}", reason=received["error"])
    if "code" not in received or "state" not in received:
        raise AuthenticationFailed(
            "the provider's answer lacks the code or state; run the same command again"
        )
    finish = {"state": received["state"], "code": received["code"], "token_name": token_name}
    if "iss" in received:
        finish["iss"] = received["iss"]
    signed_in: dict[str, Any] = client.post("/auth/oidc/callback", finish)
    return signed_in


# --- identity links -----------------------------------------------------------------------------


def _identity_rows(rows: list[dict[str, Any]]) -> None:
    table(
        "Sign-in identities",
        ["provider", "subject", "e-mail", "linked", "last used"],
        [
            (r["provider"], r["subject"], r["email"], r["created_at"][:10], (r["last_used_at"] or "")[:10])
            for r in rows
        ],
    )


def identities(
    email: Annotated[str | None, typer.Option(help="Someone else's account (helpdesk).")] = None,
) -> None:
    """List the sign-in identities (OpenID Connect) linked to your account, or to someone's."""
    from levere.cli.accounts import client

    path = f"/users/{quote(email, safe='@')}/identities" if email else "/me/identities"
    show(client().get(path), _identity_rows)


def link_identity(
    email: Annotated[str, typer.Argument(help="The account's e-mail address.")],
    provider: Annotated[str, typer.Option(help="The provider's name, as in the service's settings.")],
    subject: Annotated[str, typer.Option(help="The identity's subject (sub) at that provider.")],
) -> None:
    """Link a provider's identity to an account (helpdesk): its owner can then sign in with it."""
    from levere.cli.accounts import client

    client().post(f"/users/{quote(email, safe='@')}/identities", {"provider": provider, "subject": subject})
    done(f"linked {provider} identity {subject} to {email}")


def unlink_identity(
    provider: Annotated[str, typer.Option(help="The provider's name.")],
    subject: Annotated[str, typer.Option(help="The identity's subject (sub).")],
    email: Annotated[str | None, typer.Option(help="Someone else's account (helpdesk).")] = None,
) -> None:
    """Unlink a sign-in identity from your account (or, for the helpdesk, from someone's)."""
    from levere.cli.accounts import client

    tail = f"{quote(provider, safe='')}/{quote(subject, safe='')}"
    path = f"/users/{quote(email, safe='@')}/identities/{tail}" if email else f"/me/identities/{tail}"
    client().delete(path)
    done(f"unlinked {provider} identity {subject}")


def step_up(
    code: Annotated[str, typer.Argument(help="The one-time code from your authenticator app.")],
) -> None:
    """Prove a second factor for this sign-in with a one-time code (the saved token is replaced)."""
    from levere.cli.accounts import client

    creds = Credentials.load()
    issued = client().post("/me/step-up", {"code": code})
    creds.token = issued["token"]
    path = creds.save()
    info = issued["info"]
    result(
        {
            "token_id": info["id"],
            "scopes": info["scopes"],
            "expires_at": info["expires_at"],
            "saved_in": str(path),
        },
        f"second factor given; token '{info['name']}' expires {info['expires_at'][:10]} (saved in {path})",
    )


def register(app: typer.Typer, account: typer.Typer) -> None:
    account.command("step-up")(step_up)
    account.command("identities")(identities)
    account.command("unlink-identity")(unlink_identity)
    account.command("link-identity")(link_identity)
