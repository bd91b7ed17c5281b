"""Signing in and out, two-factor enrolment, accepting an invitation, and API tokens."""

from __future__ import annotations

import base64
from typing import Annotated
from urllib.parse import quote

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from levere.domain.errors import AuthenticationFailed, LevereError, ValidationFailed
from levere.http_deps import CtxDep, acts
from levere.services import accounts, federation, identity_keys, invitations, portal_sessions
from levere.services.accounts import Scope
from levere.services.invitations import LinkState
from levere.web.render import page, redirect
from levere.web.session import (
    PREFIX,
    AccountViewer,
    CsrfChecked,
    MaybeViewer,
    PortalUser,
    clear_session,
    safe_next,
    set_session,
)

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form()]


@router.get("/sign-in", openapi_extra=acts(None))
def sign_in_form(
    request: Request, viewer: MaybeViewer, ctx: CtxDep, next: str = "", welcome: str = ""
) -> Response:
    """``welcome`` is the e-mail of someone who just set their password from an invitation."""
    if viewer is not None and Scope.READ in viewer.scopes:
        return redirect(safe_next(next))
    return page(request, "sign_in.html", next=safe_next(next), email=welcome[:320], error="",
                welcome=bool(welcome), providers=federation.list_providers(ctx))  # fmt: skip


@router.post("/sign-in", openapi_extra=acts(None), dependencies=[CsrfChecked])
def sign_in(
    request: Request,
    ctx: CtxDep,
    email: Text = "",
    password: Text = "",
    code: Text = "",
    next: Text = "",
) -> Response:
    client = request.client.host if request.client else ""
    try:
        issued = portal_sessions.begin(ctx, email, password, code.strip() or None, client=client)
    except LevereError as exc:
        if exc.http_status not in (401, 429):
            raise
        error = exc.message
        if "two-factor" in error and not code.strip():  # the service's words name the CLI's option
            error = (
                "this account uses two-factor sign-in: give the one-time code from your authenticator app too"
            )
        return page(request, "sign_in.html", 401 if exc.http_status == 401 else 429,
                    next=safe_next(next), email=email, error=error,
                    providers=federation.list_providers(ctx))  # fmt: skip
    response = redirect(safe_next(next))
    set_session(response, ctx, issued.token)
    return response


@router.post("/sign-out", openapi_extra=acts(None), dependencies=[CsrfChecked])
def sign_out(request: Request, viewer: AccountViewer, ctx: CtxDep) -> Response:
    portal_sessions.end(ctx, viewer.token)
    response = redirect(f"{PREFIX}/sign-in")
    clear_session(response, ctx)
    return response


# --- two-factor sign-in ---------------------------------------------------------------------------


def _qr(uri: str) -> str:
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#000", light="#fff")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@router.get("/account/two-factor", openapi_extra=acts(None))
def two_factor(request: Request, viewer: AccountViewer) -> Response:
    return page(request, "two_factor.html", enabled=viewer.user.totp_enabled, qr=None, secret=None, error="")


@router.post("/account/two-factor", openapi_extra=acts(None), dependencies=[CsrfChecked])
def two_factor_begin(request: Request, viewer: AccountViewer, ctx: CtxDep) -> Response:
    """A new secret, shown as a QR code and as text; enrolment ends when a code from it is confirmed."""
    with ctx.tx() as session:
        uri = accounts.totp_begin(session, session.merge(viewer.user))
    secret = uri.split("secret=", 1)[1].split("&", 1)[0]
    return page(request, "two_factor.html", enabled=False, qr=_qr(uri), secret=secret, error="")


@router.post("/account/two-factor/confirm", openapi_extra=acts(None), dependencies=[CsrfChecked])
def two_factor_confirm(request: Request, viewer: AccountViewer, ctx: CtxDep, code: Text = "") -> Response:
    try:
        with ctx.tx() as session:
            upgraded = accounts.totp_confirm(ctx, session, session.merge(viewer.user), code, viewer.token)
    except ValidationFailed as exc:
        return page(request, "two_factor.html", 422, enabled=False, qr=None, secret=None,
                    error=exc.fields.get("code", exc.message))  # fmt: skip
    response = redirect(f"{PREFIX}/account/two-factor?done=1")
    if upgraded is not None:  # an enrol-only session became a full one
        set_session(response, ctx, portal_sessions.limit(ctx, upgraded.view()).token)
    return response


# --- the step-up to a second factor (the secure zone's pages ask for it) ---------------------------


@router.get("/account/step-up", openapi_extra=acts(None))
def step_up_form(request: Request, viewer: PortalUser, ctx: CtxDep, next: str = "") -> Response:
    """Asks for a one-time code when the session's sign-in proved no second factor."""
    done = federation.has_second_factor(ctx, viewer.token)
    return page(request, "step_up.html", next=safe_next(next), error="", done=done,
                enabled=viewer.user.totp_enabled)  # fmt: skip


