"""Deliveries, their files and manifests, batches of small files, and downloads with ranges.

The HTTP contract is shared with the CLI (the deliveries contract in the project's briefs): JSON
shapes and status codes here are what ``levere deliver``, ``levere download`` and ``levere ls`` use.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field, StrictInt

from levere.api.deps import (
    CtxDep,
    DataReadUser,
    DeliveryReadUser,
    DeliveryWriteUser,
    ReadUser,
    WriteUser,
    acts,
    second_factor,
)
from levere.api.openapi import (
    CONDITIONAL_HEADERS,
    DATA_WRITE,
    FILE_RESPONSES,
    TEXT,
    OctetStreamResponse,
    binary_body,
    errors,
    model_content,
    success,
)
from levere.api.routes import tus as tus_routes
from levere.api.schemas import In
from levere.domain.checksum_coverage import ChecksumCoverage
from levere.domain.roles import Action
from levere.http_tus import transfer_limiter
from levere.services import batches, deliveries, downloads, sealing
from levere.services.views import DeliveryView, FileView
from levere.transfer import wire
from levere.transfer.conditional import none_match, strong_match
from levere.transfer.pipe import BodyPipe
from levere.transfer.ranges import RangeNotSatisfiable, parse_range

router = APIRouter(tags=["deliveries"])
router.include_router(tus_routes.router)


# --- bodies ------------------------------------------------------------------------------------------


class DeliveryIn(In):
    name: str = Field(description="the run id: one path component")
    metadata: dict[str, Any] = Field(default_factory=dict, description="e.g. the sample sheet")
    disk: str | None = Field(
        default=None,
        description="the shared disk (disk-N) a sensitive project's delivery lands on; needs a "
        "second factor, and refused for a project that is not sensitive",
    )


class ClientCheckedIn(In):
    checksum_file: str = Field(description="path (in the delivery) of the checksum file the client read")
    unlisted_count: StrictInt = Field(ge=0, description="delivered files it does not list")
    unlisted: list[str] = Field(default_factory=list, max_length=100, description="the first of them")
    encrypted_only: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="of the unlisted, Crypt4GH files (.c4gh) it lists only by their encrypted form",
    )


class SealIn(In):
    checksum_file: str | None = Field(
        default=None,
        description="path (in the delivery) of an md5sum-style file to verify every file against",
    )
    client_checked: ClientCheckedIn | None = Field(
        default=None,
        description="a checksum file in a form only the client reads (e.g. sha256sum output), which it "
        "compared each file with as it sent it; used when checksum_file is not given",
    )


class ChecksumCoverageOut(BaseModel):
    checksum_file: str | None
    files: int
    verified: int
    unlisted: list[str]
    checked_by: Literal["levere", "client"]
    encrypted_only: list[str] = Field(
        default_factory=list,
        description="unlisted files the checksum file names only by the MD5 of their encrypted (.c4gh) "
        "form, which cannot be checked against what a shared disk stores",
    )
    summary: str = Field(description='e.g. "3 of 4 files verified against md5sum.txt; 1 not listed: c.fastq"')


class FileOut(BaseModel):
    path: str
    size: int
    md5: str
    sha256: str
    created_at: datetime
    tiers: dict[str, str]


class UploadOut(BaseModel):
    id: str
    path: str
    length: int
    offset: int
    url: str
    expires_at: datetime


class DeliveryOut(BaseModel):
    id: str
    name: str
    project: str
    state: Literal["open", "sealed", "failed"]
    metadata: dict[str, Any]
    created_at: datetime
    sealed_at: datetime | None
    failure_reason: str
    manifest_sha256: str
    file_count: int
    total_bytes: int
    #: what the run's checksum file covered, recorded at sealing
    checksum_coverage: ChecksumCoverageOut | None = None


class DeliveryDetailOut(DeliveryOut):
    files: list[FileOut]
    uploads: list[UploadOut]


class FilePageOut(BaseModel):
    """One page of a delivery's files, in path order."""

    delivery: DeliveryOut
    files: list[FileOut]
    matching: int = Field(description="files whose path contains `search`, on every page together")
    offset: int
    limit: int
    search: str


class ManifestFileOut(BaseModel):
    path: str
    size: int
    md5: str
    sha256: str


