"""The secure zone's pages: shared disks, a disk's deliveries with their files and analysis reports,
the standard analysis and the release (behind a confirmation), and a users' secure project with its
released files, its invited staff and downloads encrypted to the reader's Crypt4GH key.

Every page needs a session whose sign-in passed a second factor (``ZoneViewer``: the step-up page
otherwise); what the viewer may see and do comes from the zone's use cases and the permission table
(:mod:`levere.services.zone_pages`).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from levere.domain.errors import InvalidPublicKey, ValidationFailed
from levere.domain.roles import Action
from levere.http_deps import CtxDep, acts
from levere.services import identity_keys, secure, zone_access, zone_analysis, zone_pages, zone_release
from levere.transfer import wire
from levere.web.render import page, redirect
from levere.web.session import PREFIX, CsrfChecked, ZoneViewer

router = APIRouter(include_in_schema=False, prefix="/zone")
Text = Annotated[str, Form()]
DISK = "/disks/{name}"
RUN = DISK + "/deliveries/{delivery}"
SECURE = "/projects/{identifier}"
#: the QC page is the one HTML page with data from the zone: never cached, nothing it may load
QC_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}


def _disk_url(name: str) -> str:
    return f"{PREFIX}/zone/disks/{quote(name)}"


@router.get("", openapi_extra=acts(None))
def zone_home(request: Request, viewer: ZoneViewer, ctx: CtxDep) -> Response:
    """The shared disks and secure projects the viewer may see (the services filter)."""
    return page(request, "zone.html", zone=zone_pages.disk_list(ctx, viewer.user))


@router.get(DISK, openapi_extra=acts(Action.DISK_READ))
def show_disk(request: Request, name: str, viewer: ZoneViewer, ctx: CtxDep, message: str = "") -> Response:
    screen = zone_pages.disk_page(ctx, viewer.user, name)
    return page(request, "disk.html", screen=screen, message=message[:300])


@router.post(RUN + "/analysis", openapi_extra=acts(Action.DISK_WRITE), dependencies=[CsrfChecked])
def start_analysis(name: str, delivery: str, viewer: ZoneViewer, ctx: CtxDep) -> Response:
    job = zone_analysis.request_analysis(ctx, viewer.user, name, delivery)
    said = f"The analysis of {delivery} was started (job {job.id})."
    return redirect(f"{_disk_url(name)}?message={quote(said)}#delivery-{quote(delivery)}")


@router.get(RUN + "/qc", openapi_extra=acts(Action.ANALYSIS_READ))
def qc_page(
    name: str,
    delivery: str,
    viewer: ZoneViewer,
    ctx: CtxDep,
    file: Annotated[str, Query(max_length=4096)],
) -> HTMLResponse:
    """One FASTQ file's analysis page, as the analysis made it (self-contained, no scripts)."""
    found = zone_analysis.qc_page(ctx, viewer.user, name, delivery, file)
    return HTMLResponse(found.html, headers=QC_PAGE_HEADERS)


@router.get(RUN + "/release", openapi_extra=acts(Action.DISK_RELEASE))
def confirm_release(request: Request, name: str, delivery: str, viewer: ZoneViewer, ctx: CtxDep) -> Response:
    """What releasing the delivery will do; nothing changes until the form is sent."""
    preview = zone_pages.release_preview(ctx, viewer.user, name, delivery)
    return page(request, "release.html", preview=preview)


@router.post(RUN + "/release", openapi_extra=acts(Action.DISK_RELEASE), dependencies=[CsrfChecked])
def release(name: str, delivery: str, viewer: ZoneViewer, ctx: CtxDep) -> Response:
    job = zone_release.request_release(ctx, viewer.user, name, delivery)
    said = (
        f"The release of {delivery} was started (job {job.id}). Once it ends, the users' secure "
        "project reads the delivery and the facility has no access to it any more."
    )
    return redirect(f"{_disk_url(name)}?message={quote(said)}#delivery-{quote(delivery)}")


# --- the users' secure project --------------------------------------------------------------------


