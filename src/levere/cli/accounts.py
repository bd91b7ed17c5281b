"""Signing in and one's own account: ``levere login``, ``levere account ...``."""

from __future__ import annotations

import getpass
import os
from typing import Annotated, Any
from urllib.parse import quote

import typer

from levere.cli.client import Client, Credentials
from levere.cli.output import State, console, done, fields, result, show, table
from levere.domain.errors import AccessDenied, NotFound, NotSignedIn, ValidationFailed

account = typer.Typer(
    help="Your account: two-factor sign-in, tokens, notifications, invitations.", no_args_is_help=True
)


def client() -> Client:
    creds = Credentials.load()
    if not creds.token:
        raise NotSignedIn(
            f"not signed in: sign in first with 'levere login --url {creds.url} --email YOUR-EMAIL' "
            "(it asks for your password, or reads it from LEVERE_PASSWORD)",
            url=creds.url,
        )
    return Client(creds)


def _secret(value: str | None, env: str, prompt: str) -> str:
    if value:
        return value
    if os.environ.get(env):
        return os.environ[env]
    if os.isatty(0):
        return getpass.getpass(prompt)
    raise ValidationFailed({env: f"give it in the environment variable {env} (no terminal to prompt on)"})


def login(
    email: Annotated[str | None, typer.Option(envvar="LEVERE_EMAIL", help="Your e-mail address.")] = None,
    url: Annotated[
        str | None, typer.Option(envvar="LEVERE_URL", help="Address of the levere service.")
    ] = None,
    totp: Annotated[
        str | None, typer.Option(envvar="LEVERE_TOTP", help="One-time code, if you use two-factor sign-in.")
    ] = None,
    token_name: Annotated[str, typer.Option(help="A name for this token, e.g. the machine.")] = "cli",
    lifetime_days: Annotated[int | None, typer.Option(help="Days until the token expires.")] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="Limit the token to scopes: read, write, review, account.")
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="Sign in with this provider (e.g. Life Science Login) instead.")
    ] = None,
    mfa: Annotated[bool, typer.Option(help="With --provider: ask the provider for a second factor.")] = False,
    browser: Annotated[
        bool, typer.Option(help="With --provider: a browser on this machine even if a device code works.")
    ] = False,
) -> None:
    """Sign in and save a token: with a password (LEVERE_PASSWORD or a prompt), or at a provider (--provider)."""
    creds = Credentials.load()
    creds.url = url or creds.url
    if provider:
        from levere.cli.federation import login_with_provider

        login_with_provider(creds, provider, mfa=mfa, browser=browser, token_name=token_name)
        return
    if not email:
        raise typer.BadParameter(
            "give your e-mail address, or sign in with --provider NAME", param_hint="--email"
        )
    password = _secret(None, "LEVERE_PASSWORD", "Password: ")
    anonymous = Client(Credentials(url=creds.url))
    body: dict[str, Any] = {"email": email, "password": password, "totp": totp, "token_name": token_name}
    if lifetime_days:
        body["lifetime_days"] = lifetime_days
    if scope:
        body["scopes"] = scope
    issued = anonymous.post("/auth/login", body)
    creds.token, creds.email = issued["token"], email
    path = creds.save()
    info = issued["info"]
    result(
        {"email": email, "token_id": info["id"], "scopes": info["scopes"], "expires_at": info["expires_at"],
         "saved_in": str(path)},
        f"signed in as {email}; token '{info['name']}' expires {info['expires_at'][:10]} (saved in {path})",
    )  # fmt: skip
    if info["scopes"] == ["account"] and not State.json_output:
        console.print(
            "Two-factor sign-in is required for your account: run 'levere account totp-enrol' next."
        )


def logout() -> None:
    """Revoke the saved token and forget it."""
    creds = Credentials.load()
    if creds.token:
        token_id = creds.token.split("_")[1] if creds.token.count("_") >= 2 else ""
        if token_id:
            Client(creds).delete(f"/me/tokens/{token_id}")
        creds.token = ""
        creds.save()
    done("signed out")


@account.command("show")
def whoami() -> None:
    """Who you are signed in as, and the Crypt4GH public keys your sign-in provider gave for you."""
    api = client()
    me = api.get("/me")
    try:  # a token without the account scope may not list them, nor a service without them
        me["recipient_keys"] = api.get("/me/recipient-keys")
    except (AccessDenied, NotFound):
        me["recipient_keys"] = []

    def render(d: dict[str, Any]) -> None:
        fields("Account", [("e-mail", d["email"]), ("name", d["name"]), ("kind", d["kind"]),
                           ("two-factor", "on" if d["totp_enabled"] else "off")])  # fmt: skip
        if d["recipient_keys"]:
            table(
                "Crypt4GH public keys from your sign-in (default recipients of secure-zone downloads)",
                ["provider", "fingerprint", "key"],
                [(k["provider"], k["fingerprint"], k["pem"].splitlines()[1]) for k in d["recipient_keys"]],
            )

    show(me, render)