class ManifestOut(BaseModel):
    """The manifest with ``format=json``."""

    project: str
    delivery: str
    state: str
    manifest_sha256: str
    files: list[ManifestFileOut]


class FailureOut(BaseModel):
    path: str
    error: str
    message: str
    #: for ``checksum_mismatch``: the checksums of the bytes that arrived (nothing was stored)
    md5: str | None = None
    sha256: str | None = None


class BatchOut(BaseModel):
    #: each file stored, with its checksums (``?stored=files``, the default)
    stored: list[FileOut]
    #: the paths of the files stored, with ``?stored=paths`` (``stored`` is then empty)
    stored_paths: list[str] = Field(default_factory=list)
    failed: list[FailureOut]


def _file(view: FileView) -> FileOut:
    return FileOut(
        path=view.path,
        size=view.size,
        md5=view.md5,
        sha256=view.sha256,
        created_at=view.created_at,
        tiers=view.tiers,
    )


def delivery_out(view: DeliveryView) -> DeliveryOut:
    return DeliveryOut(**_delivery(view))


def _delivery(view: DeliveryView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "project": view.project,
        "state": view.state,
        "metadata": view.metadata,
        "created_at": view.created_at,
        "sealed_at": view.sealed_at,
        "failure_reason": view.failure_reason,
        "manifest_sha256": view.manifest_sha256,
        "file_count": view.file_count,
        "total_bytes": view.total_bytes,
        "checksum_coverage": _coverage(view.checksum_coverage),
    }


def _coverage(record: dict[str, Any] | None) -> ChecksumCoverageOut | None:
    coverage = ChecksumCoverage.from_record(record)
    if coverage is None:
        return None
    return ChecksumCoverageOut(**coverage.as_record(), summary=coverage.summary())


# --- deliveries -----------------------------------------------------------------------------------------

PROJECT = "/projects/{identifier}"
DELIVERY = PROJECT + "/deliveries/{name}"


@router.post(
    PROJECT + "/deliveries",
    status_code=201,
    summary="Open a delivery (a sequencing run) in a project",
    operation_id="open_delivery",
    responses=errors(400, 404, 409),
    openapi_extra=acts(Action.DELIVERY_CREATE),
)
def open_delivery(
    identifier: str, body: DeliveryIn, request: Request, actor: WriteUser, ctx: CtxDep
) -> DeliveryOut:
    """Open a delivery (a run) in the project; 409 if one with that name exists. A sensitive
    project's delivery names its shared disk."""
    view = deliveries.open_delivery(
        ctx, actor, identifier, body.name, body.metadata,
        disk=body.disk, second_factor=second_factor(request, ctx),
    )  # fmt: skip
    return DeliveryOut(**_delivery(view))


