"""The secure zone's data: release from a shared disk, listings, and downloads re-encrypted to the
reader's own Crypt4GH key. Every route needs a second factor (``Zone*User``)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from levere.api.deps import CtxDep, ZoneReadUser, ZoneWriteUser, acts
from levere.api.openapi import BINARY, OctetStreamResponse, errors, success
from levere.api.routes.sync import JobOut
from levere.api.schemas_zone import ZoneFileOut
from levere.domain.roles import Action
from levere.services import zone_access, zone_files, zone_release
from levere.services.zone_access import ZoneDownload
from levere.services.zone_files import ZoneFileView
from levere.transfer import wire

router = APIRouter(prefix="/secure", tags=["secure zone"])

DISK_DELIVERY = "/disks/{name}/deliveries/{delivery}"
SECURE_DELIVERY = "/projects/{identifier}/deliveries/{delivery}"
PUBKEY = Query(
    ...,
    min_length=1,
    max_length=400,
    description="Your Crypt4GH public key (the base64 line of a crypt4gh-keygen .pub file, or the "
    "whole file): the download is encrypted to it",
)
DOWNLOAD_RESPONSES = {
    200: success(
        "A Crypt4GH file for your key: a header made for it, then the body as stored",
        media_types=BINARY,
    ),
    **errors(403, 404, 409, 422),
}


def _file_out(f: ZoneFileView) -> ZoneFileOut:
    """A zone file as the download side names it: ``DELIVERY/PATH``."""
    return ZoneFileOut(
        path=f.full_path,
        size=f.size,
        md5=f.md5,
        sha256=f.sha256,
        body_size=f.body_size or 0,
        released=f.released,
    )


def _stream(found: ZoneDownload) -> StreamingResponse:
    name = found.path.rsplit("/", 1)[-1] + ".c4gh"
    headers = {
        "Content-Length": str(found.size),
        wire.PLAINTEXT_CHECKSUM_HEADER: wire.format_checksums(found.plaintext_md5, found.plaintext_sha256),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        "Cache-Control": "no-store",
    }
    return StreamingResponse(found.read(), headers=headers, media_type="application/octet-stream")


@router.get(
    DISK_DELIVERY + "/files",
    summary="List a delivery's files on a shared disk (both sides, until it is released)",
    operation_id="list_disk_files",
    responses=errors(403, 404),
    openapi_extra=acts(Action.DISK_DATA_READ),
)
def disk_files(name: str, delivery: str, actor: ZoneReadUser, ctx: CtxDep) -> list[ZoneFileOut]:
    listed = zone_files.disk_contents(ctx, actor, name, delivery, to_read=True)
    return [_file_out(f) for f in listed.files]


@router.get(
    DISK_DELIVERY + "/data/{path:path}",
    summary="Download a file on a shared disk as a Crypt4GH file for your public key",
    operation_id="disk_file_data",
    response_class=OctetStreamResponse,
    responses=DOWNLOAD_RESPONSES,
    openapi_extra=acts(Action.DISK_DATA_READ),
)
def disk_data(
    name: str, delivery: str, path: str, actor: ZoneReadUser, ctx: CtxDep, pubkey: str = PUBKEY
) -> StreamingResponse:
    return _stream(zone_access.disk_download(ctx, actor, name, delivery, path, pubkey))


@router.get(
    "/projects/{identifier}/files",
    summary="List the released files of a users' secure project",
    operation_id="list_secure_files",
    responses=errors(403, 404, 409),
    openapi_extra=acts(Action.SECURE_DATA_READ),
)
def secure_files(
    identifier: str,
    actor: ZoneReadUser,
    ctx: CtxDep,
    delivery: str | None = Query(None, max_length=255, description="only this delivery's files"),
) -> list[ZoneFileOut]:
    return [_file_out(f) for f in zone_access.secure_files(ctx, actor, identifier, delivery)]


@router.get(
    SECURE_DELIVERY + "/data/{path:path}",
    summary="Download a released file as a Crypt4GH file for your public key",
    operation_id="secure_file_data",
    response_class=OctetStreamResponse,
    responses=DOWNLOAD_RESPONSES,
    openapi_extra=acts(Action.SECURE_DATA_READ),
)
def secure_data(
    identifier: str, delivery: str, path: str, actor: ZoneReadUser, ctx: CtxDep, pubkey: str = PUBKEY
) -> StreamingResponse:
    return _stream(zone_access.secure_download(ctx, actor, identifier, delivery, path, pubkey))


# last of the routes: the permission walk releases its delivery, which no later sample may need
@router.post(
    DISK_DELIVERY + "/release",
    summary="Release a delivery on a shared disk to the users' secure project (the facility's side)",
    operation_id="release_delivery",
    status_code=202,
    responses=errors(403, 404, 409),
    openapi_extra=acts(Action.DISK_RELEASE),
)
def release(name: str, delivery: str, actor: ZoneWriteUser, ctx: CtxDep) -> JobOut:
    """Starts the release as a job (follow it at ``/projects/{project}/jobs/{id}``): each file gets
    a header for the users' secure project's key and loses the disk's; the bodies are not touched.
    A release of the delivery already under way is answered with its job. Interrupted, the job goes
    on where it stopped; once released, the facility has no access to the delivery. When nothing
    unreleased is left, the disk is released and its key destroyed. The finished job's report holds
    ``users_project``, ``files``, ``moved``, ``disk_state`` and ``released_at``."""
    return JobOut.model_validate(zone_release.request_release(ctx, actor, name, delivery))
