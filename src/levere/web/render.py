"""Rendering pages: one Jinja2 environment, the headers every page gets, and the error pages.

Every page is rendered with the viewer (or ``None``), its CSRF token and a few formatting helpers;
templates never reach the database, they show what a service returned.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from levere.domain.errors import AccessDenied, LevereError, NotFound, ValidationFailed
from levere.domain.tiers import tier_words
from levere.domain.units import format_size
from levere.services.views import QuotaView
from levere.web.session import (
    PREFIX,
    SecondFactorNeeded,
    SignInNeeded,
    StepUpNeeded,
    csrf_token,
    remember_presession,
    sign_in_url,
    step_up_url,
)

HEADERS = {
    # pages load only the portal's own stylesheet and scripts, and ask only the portal;
    # QR codes are inline images
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _words(value: str) -> str:
    return value.replace("_", " ")


def _percent(quota: QuotaView) -> int:
    """How full a quota is, in whole percent (a quota without a limit counts as empty)."""
    if not quota.limit_bytes:
        return 0
    return min(100, round(100 * quota.used_bytes / quota.limit_bytes))


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("levere.web", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = format_size
    env.filters["when"] = _when
    env.filters["words"] = _words
    env.filters["percent"] = _percent
    env.filters["tier"] = tier_words
    env.globals["prefix"] = PREFIX
    return env


def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    viewer = getattr(request.state, "viewer", None)
    html = (
        environment()
        .get_template(template)
        .render(viewer=viewer, csrf=csrf_token(request), path=request.url.path, **values)
    )
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    remember_presession(request, response)
    return response


def redirect(url: str) -> RedirectResponse:
    """After a form: the browser asks for the next page with GET (Post/Redirect/Get)."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def is_portal(request: Request) -> bool:
    path = request.url.path
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")


def error_page(request: Request, exc: Exception) -> Response:
    """The page for an error raised while serving a portal page."""
    if isinstance(exc, SignInNeeded):
        return redirect(sign_in_url(exc.back_to))
    if isinstance(exc, StepUpNeeded):
        return redirect(step_up_url(exc.back_to))
    if isinstance(exc, SecondFactorNeeded):
        return redirect(f"{PREFIX}/account/two-factor")
    if isinstance(exc, AccessDenied):
        return page(request, "no_access.html", 403, reason=exc.message)
    if isinstance(exc, NotFound):
        return page(request, "error.html", 404, title="Not found", message=exc.message)
    if isinstance(exc, ValidationFailed):
        return page(request, "error.html", 422, title="Please check what you sent", message=exc.message)
    if isinstance(exc, LevereError):
        return page(request, "error.html", exc.http_status, title="That did not work", message=exc.message)
    if isinstance(exc, RequestValidationError):
        return page(
            request,
            "error.html",
            422,
            title="Please check what you sent",
            message="the form or address is missing something this page needs",
        )
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return page(request, "error.html", 404, title="Not found", message="there is no such page")
        if exc.status_code == 405:
            return page(request, "error.html", 405, title="Not here", message="this page does not take that")
        return page(
            request, "error.html", exc.status_code, title="That did not work", message=str(exc.detail)
        )
    raise exc