def _project_page(
    request: Request, ctx: CtxDep, viewer: ZoneViewer, identifier: str, status: int = 200, **extra: object
) -> Response:
    values: dict[str, object] = {"errors": {}, "form": {}, "message": ""} | extra
    screen = zone_pages.secure_project_page(ctx, viewer.user, identifier)
    return page(request, "secure_project.html", status, screen=screen, **values)


@router.get(SECURE, openapi_extra=acts(Action.SECURE_READ))
def show_secure(
    request: Request, identifier: str, viewer: ZoneViewer, ctx: CtxDep, message: str = ""
) -> Response:
    return _project_page(request, ctx, viewer, identifier, message=message[:300])


def _end_date(text: str) -> datetime:
    """A day (the end of it, UTC) or a full ISO time with its zone."""
    try:
        if len(text.strip()) == 10:
            return datetime.combine(datetime.fromisoformat(text.strip()).date(), time(23, 59), UTC)
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationFailed({"ends_at": "give the last day of access as YYYY-MM-DD"}) from None


@router.post(SECURE + "/members", openapi_extra=acts(Action.SECURE_MEMBER_MANAGE), dependencies=[CsrfChecked])
def invite(
    request: Request, identifier: str, viewer: ZoneViewer, ctx: CtxDep, email: Text = "", ends_at: Text = ""
) -> Response:
    """Lets a helpdesk operator or facility staff member in until the end of the given day."""
    try:
        secure.invite_member(ctx, viewer.user, identifier, email, _end_date(ends_at))
    except ValidationFailed as exc:
        form = {"email": email, "ends_at": ends_at}
        return _project_page(request, ctx, viewer, identifier, 422, errors=exc.fields, form=form)
    return redirect(f"{PREFIX}/zone/projects/{quote(identifier)}#members")


@router.post(
    SECURE + "/members/{email}/remove",
    openapi_extra=acts(Action.SECURE_MEMBER_MANAGE),
    dependencies=[CsrfChecked],
)
def remove(identifier: str, email: str, viewer: ZoneViewer, ctx: CtxDep) -> Response:
    secure.remove_member(ctx, viewer.user, identifier, email)
    return redirect(f"{PREFIX}/zone/projects/{quote(identifier)}#members")


@router.get(SECURE + "/download", openapi_extra=acts(Action.SECURE_DATA_READ))
def download(
    request: Request,
    identifier: str,
    viewer: ZoneViewer,
    ctx: CtxDep,
    file: Annotated[str, Query(min_length=3, max_length=4096)],
    key: Annotated[str, Query(max_length=200)] = "",
    pubkey: Annotated[str, Query(max_length=1000)] = "",
) -> Response:
    """A released file (``DELIVERY/PATH``) encrypted to a Crypt4GH public key: a pasted one, else
    the chosen (or first) key the viewer's sign-in identity released. The server never sends the
    plaintext; the browser gets a ``.c4gh`` file that ``crypt4gh decrypt`` opens."""
    delivery, _, path = file.partition("/")
    recipient = pubkey.strip()
    if not recipient:
        keys = identity_keys.default_recipient_keys(ctx, viewer.user)
        chosen = [k for k in keys if not key or k.fingerprint == key]
        if not chosen:
            return _project_page(
                request, ctx, viewer, identifier, 422,
                errors={"pubkey": "paste your Crypt4GH public key (the .pub file crypt4gh-keygen made): "
                        "your sign-in gave levere none to encrypt to"},
                form={"file": file},
            )  # fmt: skip
        recipient = chosen[0].pem
    try:
        found = zone_access.secure_download(ctx, viewer.user, identifier, delivery, path, recipient)
    except InvalidPublicKey as exc:
        return _project_page(request, ctx, viewer, identifier, 422, errors={"pubkey": exc.message},
                             form={"file": file, "pubkey": pubkey})  # fmt: skip
    filename = found.path.rsplit("/", 1)[-1] + ".c4gh"
    headers = {
        "Content-Length": str(found.size),
        wire.PLAINTEXT_CHECKSUM_HEADER: wire.format_checksums(found.plaintext_md5, found.plaintext_sha256),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(found.read(), headers=headers, media_type="application/octet-stream")
