"""What the API believes about a request before it reads it: the client's address and body sizes.

Design notes
------------
* Client address: ``X-Forwarded-For`` is believed only from the configured ``trusted_proxies``
  (uvicorn's proxy-headers middleware, here in the application so that every way of serving it
  behaves the same); ``levere serve`` turns uvicorn's own handling off, which trusted loopback.
* JSON bodies are capped per route before they are parsed (:class:`JsonBodyCap`): routes that need a signed-in caller
  take up to ``json_body_limit_bytes``, routes open without sign-in less. A declared
  ``Content-Length`` over the cap is refused before a byte of the body is read; a chunked body is
  counted while it is read and refused as soon as it passes the cap, so nothing large is buffered.
  The answer is a 413 in levere's error format, and the connection is closed (the rest of the body
  is never read). Data routes (tus PATCH, tar batches) read their bodies as streams bounded by
  their declared lengths; they take no JSON body and are not capped here.
* A NUL character in the address (its path or query, once decoded) is refused before routing
  (:class:`NoNulInAddress`): no name, path or search in levere can hold one, and PostgreSQL cannot
  compare text with one, so the request could only fail later, less clearly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levere.domain.errors import BodyTooLarge

#: set on the dependencies that require a signed-in caller (``api.deps``)
SIGNED_IN = "levere_requires_sign_in"

Dependency = TypeVar("Dependency", bound=Callable[..., Any])


def trust_proxies(app: FastAPI, proxies: list[str]) -> None:
    """Take the client's address from X-Forwarded-For, but only when the peer is a trusted proxy."""
    if proxies:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)


class NoNulInAddress:
    """ASGI middleware: a request whose path or query holds a NUL character (``%00``) is answered
    with a 422 in levere's error format (a plain 400 for the portal's pages) and goes no further."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_nul(scope):
            if str(scope.get("path", "")).startswith("/portal"):
                response: Any = PlainTextResponse(
                    "This address holds a NUL character, which no page of levere's has.", status_code=400
                )
            else:
                response = JSONResponse(
                    status_code=422,
                    content={
                        "error": "validation_failed",
                        "message": "invalid input: the address holds a NUL character (%00), which no name, "
                        "path or search in levere can contain",
                        "details": {"fields": {"address": "must not contain a NUL character"}},
                    },
                )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    raw_path = scope.get("raw_path") or str(scope.get("path", "")).encode()
    return b"\0" in unquote_to_bytes(raw_path) or b"\0" in unquote_to_bytes(scope.get("query_string", b""))


class JsonBodyCap:
    """ASGI middleware: caps the body of each route that parses one, when the route starts reading it
    (routing has happened by then, so the route and its dependencies are known)."""

    def __init__(self, app: ASGIApp, signed_in: int, anonymous: int) -> None:
        self.app = app
        self.signed_in = signed_in
        self.anonymous = anonymous
        self._limits: dict[int, int | None] = {}

    def limit_for(self, route: Any) -> int | None:
        """The cap of a route: none for data routes, which parse no body and stream their own."""
        key = id(route)
        if key not in self._limits:
            if not isinstance(route, APIRoute):
                self._limits[key] = self.anonymous  # nothing of levere's: the smallest cap
            elif route.body_field is None:
                self._limits[key] = None
            else:
                self._limits[key] = self.signed_in if _needs_sign_in(route.dependant) else self.anonymous
        return self._limits[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int | None = None
        checked = over = answered = False
        seen = 0

        async def counted() -> Message:
            nonlocal limit, checked, over, seen
            if not checked:
                checked = True
                limit = self.limit_for(scope.get("route"))
                declared = _declared_length(scope)
                if limit is not None and declared is not None and declared > limit:
                    over = True
                    raise _Over  # before a byte of the body is read
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _Over
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if over:
                return  # the route's own answer to the interrupted read: the 413 replaces it
            answered = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over or answered:
                raise
        if over and not answered:
            assert limit is not None
            await _refuse(scope, receive, send, limit)


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _needs_sign_in(dependant: Dependant) -> bool:
    return any(getattr(sub.call, SIGNED_IN, False) for sub in _dependencies(dependant))


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    error = BodyTooLarge(limit)
    response = JSONResponse(
        status_code=error.http_status,
        content={"error": error.code, "message": error.message, "details": error.details},
        headers={"Connection": "close"},  # the rest of the body is not read
    )
    await response(scope, receive, send)


class _Over(Exception):
    """A chunked body went past its cap while being read."""


def mark_signed_in(dependency: Dependency) -> Dependency:
    """Mark a dependency as requiring a signed-in caller (so its routes get the larger cap)."""
    setattr(dependency, SIGNED_IN, True)
    return dependency
