"""Signing in to the portal with an OpenID Connect provider ("Sign in with ...").

Design notes
------------
The button posts (with the page's CSRF token) to ``/portal/auth/oidc/{provider}``, which starts the
authorization code + PKCE flow through :func:`levere.services.federation.start_browser` (state,
nonce and verifier stay server-side) and answers with a page that moves on to the provider by
itself (a ``Refresh`` header, and a link; the portal's pages use no script). The provider sends it
back to ``public_url`` + ``/auth/oidc/callback``, which forwards it to the portal's callback page so
that the portal's cookies (scoped to ``/portal``) come along.

The start also sets a short-lived cookie holding the flow's ``state``; the callback finishes a
sign-in only when the ``state`` it receives is that browser's own. Without it, someone could start a
sign-in with their own identity and trick another person's browser into finishing it, signing them
in as the wrong account (login CSRF). The session then starts exactly as after a password sign-in:
a portal session token in the session cookie, whose CSRF tokens derive from it; a second factor the
provider asserted (``acr``) is recorded on that token by the service.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from levere.context import Context
from levere.domain.errors import AccessDenied, AuthenticationFailed, LevereError, ProviderUnavailable
from levere.http_deps import CtxDep, acts
from levere.services import federation, portal_sessions
from levere.web.render import page, redirect
from levere.web.session import PREFIX, CsrfChecked, safe_next, set_session

router = APIRouter(include_in_schema=False)
#: outside the portal's prefix: where providers send the browser back (``federation.PORTAL_CALLBACK``)
root = APIRouter(include_in_schema=False)
Text = Annotated[str, Form()]

#: the state of the sign-in this browser started, and where to go afterwards
FLOW_COOKIE = "levere_oidc_state"
NEXT_COOKIE = "levere_oidc_next"
CALLBACK = f"{PREFIX}/auth/oidc/callback"


def _flow_cookie(response: Response, ctx: Context, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=ctx.settings.oidc.flow_lifetime_minutes * 60,
        path=PREFIX,
        secure=ctx.settings.mode != "development",
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back
    )


def _clear_flow(response: Response, ctx: Context) -> None:
    for name in (FLOW_COOKIE, NEXT_COOKIE):
        response.delete_cookie(
            name, path=PREFIX, secure=ctx.settings.mode != "development", httponly=True, samesite="lax"
        )


def _problem(
    request: Request, ctx: Context, status: int, title: str, message: str, **extra: bool
) -> Response:
    flags = {"unlinked": False, "down": False} | extra
    response = page(request, "sign_in_problem.html", status, title=title, message=message, **flags)
    _clear_flow(response, ctx)
    return response


@router.post("/auth/oidc/{provider}", openapi_extra=acts(None), dependencies=[CsrfChecked])
def start(
    request: Request,
    provider: str,
    ctx: CtxDep,
    next: Text = "",
    mfa: Text = "",
    invitation: Text = "",
) -> Response:
    """Send the browser to the provider; ``invitation`` links the identity to the invited account."""
    callback = ctx.settings.public_url.rstrip("/") + federation.PORTAL_CALLBACK
    title = federation.provider(ctx, provider).title or provider
    try:
        begun = federation.start_browser(
            ctx, provider, callback, mfa=bool(mfa), invitation=invitation.strip() or None
        )
    except ProviderUnavailable as exc:
        return _problem(request, ctx, 502, "The sign-in service is not answering", exc.message, down=True)
    except AccessDenied as exc:  # the invitation is used, expired or replaced
        return _problem(request, ctx, 410, "This invitation cannot be used", exc.message)
    # a page that moves on by itself, not a redirect: the form's page allows forms to post only to
    # the portal (CSP form-action), which a browser applies to the redirects after a form too
    response = page(request, "sign_in_continue.html", url=begun.authorization_url, title=title)
    response.headers["Refresh"] = f"0; url={begun.authorization_url}"
    _flow_cookie(response, ctx, FLOW_COOKIE, begun.state)
    _flow_cookie(response, ctx, NEXT_COOKIE, safe_next(next))
    return response


@root.get(federation.PORTAL_CALLBACK, openapi_extra=acts(None))
def forward(request: Request) -> Response:
    """Where providers send the browser back: on to the portal's page, with the same query."""
    query = request.url.query
    return redirect(CALLBACK + (f"?{query}" if query else ""))


@router.get("/auth/oidc/callback", openapi_extra=acts(None))
def callback(
    request: Request,
    ctx: CtxDep,
    state: str = "",
    code: str = "",
    iss: str | None = None,
    error: str = "",
    error_description: str = "",
) -> Response:
    """Finish the sign-in this browser started, and start a portal session."""
    mine = request.cookies.get(FLOW_COOKIE, "")
    if error:
        said = f" (the provider said: {error_description[:200] or error[:100]})"
        return _problem(
            request, ctx, 401, "You were not signed in",
            f"the sign-in was cancelled or refused at the provider{said}; try again, or sign in with "
            "your levere password",
        )  # fmt: skip
    if not state or not code or not mine or not hmac.compare_digest(state.encode(), mine.encode()):
        return _problem(
            request, ctx, 400, "This sign-in did not start in this browser",
            "levere finishes a sign-in only in the browser that started it; start again from the "
            "sign-in page",
        )  # fmt: skip
    try:
        signed_in = federation.finish_browser(
            ctx, state, code, iss=iss, token_name=portal_sessions.SESSION_TOKEN_NAME
        )
    except ProviderUnavailable as exc:
        return _problem(request, ctx, 502, "The sign-in service is not answering", exc.message, down=True)
    except AuthenticationFailed as exc:
        if exc.details.get("reason") == "identity_not_linked":
            return _problem(request, ctx, 403, "Your identity is not linked to a levere account",
                            exc.message, unlinked=True)  # fmt: skip
        return _problem(request, ctx, 401, "You were not signed in", exc.message)
    except LevereError as exc:  # an unknown, used or expired sign-in; an invitation used meanwhile
        if exc.http_status >= 500:
            raise
        return _problem(request, ctx, exc.http_status, "You were not signed in", exc.message)
    issued = portal_sessions.limit(ctx, signed_in.issued.view())
    response = redirect(safe_next(request.cookies.get(NEXT_COOKIE)))
    _clear_flow(response, ctx)
    set_session(response, ctx, issued.token)
    return response
