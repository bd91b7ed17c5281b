"""Resumable uploads over tus 1.0.0 at ``/api/tus/`` (see ``docs``: the deliveries HTTP contract).

Every answer carries ``Tus-Resumable``, errors included, and errors keep levere's JSON body, so a
stock tus client and levere's own client both understand them. Request bodies go to a worker thread
through a :class:`~levere.transfer.pipe.BodyPipe`, read only once the service's checks have passed.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from levere.api.deps import CtxDep, TusCreateUser, UploadUser, acts, bearer_token, second_factor
from levere.api.openapi import (
    CREATED_HEADERS,
    OPTIONS_HEADERS,
    TUS_RESUMABLE,
    UPLOAD_HEADERS,
    success,
    tus_errors,
    tus_request,
)
from levere.context import Context
from levere.dataplane import UploadView
from levere.db.models import User
from levere.domain.errors import LevereError
from levere.domain.roles import Action
from levere.services import upload_grants, uploads
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


router = APIRouter(prefix="/tus", tags=["uploads"], route_class=TusRoute)


def _upload_headers(view: UploadView) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(view.offset),
        "Upload-Length": str(view.length),
        "Upload-Expires": tus.http_date(view.expires_at),
        "Cache-Control": "no-store",
    }
    if view.digests is not None:
        headers[wire.CHECKSUM_HEADER] = view.digests.header()
    return headers


async def _append(
    ctx: Context, actor: User, upload_id: str, request: Request, headers: Mapping[str, str]
) -> UploadView:
    pipe = BodyPipe(request.stream())
    try:
        return await anyio.to_thread.run_sync(
            partial(uploads.append, ctx, actor, upload_id, headers, pipe), limiter=transfer_limiter()
        )
    finally:
        await pipe.stop()


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return (length.isdigit() and int(length) > 0) or "chunked" in request.headers.get("transfer-encoding", "")


@router.options(
    "/",
    status_code=204,
    summary="Which tus version and extensions this server speaks",
    operation_id="tus_capabilities",
    response_class=Response,
    responses={204: success("The server's tus capabilities", headers=OPTIONS_HEADERS)},
    openapi_extra=acts(None),
)
def options() -> Response:
    """Which tus version and extensions this server speaks (no sign-in needed)."""
    return Response(status_code=204, headers=tus.options_headers())


@router.post(
    "/",
    status_code=201,
    summary="Create a resumable upload (tus), optionally with its first bytes",
    operation_id="create_upload",
    response_class=Response,
    responses={
        201: success("The upload was created", headers=CREATED_HEADERS),
        **tus_errors(400, 409, 415, 460, 507),
    },
    openapi_extra=acts(Action.DELIVERY_UPLOAD)
    | tus_request("Upload-Length", "Upload-Metadata", "Upload-Checksum", body="optional"),
)
async def create(request: Request, actor: TusCreateUser, ctx: CtxDep) -> Response:
    """Create an upload: reserves ``Upload-Length`` of the project's quota. Upload-Metadata keys:
    ``project``, ``delivery``, ``path`` and optionally ``md5`` / ``sha256`` of the whole file.
    With a body (creation-with-upload) the first bytes are stored at once."""
    headers = dict(request.headers)
    stepped_up = await run_in_threadpool(second_factor, request, ctx)
    view = await run_in_threadpool(partial(uploads.create, ctx, actor, headers, second_factor=stepped_up))
    await run_in_threadpool(upload_grants.grant, ctx, view.id, bearer_token(request))
    answer = {"Location": f"/api/tus/{view.id}", **_upload_headers(view)}
    if _has_body(request) and view.offset < view.length:
        view = await _append(ctx, actor, view.id, request, {**headers, "upload-offset": "0"})
        answer |= _upload_headers(view)
    return Response(status_code=201, headers=answer)


@router.head(
    "/{upload_id}",
    summary="Where to resume an upload: the offset the storage durably holds",
    operation_id="get_upload_offset",
    response_class=Response,
    responses={200: success("The upload's offset and length", headers=UPLOAD_HEADERS), **tus_errors()},
    openapi_extra=acts(Action.DELIVERY_UPLOAD) | tus_request(),
)
def head(upload_id: str, request: Request, actor: UploadUser, ctx: CtxDep) -> Response:
    """The offset to resume from: what the storage durably holds, also after a server crash."""
    view = uploads.status(ctx, actor, upload_id, dict(request.headers))
    return Response(status_code=200, headers=_upload_headers(view))


@router.patch(
    "/{upload_id}",
    status_code=204,
    summary="Append bytes to an upload at its offset",
    operation_id="append_to_upload",
    response_class=Response,
    responses={
        204: success("The bytes are stored", headers=UPLOAD_HEADERS),
        **tus_errors(400, 409, 415, 460, 507),
    },
    openapi_extra=acts(Action.DELIVERY_UPLOAD)
    | tus_request("Upload-Offset", "Upload-Checksum", body="required"),
)
async def patch(upload_id: str, request: Request, actor: UploadUser, ctx: CtxDep) -> Response:
    """Append the body at ``Upload-Offset``. When the last byte is in, the server's MD5 and SHA-256
    are compared with the expected ones and the file is published (``Levere-Checksum`` answers)."""
    view = await _append(ctx, actor, upload_id, request, dict(request.headers))
    return Response(status_code=204, headers=_upload_headers(view))


@router.delete(
    "/{upload_id}",
    status_code=204,
    summary="Cancel an upload: its bytes are dropped and its reservation given back",
    operation_id="terminate_upload",
    response_class=Response,
    responses={
        204: success("The upload is cancelled", headers={"Tus-Resumable": TUS_RESUMABLE}),
        **tus_errors(409),
    },
    openapi_extra=acts(Action.DELIVERY_UPLOAD) | tus_request(),
)
def terminate(upload_id: str, request: Request, actor: UploadUser, ctx: CtxDep) -> Response:
    """Cancel the upload: its bytes are dropped and its reservation given back."""
    uploads.terminate(ctx, actor, upload_id, dict(request.headers))
    return Response(status_code=204)
