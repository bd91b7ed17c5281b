"""HTTP errors the framework raises itself (an unknown path, a method a path does not serve), in
levere's error format, and the full ``Allow`` header of a 405 answer (RFC 9110 section 15.5.6).

The router stops at the first route whose path matches and names only that route's methods, though
several routes may serve one path (``GET`` and ``PATCH /api/projects/{identifier}`` are two
routes); the ``Allow`` header here lists the methods of every route that serves the path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

#: the error code and message of each status the framework raises on its own
_WORDS = {
    400: ("malformed_body", "the request body could not be read as JSON"),
    404: ("not_found", "there is no such API path"),
    405: ("method_not_allowed", "this path does not serve the {method} method"),
}


def _routes(app: FastAPI) -> Iterable[Any]:
    """Every route with its full path; newer FastAPI keeps included routers as lazy branches."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:  # FastAPI before lazy routers: app.routes is flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def allowed_methods(app: FastAPI, scope: dict[str, Any]) -> list[str]:
    """The methods some route serves at the request's path, in a fixed order."""
    methods: set[str] = set()
    for route in _routes(app):
        route_methods = getattr(route, "methods", None)
        if not route_methods:
            continue
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(route_methods)
    return [m for m in _ORDER if m in methods] + sorted(methods - set(_ORDER))


async def framework_error(request: Request, exc: Exception) -> JSONResponse:
    """An HTTP error raised by the framework, worded as levere's errors are."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    code, message = _WORDS.get(exc.status_code, ("http_error", str(exc.detail)))
    details: dict[str, Any] = {}
    if exc.status_code == 405:
        allowed = allowed_methods(request.app, dict(request.scope))
        headers["Allow"] = ", ".join(allowed)
        details["allowed"] = allowed
    return JSONResponse(
        status_code=exc.status_code,
        content={"error": code, "message": message.format(method=request.method), "details": details},
        headers=headers,
    )