@router.post("/account/step-up", openapi_extra=acts(None), dependencies=[CsrfChecked])
def step_up(request: Request, viewer: PortalUser, ctx: CtxDep, code: Text = "", next: Text = "") -> Response:
    """Trades the session for one with a second factor (``federation.step_up``), as the CLI's
    ``levere account step-up`` does for a token."""
    try:
        issued = federation.step_up(ctx, viewer.user, code.strip(), viewer.token)
    except ValidationFailed as exc:
        return page(request, "step_up.html", 422, next=safe_next(next), done=False,
                    enabled=viewer.user.totp_enabled, error=exc.fields.get("code", exc.message))  # fmt: skip
    except AuthenticationFailed as exc:  # a wrong or used code
        return page(request, "step_up.html", 422, next=safe_next(next), done=False,
                    enabled=viewer.user.totp_enabled, error=exc.message)  # fmt: skip
    response = redirect(safe_next(next))
    set_session(response, ctx, portal_sessions.limit(ctx, issued.view()).token)
    return response


# --- invitations ----------------------------------------------------------------------------------


@router.get("/invite/{secret}", openapi_extra=acts(None))
def invitation(request: Request, secret: str, ctx: CtxDep) -> Response:
    """Opening the page changes nothing (mail scanners open links too); the form sets the password."""
    state = invitations.link_state(ctx, secret) if len(secret) <= 100 else LinkState.UNKNOWN
    status = {LinkState.VALID: 200, LinkState.UNKNOWN: 404}.get(state, 410)
    response = page(request, "invitation.html", status, state=state.value, secret=secret, error="",
                    providers=federation.list_providers(ctx))  # fmt: skip
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post("/invite/{secret}", openapi_extra=acts(None), dependencies=[CsrfChecked])
def accept_invitation(
    request: Request, secret: str, ctx: CtxDep, password: Text = "", repeat: Text = "", name: Text = ""
) -> Response:
    if password != repeat:
        return page(request, "invitation.html", 422, state="valid", secret=secret,
                    error="the two passwords differ; type the same password twice",
                    providers=federation.list_providers(ctx))  # fmt: skip
    try:
        user = invitations.accept_invitation(ctx, secret, password, name.strip())
    except ValidationFailed as exc:
        return page(request, "invitation.html", 422, state="valid", secret=secret,
                    error=exc.fields.get("password", exc.message),
                    providers=federation.list_providers(ctx))  # fmt: skip
    return redirect(f"{PREFIX}/sign-in?welcome={quote(user.email)}")


# --- API tokens -----------------------------------------------------------------------------------


def _tokens_page(
    request: Request, viewer: PortalUser, ctx: CtxDep, status: int = 200, **extra: object
) -> Response:
    with ctx.tx() as session:
        tokens = [
            t for t in accounts.list_tokens(session, viewer.user)
            if t.name != portal_sessions.SESSION_TOKEN_NAME
        ]  # fmt: skip
    keys = identity_keys.default_recipient_keys(ctx, viewer.user)
    values: dict[str, object] = {"tokens": tokens, "new_token": None, "error": "", "keys": keys} | extra
    return page(request, "tokens.html", status, **values)


@router.get("/account/tokens", openapi_extra=acts(None))
def tokens(request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    return _tokens_page(request, viewer, ctx)


@router.post("/account/tokens", openapi_extra=acts(None), dependencies=[CsrfChecked])
def create_token(
    request: Request, viewer: PortalUser, ctx: CtxDep, name: Text = "", days: Text = "30",
    scopes: Annotated[list[str] | None, Form()] = None,
) -> Response:  # fmt: skip
    try:
        wanted = frozenset(Scope(s) for s in (scopes or ["read"]))
        lifetime = int(days)
    except ValueError:
        return _tokens_page(
            request, viewer, ctx, 422, error="choose scopes from the list and a number of days"
        )
    try:
        with ctx.tx() as session:
            issued = accounts.create_token(
                ctx,
                session,
                session.merge(viewer.user),
                name.strip() or "token",
                wanted,
                lifetime,
                viewer.scopes,
            )
            shown = issued.token
    except ValidationFailed as exc:
        return _tokens_page(request, viewer, ctx, 422, error=exc.message.removeprefix("invalid input: "))
    return _tokens_page(request, viewer, ctx, new_token=shown)


@router.post("/account/tokens/{token_id}/revoke", openapi_extra=acts(None), dependencies=[CsrfChecked])
def revoke_token(request: Request, token_id: str, viewer: PortalUser, ctx: CtxDep) -> Response:
    with ctx.tx() as session:
        accounts.revoke_token(session, session.merge(viewer.user), token_id)
    return redirect(f"{PREFIX}/account/tokens")
