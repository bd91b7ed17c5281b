"""The HTTP side of tus shared by the API's ``/api/tus/`` and the portal's ``/portal/tus/``: answers
that always carry ``Tus-Resumable`` (errors keep levere's JSON body, so a stock tus client and
levere's own both understand them), the upload headers of an answer, and request bodies handed to
a worker thread through a :class:`~levere.transfer.pipe.BodyPipe`, read only once the service's
checks have passed."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from levere.context import Context
from levere.dataplane import UploadView
from levere.db.models import User
from levere.domain.errors import LevereError
from levere.services import uploads
from levere.transfer import tus, wire
from levere.transfer.pipe import BodyPipe

_limiter: anyio.CapacityLimiter | None = None


def transfer_limiter() -> anyio.CapacityLimiter:
    """Threads for request bodies, apart from the pool that runs ordinary routes, so that many
    long uploads never starve short requests."""
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(128)
    return _limiter


def error_response(exc: LevereError) -> JSONResponse:
    headers = {"Tus-Resumable": tus.VERSION}
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "offset" in exc.details:
        headers["Upload-Offset"] = str(exc.details["offset"])
    return JSONResponse(
        status_code=exc.http_status,
        content={"error": exc.code, "message": exc.message, "details": exc.details},
        headers=headers,
    )


def _plain(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": code, "message": message, "details": {}},
        headers={"Tus-Resumable": tus.VERSION, **headers},
    )


class TusRoute(APIRoute):
    """Adds ``Tus-Resumable`` to every answer and turns protocol errors into tus status codes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except LevereError as exc:
                return error_response(exc)
            except tus.VersionUnsupported as exc:
                return _plain(
                    412,
                    "tus_version",
                    f"this server speaks tus {tus.VERSION}, not {exc}",
                    **{"Tus-Version": tus.VERSION},
                )
            except tus.ChecksumAlgorithmUnsupported as exc:
                return _plain(
                    400,
                    "checksum_algorithm",
                    f"checksum algorithm {exc} is not supported; use one of {', '.join(tus.CHECKSUM_ALGORITHMS)}",
                )
            except uploads.WrongContentType:
                return _plain(415, "content_type", f"a PATCH body must be sent as {tus.OFFSET_CONTENT_TYPE}")
            response.headers.setdefault("Tus-Resumable", tus.VERSION)
            return response

        return route


def upload_headers(view: UploadView) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(view.offset),
        "Upload-Length": str(view.length),
        "Upload-Expires": tus.http_date(view.expires_at),
        "Cache-Control": "no-store",
    }
    if view.digests is not None:
        headers[wire.CHECKSUM_HEADER] = view.digests.header()
    return headers


async def append_body(
    ctx: Context, actor: User, upload_id: str, request: Request, headers: Mapping[str, str]
) -> UploadView:
    pipe = BodyPipe(request.stream())
    try:
        return await anyio.to_thread.run_sync(
            partial(uploads.append, ctx, actor, upload_id, headers, pipe), limiter=transfer_limiter()
        )
    finally:
        await pipe.stop()


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return (length.isdigit() and int(length) > 0) or "chunked" in request.headers.get("transfer-encoding", "")
