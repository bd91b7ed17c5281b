"""Resumable uploads over tus 1.0.0 at ``/api/tus/`` (see ``docs``: the deliveries HTTP contract).

Every answer carries ``Tus-Resumable``, errors included, and errors keep levere's JSON body, so a
stock tus client and levere's own client both understand them (:mod:`levere.http_tus`, which the
portal's tus endpoint shares).
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

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
from levere.domain.roles import Action
from levere.http_tus import TusRoute, append_body, has_body, upload_headers
from levere.services import upload_endings, upload_grants, uploads
from levere.transfer import tus

router = APIRouter(prefix="/tus", tags=["uploads"], route_class=TusRoute)


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
    answer = {"Location": f"/api/tus/{view.id}", **upload_headers(view)}
    if has_body(request) and view.offset < view.length:
        view = await append_body(ctx, actor, view.id, request, {**headers, "upload-offset": "0"})
        answer |= upload_headers(view)
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
    return Response(status_code=200, headers=upload_headers(view))


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
    view = await append_body(ctx, actor, upload_id, request, dict(request.headers))
    return Response(status_code=204, headers=upload_headers(view))


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
    upload_endings.terminate(ctx, actor, upload_id, dict(request.headers))
    return Response(status_code=204)
