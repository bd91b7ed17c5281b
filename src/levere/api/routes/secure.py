"""The secure zone: secure projects, their members, shared disks and the standard analysis of their
deliveries. Every route needs a token whose sign-in passed a second factor (``Zone*User``)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from levere.api.deps import CtxDep, ZoneReadUser, ZoneReviewUser, ZoneWriteUser, acts
from levere.api.openapi import errors
from levere.api.routes.sync import JobOut
from levere.api.schemas_zone import (
    DiskContentsOut,
    DiskIn,
    DiskOut,
    PublicKeyOut,
    QcReportOut,
    SecureProjectIn,
    SecureProjectOut,
    ZoneMemberIn,
    ZoneMemberOut,
)
from levere.domain.roles import Action
from levere.services import secure, secure_disks, zone_analysis, zone_files

router = APIRouter(prefix="/secure", tags=["secure zone"])


@router.get(
    "/projects",
    summary="List the secure projects you may see",
    operation_id="list_secure_projects",
    openapi_extra=acts(None),
)
def list_projects(actor: ZoneReadUser, ctx: CtxDep) -> list[SecureProjectOut]:
    return [SecureProjectOut.model_validate(asdict(v)) for v in secure.visible(ctx, actor)]


@router.post(
    "/projects",
    summary="Register an existing secure project, a users' or a facility's",
    operation_id="register_secure_project",
    status_code=201,
    responses=errors(404, 409, 422),
    openapi_extra=acts(Action.SECURE_REGISTER),
)
def register(body: SecureProjectIn, actor: ZoneReviewUser, ctx: CtxDep) -> SecureProjectOut:
    made = secure.register(ctx, actor, body.identifier, project=body.project, facility=body.facility)
    return SecureProjectOut.model_validate(asdict(made))


@router.get(
    "/projects/{identifier}",
    summary="Show a secure project and its public key",
    operation_id="get_secure_project",
    responses=errors(404),
    openapi_extra=acts(Action.SECURE_READ),
)
def show(identifier: str, actor: ZoneReadUser, ctx: CtxDep) -> SecureProjectOut:
    return SecureProjectOut.model_validate(asdict(secure.show(ctx, actor, identifier)))


@router.get(
    "/projects/{identifier}/members",
    summary="List the staff let into a users' secure project, with their end dates",
    operation_id="list_zone_members",
    responses=errors(404),
    openapi_extra=acts(Action.SECURE_MEMBER_LIST),
)
def list_members(identifier: str, actor: ZoneReadUser, ctx: CtxDep) -> list[ZoneMemberOut]:
    return [ZoneMemberOut.model_validate(asdict(m)) for m in secure.list_members(ctx, actor, identifier)]


@router.post(
    "/projects/{identifier}/members",
    summary="Let helpdesk or facility staff into a users' secure project until an end date",
    operation_id="invite_zone_member",
    status_code=201,
    responses=errors(404, 422),
    openapi_extra=acts(Action.SECURE_MEMBER_MANAGE),
)
def invite(identifier: str, body: ZoneMemberIn, actor: ZoneWriteUser, ctx: CtxDep) -> ZoneMemberOut:
    member = secure.invite_member(ctx, actor, identifier, body.email, body.ends_at)
    return ZoneMemberOut.model_validate(asdict(member))


@router.delete(
    "/projects/{identifier}/members/{email}",
    summary="End a member's access to a users' secure project now",
    operation_id="remove_zone_member",
    responses=errors(404),
    openapi_extra=acts(Action.SECURE_MEMBER_MANAGE),
)
def remove(identifier: str, email: str, actor: ZoneWriteUser, ctx: CtxDep) -> ZoneMemberOut:
    return ZoneMemberOut.model_validate(asdict(secure.remove_member(ctx, actor, identifier, email)))


@router.get(
    "/disks",
    summary="List the shared disks you may see",
    operation_id="list_shared_disks",
    openapi_extra=acts(None),
)
def list_disks(actor: ZoneReadUser, ctx: CtxDep) -> list[DiskOut]:
    return [DiskOut.model_validate(asdict(d)) for d in secure_disks.visible(ctx, actor)]


@router.post(
    "/disks",
    summary="Create a shared disk between a facility's and a users' secure project",
    operation_id="create_shared_disk",
    status_code=201,
    responses=errors(404, 422),
    openapi_extra=acts(Action.DISK_CREATE),
)
def create_disk(body: DiskIn, actor: ZoneReviewUser, ctx: CtxDep) -> DiskOut:
    made = secure_disks.create(
        ctx, actor,
        facility_project=body.facility_project, users_project=body.users_project,
        ends_at=body.ends_at, quota_bytes=body.quota_bytes,
    )  # fmt: skip
    return DiskOut.model_validate(asdict(made))


@router.get(
    "/disks/{name}",
    summary="Show a shared disk: its state, quota, end date and public key",
    operation_id="get_shared_disk",
    responses=errors(404),
    openapi_extra=acts(Action.DISK_READ),
)
def show_disk(name: str, actor: ZoneReadUser, ctx: CtxDep) -> DiskOut:
    return DiskOut.model_validate(asdict(secure_disks.show(ctx, actor, name)))


@router.get(
    "/disks/{name}/files",
    summary="List a shared disk's deliveries and their files (both sides)",
    operation_id="list_shared_disk_files",
    responses=errors(403, 404),
    openapi_extra=acts(Action.DISK_READ),
)
def disk_files(name: str, actor: ZoneReadUser, ctx: CtxDep, delivery: str | None = None) -> DiskContentsOut:
    return DiskContentsOut.model_validate(asdict(zone_files.disk_contents(ctx, actor, name, delivery)))


@router.get(
    "/disks/{name}/pubkey",
    summary="A shared disk's Crypt4GH public key, to encrypt files for it",
    operation_id="get_shared_disk_pubkey",
    responses=errors(404, 422),
    openapi_extra=acts(Action.DISK_READ),
)
def disk_pubkey(name: str, actor: ZoneReadUser, ctx: CtxDep) -> PublicKeyOut:
    return PublicKeyOut(pem=secure_disks.public_key(ctx, actor, name))


@router.post(
    "/disks/{name}/destroy",
    summary="Destroy a shared disk with its keys: nothing on it can be read again",
    operation_id="destroy_shared_disk",
    responses=errors(404, 409),
    openapi_extra=acts(Action.DISK_DESTROY),
)
def destroy_disk(name: str, actor: ZoneReviewUser, ctx: CtxDep) -> DiskOut:
    return DiskOut.model_validate(asdict(secure_disks.destroy(ctx, actor, name)))


#: the QC page is the one HTML levere hands out from the zone: never cached, nothing it may load
QC_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}


@router.post(
    "/disks/{name}/deliveries/{delivery}/analysis",
    summary="Start the standard analysis (QC) of a delivery's FASTQ files on a shared disk",
    operation_id="start_zone_analysis",
    status_code=202,
    responses=errors(404, 409),
    openapi_extra=acts(Action.DISK_WRITE),
)
def start_analysis(name: str, delivery: str, actor: ZoneWriteUser, ctx: CtxDep) -> JobOut:
    return JobOut.model_validate(zone_analysis.request_analysis(ctx, actor, name, delivery))


@router.get(
    "/disks/{name}/deliveries/{delivery}/qc",
    summary="A delivery's analysis report: every FASTQ file's figures (the JSON summary)",
    operation_id="get_zone_qc",
    responses=errors(404, 409),
    openapi_extra=acts(Action.ANALYSIS_READ),
)
def qc_report(name: str, delivery: str, actor: ZoneReadUser, ctx: CtxDep) -> QcReportOut:
    return QcReportOut.model_validate(asdict(zone_analysis.qc_report(ctx, actor, name, delivery)))


@router.get(
    "/disks/{name}/deliveries/{delivery}/qc/page",
    summary="One FASTQ file's analysis as an HTML page with plots",
    operation_id="get_zone_qc_page",
    response_class=HTMLResponse,
    responses=errors(404, 409),
    openapi_extra=acts(Action.ANALYSIS_READ),
)
def qc_page(
    name: str,
    delivery: str,
    actor: ZoneReadUser,
    ctx: CtxDep,
    file: str = Query(..., max_length=4096, description="the FASTQ file's path in the delivery"),
) -> HTMLResponse:
    page = zone_analysis.qc_page(ctx, actor, name, delivery, file)
    return HTMLResponse(page.html, headers=QC_PAGE_HEADERS)
