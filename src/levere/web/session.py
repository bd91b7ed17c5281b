"""Who is signed in to the portal, and the CSRF check every state-changing form goes through.

Design notes
------------
The session cookie holds a portal session token (:mod:`levere.services.portal_sessions`); it is
HttpOnly, SameSite=Lax, Secure outside development mode, and scoped to the portal's path. Every
form carries a CSRF token: for a signed-in browser an HMAC of its session token under the service's
secret key (so it dies with the session), before sign-in an HMAC of a random pre-session cookie
(so sign-in and invitation forms cannot be posted from another site either).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, ClassVar
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.responses import Response

from levere.context import Context
from levere.db.models import User
from levere.domain.errors import AuthenticationFailed, LevereError
from levere.http_deps import CtxDep
from levere.services import federation, portal_sessions
from levere.services.accounts import Scope

PREFIX = "/portal"
SESSION_COOKIE = "levere_session"
PRESESSION_COOKIE = "levere_presession"
CSRF_FIELD = "csrf"


class SignInNeeded(Exception):
    """No valid session: the browser is sent to the sign-in page, and back here afterwards."""

    def __init__(self, back_to: str, reason: str = "") -> None:
        super().__init__(back_to)
        self.back_to = back_to
        self.reason = reason


class SecondFactorNeeded(Exception):
    """A helpdesk operator without a second factor may only enrol one (their session says so)."""


class StepUpNeeded(Exception):
    """A secure-zone page asked by a session whose sign-in proved no second factor: the browser is
    sent to the step-up page (a one-time code), and back here afterwards."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


class FormExpired(LevereError):
    http_status: ClassVar[int] = 403
    code = "form_expired"


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request, with the scopes of their session."""

    user: User
    scopes: frozenset[Scope]
    token: str

    @property
    def is_helpdesk(self) -> bool:
        return self.user.kind == "helpdesk"

    @property
    def is_facility(self) -> bool:
        return self.user.kind == "facility"


def _mac(ctx: Context, purpose: str, value: str) -> str:
    key = ctx.settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def csrf_for_session(ctx: Context, session_token: str) -> str:
    """The CSRF token of the forms a browser with this session sends."""
    return _mac(ctx, "csrf", session_token)


def csrf_for_presession(ctx: Context, presession: str) -> str:
    """The CSRF token of the forms a browser sends before signing in (sign-in, invitations)."""
    return _mac(ctx, "csrf-anonymous", presession)


def csrf_token(request: Request) -> str:
    """The token the forms of this page carry (a pre-session cookie is made when there is none)."""
    ctx: Context = request.app.state.ctx
    session_token = request.cookies.get(SESSION_COOKIE)
    if session_token and getattr(request.state, "viewer", None) is not None:
        return csrf_for_session(ctx, session_token)
    presession = request.cookies.get(PRESESSION_COOKIE) or getattr(request.state, "new_presession", None)
    if not presession:
        presession = secrets.token_urlsafe(24)
        request.state.new_presession = presession
    return csrf_for_presession(ctx, presession)


async def check_csrf(request: Request) -> None:
    """Refuse a form that does not carry this browser's CSRF token."""
    ctx: Context = request.app.state.ctx
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    session_token = request.cookies.get(SESSION_COOKIE, "")
    presession = request.cookies.get(PRESESSION_COOKIE, "")
    expected = [csrf_for_session(ctx, session_token)] if session_token else []
    if presession:
        expected.append(csrf_for_presession(ctx, presession))
    if not isinstance(sent, str) or not any(hmac.compare_digest(sent, e) for e in expected):
        raise FormExpired(
            "this form has expired or did not come from this site; reload the page and send it again"
        )


def _viewer(request: Request, ctx: Context, *, full: bool) -> Viewer:
    back_to = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInNeeded(back_to)
    try:
        with ctx.tx() as session:
            user, scopes = portal_sessions.resume(session, token)
    except AuthenticationFailed as exc:
        raise SignInNeeded(back_to, "your session has ended; sign in again") from exc
    viewer = Viewer(user=user, scopes=scopes, token=token)
    request.state.viewer = viewer
    if full and Scope.READ not in scopes:
        raise SecondFactorNeeded()
    return viewer


def signed_in(request: Request, ctx: CtxDep) -> Viewer:
    return _viewer(request, ctx, full=True)


def signed_in_any(request: Request, ctx: CtxDep) -> Viewer:
    """Also a session that may only enrol a second factor (the account pages)."""
    return _viewer(request, ctx, full=False)


def zone_viewer(request: Request, ctx: CtxDep) -> Viewer:
    """A signed-in user whose session passed a second factor, as every secure-zone page needs."""
    viewer = _viewer(request, ctx, full=True)
    if not federation.has_second_factor(ctx, viewer.token):
        # a form sent without it goes back to the zone's first page after the step-up
        back_to = request.url.path if request.method == "GET" else f"{PREFIX}/zone"
        if request.method == "GET" and request.url.query:
            back_to += f"?{request.url.query}"
        raise StepUpNeeded(back_to)
    return viewer


def optional_viewer(request: Request, ctx: CtxDep) -> Viewer | None:
    try:
        return _viewer(request, ctx, full=False)
    except SignInNeeded:
        return None


#: a signed-in user with a full session; the route's service call decides what they may do
PortalUser = Annotated[Viewer, Depends(signed_in)]
#: a signed-in user, possibly with a session that may only enrol a second factor
AccountViewer = Annotated[Viewer, Depends(signed_in_any)]
#: a signed-in user whose sign-in passed a second factor: for the secure zone's pages
ZoneViewer = Annotated[Viewer, Depends(zone_viewer)]
MaybeViewer = Annotated[Viewer | None, Depends(optional_viewer)]
#: a state-changing form: refused unless it carries this browser's CSRF token
CsrfChecked = Depends(check_csrf)


def set_session(response: Response, ctx: Context, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ctx.settings.portal_session_minutes * 60,
        path=PREFIX,
        secure=ctx.settings.mode != "development",
        httponly=True,
        samesite="lax",
    )


def clear_session(response: Response, ctx: Context) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=PREFIX, secure=ctx.settings.mode != "development", httponly=True, samesite="lax"
    )


def remember_presession(request: Request, response: Response) -> None:
    """Send the pre-session cookie a page's CSRF token was made from, if it is new."""
    value = getattr(request.state, "new_presession", None)
    if value:
        ctx: Context = request.app.state.ctx
        response.set_cookie(
            PRESESSION_COOKIE,
            value,
            path=PREFIX,
            secure=ctx.settings.mode != "development",
            httponly=True,
            samesite="lax",
        )


def sign_in_url(back_to: str = "") -> str:
    return f"{PREFIX}/sign-in" + (f"?next={quote(back_to, safe='')}" if back_to else "")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: only a page of the portal itself."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


def step_up_url(back_to: str = "") -> str:
    """The page that asks for a one-time code, and then goes back to ``back_to``."""
    back = safe_next(back_to) if back_to.startswith(PREFIX + "/") else ""
    return f"{PREFIX}/account/step-up" + (f"?next={quote(back, safe='')}" if back else "")