@account.command("totp-enrol")
def totp_enrol() -> None:
    """Start two-factor enrolment: prints the secret as an otpauth:// link for your authenticator app."""
    data = client().post("/me/totp")
    show(data, lambda d: console.print(
        f"Add this to your authenticator app, then run 'levere account totp-confirm CODE':\n{d['otpauth_uri']}",
        soft_wrap=True,
    ))  # fmt: skip


@account.command("totp-confirm")
def totp_confirm(code: str) -> None:
    """Finish two-factor enrolment with a code from the app (an enrol-only sign-in becomes a full one)."""
    creds = Credentials.load()
    me = client().post("/me/totp/confirm", {"code": code})
    later = f"levere login --email {me['email']} --totp CODE"
    if me.get("token"):
        creds.token = me["token"]["token"]
        path = creds.save()
        me = {k: v for k, v in me.items() if k != "token"} | {"token_id": me["token"]["info"]["id"]}
        result(
            me,
            f"two-factor sign-in is on and this sign-in now has a full token (saved in {path}); "
            f"next time sign in with a new code: '{later}'",
        )
        return
    result(me, f"two-factor sign-in is on; from now on sign in with a new code each time: '{later}'")


@account.command("tokens")
def tokens() -> None:
    """List your API tokens."""
    data = client().get("/me/tokens")
    columns = ["id", "name", "scopes", "two-factor", "expires", "revoked", "last used"]
    show(data, lambda rows: table("API tokens", columns, [
        (t["id"], t["name"], ",".join(t["scopes"]), "yes" if t.get("second_factor") else "no",
         t["expires_at"][:16], (t["revoked_at"] or "")[:16], (t["last_used_at"] or "")[:16]) for t in rows
    ]))  # fmt: skip


@account.command("token-create")
def token_create(
    name: str,
    scope: Annotated[list[str] | None, typer.Option(help="read, write, review, account (repeat).")] = None,
    lifetime_days: Annotated[int | None, typer.Option(help="Days until it expires.")] = None,
) -> None:
    """Create another token (e.g. a read-only one for a pipeline). It is printed once."""
    body: dict[str, Any] = {"name": name, "scopes": scope, "lifetime_days": lifetime_days}
    issued = client().post("/me/tokens", body)
    show(
        issued,
        lambda d: console.print(
            f"{d['token']}\n(shown once; id {d['info']['id']}; scopes {','.join(d['info']['scopes'])})"
        ),
    )


@account.command("token-revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id, or its first characters (4 or more).")],
) -> None:
    """Revoke a token by its id or a unique start of it (see 'levere account tokens')."""
    revoked = client().delete(f"/me/tokens/{quote(token_id, safe='')}")
    result(revoked, f"token {token_id} revoked")


@account.command("accept-invite")
def accept_invite(
    link: Annotated[str, typer.Argument(help="The link from the invitation e-mail (or its last part).")],
    name: Annotated[str, typer.Option(help="Your name.")] = "",
    url: Annotated[
        str | None, typer.Option(envvar="LEVERE_URL", help="Address of the levere service.")
    ] = None,
) -> None:
    """Set your password from an invitation link. The password comes from LEVERE_PASSWORD or a prompt."""
    secret = link.rstrip("/").rsplit("/", 1)[-1]
    base = url or (link.split("/invite/")[0] if "/invite/" in link else Credentials.load().url)
    password = _secret(None, "LEVERE_PASSWORD", "Choose a password: ")
    user = Client(Credentials(url=base)).post(
        "/invitations/accept", {"secret": secret, "password": password, "name": name}
    )
    result(
        user,
        f"password set for {user['email']}; sign in with 'levere login --url {base} --email {user['email']}'",
    )


@account.command("notifications")
def notifications(unread: Annotated[bool, typer.Option(help="Only unread ones.")] = False) -> None:
    """Your notifications, newest first."""
    data = client().get("/me/notifications", params={"unread": unread})
    show(data, _print_notifications)


def _print_notifications(rows: list[dict[str, Any]]) -> None:
    """Each notification whole: when, subject, what became of its e-mail, and its text, indented."""
    from rich.text import Text

    if not rows:
        console.print("no notifications")
    for n in rows:
        when = f"{n['created_at'][:10]} {n['created_at'][11:16]} UTC"
        unread = "" if n.get("read_at") else ", unread"
        console.print(Text(f"{when}  {n['subject']}  (e-mail {n['email_state']}{unread})", style="bold"))
        for line in n["body"].rstrip().splitlines():
            console.print(Text(f"    {line}"))
        console.print()


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.add_typer(account, name="account")