@router.get(
    PROJECT + "/deliveries",
    summary="List a project's deliveries",
    operation_id="list_deliveries",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def list_deliveries(identifier: str, actor: ReadUser, ctx: CtxDep) -> list[DeliveryOut]:
    return [DeliveryOut(**_delivery(v)) for v in deliveries.list_deliveries(ctx, actor, identifier)]


@router.get(
    DELIVERY,
    summary="Show a delivery with its files and unfinished uploads",
    operation_id="get_delivery",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def show_delivery(identifier: str, name: str, actor: DeliveryReadUser, ctx: CtxDep) -> DeliveryDetailOut:
    """The delivery with its files and the uploads still in progress."""
    view = deliveries.show_delivery(ctx, actor, identifier, name)
    return DeliveryDetailOut(
        **_delivery(view),
        files=[_file(f) for f in view.files or []],
        uploads=[
            UploadOut(
                id=u.id,
                path=u.path,
                length=u.length,
                offset=u.offset,
                url=f"/api/tus/{u.id}",
                expires_at=u.expires_at,
            )
            for u in view.uploads or []
        ],
    )


@router.post(
    DELIVERY + "/seal",
    summary="Seal a delivery, verified against its checksum file if named",
    operation_id="seal_delivery",
    responses=errors(400, 404, 409, *DATA_WRITE),
    openapi_extra=acts(Action.DELIVERY_UPLOAD),
)
def seal(
    identifier: str, name: str, actor: DeliveryWriteUser, ctx: CtxDep, body: SealIn | None = None
) -> DeliveryOut:
    """Seal the delivery: verified against ``checksum_file`` if given, immutable afterwards, and the
    project's members are told. A listed file missing or different fails the delivery (409); a
    facility that requires a complete checksum file has the seal refused while any file is unlisted
    (409 ``checksum_file_required``, the delivery stays open)."""
    body = body or SealIn()
    client = body.client_checked
    checked = sealing.ClientChecked(**client.model_dump()) if client is not None else None
    return DeliveryOut(**_delivery(sealing.seal(ctx, actor, identifier, name, body.checksum_file, checked)))


@router.get(
    DELIVERY + "/manifest",
    summary="Get a delivery's manifest (md5sum, sha256sum or JSON)",
    operation_id="get_manifest",
    response_class=PlainTextResponse,
    responses={
        200: success(
            "md5sum or sha256sum lines (text/plain), or the manifest as JSON with `format=json`",
            media_types={**TEXT, "application/json": model_content(ManifestOut)},
        ),
        **errors(404),
    },
    openapi_extra=acts(Action.DELIVERY_READ),
)
def manifest(
    identifier: str,
    name: str,
    actor: ReadUser,
    ctx: CtxDep,
    format: Literal["md5sum", "sha256sum", "json"] = "md5sum",
) -> Response:
    """The delivery's manifest; ``md5sum`` works with ``md5sum -c`` inside the delivery's folder."""
    view = deliveries.manifest(ctx, actor, identifier, name)
    files = view.files or ()
    if format == "json":
        body = {
            "project": view.project,
            "delivery": view.name,
            "state": view.state,
            "manifest_sha256": view.manifest_sha256,
            "files": [{"path": f.path, "size": f.size, "md5": f.md5, "sha256": f.sha256} for f in files],
        }
        return Response(json.dumps(body), media_type="application/json")
    if format == "sha256sum":
        text = "".join(f"{f.sha256}  {f.path}\n" for f in files)
    else:
        text = "".join(sealing.manifest_lines((f.path, f.md5) for f in files))
    return Response(text, media_type="text/plain; charset=utf-8")


@router.post(
    DELIVERY + "/batch",
    response_model=BatchOut,
    summary="Store many small files from one tar stream",
    operation_id="store_batch",
    responses=errors(400, 404, 409, 415, *DATA_WRITE),
    openapi_extra=acts(Action.DELIVERY_UPLOAD)
    | {"requestBody": binary_body("application/x-tar", description="a plain (uncompressed) tar stream")},
)
async def batch(
    identifier: str,
    name: str,
    request: Request,
    actor: DeliveryWriteUser,
    ctx: CtxDep,
    stored: Literal["files", "paths"] = Query(
        "files",
        description="How the answer lists the files stored: each with its checksums, or by path alone "
        "(enough for a client that put each file's SHA-256 in its member: a file that did not match "
        "it was refused, not stored)",
    ),
) -> Response:
    """Store many small files from one plain tar stream (``Content-Type: application/x-tar``).
    Expected checksums per member in PAX records ``LEVERE.md5`` / ``LEVERE.sha256``."""
    length = request.headers.get("content-length", "").strip()
    stepped_up = await anyio.to_thread.run_sync(second_factor, request, ctx)
    pipe = BodyPipe(request.stream())
    try:
        result = await anyio.to_thread.run_sync(
            partial(
                batches.ingest,
                ctx,
                actor,
                identifier,
                name,
                pipe,
                content_length=int(length) if length.isdigit() else None,
                content_type=request.headers.get("content-type", ""),
                second_factor=stepped_up,
            ),
            limiter=transfer_limiter(),
        )
    finally:
        await pipe.stop()
    # thousands of entries: written as JSON directly, in BatchOut's shape, rather than validated
    # model by model
    if stored == "paths":  # 20,000 files: 0.6 MB of answer rather than 5 MB
        paths = [f.path for f in result.stored]
        body = {"stored": [], "stored_paths": paths, "failed": _failures(result)}
        return Response(json.dumps(body), media_type="application/json")
    times: dict[datetime, str] = {}  # a chunk of files shares one time, written once
    body = {
        "stored": [
            {
                "path": f.path, "size": f.size, "md5": f.md5, "sha256": f.sha256,
                "created_at": times.get(f.created_at) or times.setdefault(f.created_at, f.created_at.isoformat()),
                "tiers": f.tiers,
            }
            for f in result.stored
        ],
        "stored_paths": [],
        "failed": _failures(result),
    }  # fmt: skip
    return Response(json.dumps(body), media_type="application/json")


def _failures(result: batches.BatchResult) -> list[dict[str, Any]]:
    return [
        {"path": f.path, "error": f.error, "message": f.message, "md5": f.md5, "sha256": f.sha256}
        for f in result.failed
    ]


# --- files and their bytes ---------------------------------------------------------------------------------


@router.get(
    DELIVERY + "/files",
    summary="List one page of a delivery's files, optionally those whose path contains a text",
    operation_id="list_delivery_files",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def file_page(
    identifier: str,
    name: str,
    actor: DeliveryReadUser,
    ctx: CtxDep,
    search: str = Query("", max_length=4096, description="only files whose path contains this (any case)"),
    offset: int = Query(0, ge=0, le=deliveries.MAX_OFFSET),
    limit: int = Query(100, ge=1, le=deliveries.MAX_PAGE),
) -> FilePageOut:
    """A page of the delivery's files with their sizes, checksums and tiers, for runs too large to
    list at once; ``matching`` says how many pages there are."""
    page = deliveries.file_page(ctx, actor, identifier, name, search=search, offset=offset, limit=limit)
    return FilePageOut(
        delivery=delivery_out(page.delivery),
        files=[_file(f) for f in page.files],
        matching=page.matching,
        offset=page.offset,
        limit=page.limit,
        search=page.search,
    )


@router.get(
    PROJECT + "/files",
    summary="List a project's files with the tiers that hold each",
    operation_id="list_files",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def list_files(
    identifier: str,
    actor: DataReadUser,
    ctx: CtxDep,
    prefix: str = Query("", description="DELIVERY/ or DELIVERY/sub/ to narrow the list"),
) -> list[FileOut]:
    """Files of the project as ``DELIVERY/PATH``, with the tiers that hold each."""
    return [_file(f) for f in deliveries.list_files(ctx, actor, identifier, prefix)]


@router.get(
    PROJECT + "/data/{delivery}/{path:path}",
    summary="Download a file, whole or a byte range",
    operation_id="file_data",
    response_class=OctetStreamResponse,
    responses=FILE_RESPONSES,
    openapi_extra=acts(Action.DATA_READ) | CONDITIONAL_HEADERS,
)
@router.head(
    PROJECT + "/data/{delivery}/{path:path}",
    summary="A file's size, checksums and ETag, without its bytes",
    operation_id="file_data_head",
    response_class=OctetStreamResponse,
    responses=FILE_RESPONSES,
    openapi_extra=acts(Action.DATA_READ) | CONDITIONAL_HEADERS,
)
def data(
    identifier: str, delivery: str, path: str, request: Request, actor: DataReadUser, ctx: CtxDep
) -> Response:
    """The file's bytes, with ``Range`` (206, 416), ``If-Range``, ``ETag`` (its SHA-256) and
    ``Levere-Checksum`` so that the client can verify what it saved."""
    found = downloads.open_file(ctx, actor, identifier, delivery, path)
    etag = f'"{found.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        wire.CHECKSUM_HEADER: wire.format_checksums(found.md5, found.sha256),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(found.path.rsplit('/', 1)[-1])}",
    }
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    chosen = None
    if wanted and (if_range is None or strong_match(if_range, etag)):
        try:
            chosen = parse_range(wanted, found.size)
        except RangeNotSatisfiable:
            return JSONResponse(
                status_code=416,
                content={
                    "error": "range_not_satisfiable",
                    "message": f"the range {wanted!r} lies outside the file, which has {found.size} bytes",
                    "details": {"size": found.size},
                },
                headers={**headers, "Content-Range": f"bytes */{found.size}"},
            )
    if chosen is not None:
        headers["Content-Range"] = chosen.content_range(found.size)
    headers["Content-Length"] = str(chosen.length if chosen else found.size)
    status = 206 if chosen else 200
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    body = found.read(chosen.start, chosen.end) if chosen else found.read()
    return StreamingResponse(body, status_code=status, headers=headers, media_type="application/octet-stream")
