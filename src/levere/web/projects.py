"""Project pages: members (managed by the project's admins), deliveries with their files, downloads,
and the helpdesk's dashboard of every project."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from levere.domain.errors import ValidationFailed
from levere.domain.roles import Action, ProjectRole, UserKind
from levere.http_deps import CtxDep, acts
from levere.services import (
    deliveries,
    downloads,
    federation,
    invitations,
    overview,
    portal_views,
    project_history,
    projects,
    sealing,
)
from levere.web.charts import use_chart
from levere.web.render import page, redirect
from levere.web.session import PREFIX, CsrfChecked, PortalUser
from levere.web.uploads import has_asset

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form()]
PROJECT = "/projects/{identifier}"
DELIVERY = PROJECT + "/deliveries/{name}"
#: files on one page of a delivery
PER_PAGE = 100


def _project_page(request: Request, ctx: CtxDep, viewer: PortalUser, identifier: str, status: int = 200,
                  trail: int = 1, **extra: object) -> Response:  # fmt: skip
    view = portal_views.project_page(
        ctx, viewer.user, identifier, second_factor=federation.has_second_factor(ctx, viewer.token)
    )
    past = project_history.history(ctx, viewer.user, identifier, trail_page=trail)
    values: dict[str, object] = {"errors": {}, "message": "", "roles": [r.value for r in ProjectRole]} | extra
    charts = tuple(use_chart(s) for s in past.series)
    return page(request, "project.html", status, project=view, history=past, charts=charts, **values)


@router.get(PROJECT, openapi_extra=acts(Action.PROJECT_READ))
def show_project(
    request: Request,
    identifier: str,
    viewer: PortalUser,
    ctx: CtxDep,
    trail: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """``trail`` is the page of the project's audit trail shown (newest first)."""
    return _project_page(request, ctx, viewer, identifier, trail=trail)


def _role(text: str) -> ProjectRole:
    try:
        return ProjectRole(text)
    except ValueError:
        raise ValidationFailed({"role": "choose admin, member or viewer"}) from None


@router.post(PROJECT + "/members", openapi_extra=acts(Action.MEMBER_MANAGE), dependencies=[CsrfChecked])
def add_member(
    request: Request,
    identifier: str,
    viewer: PortalUser,
    ctx: CtxDep,
    email: Text = "",
    role: Text = "member",
) -> Response:
    """Someone without an account is invited by e-mail."""
    try:
        with invitations.handover():
            projects.add_member(ctx, viewer.user, identifier, email, _role(role))
    except ValidationFailed as exc:
        return _project_page(request, ctx, viewer, identifier, 422, errors=exc.fields, new_email=email)
    return redirect(f"{PREFIX}/projects/{quote(identifier)}#members")


@router.post(
    PROJECT + "/members/{email}/role", openapi_extra=acts(Action.MEMBER_MANAGE), dependencies=[CsrfChecked]
)
def change_role(identifier: str, email: str, viewer: PortalUser, ctx: CtxDep, role: Text = "") -> Response:
    projects.set_role(ctx, viewer.user, identifier, email, _role(role))
    return redirect(f"{PREFIX}/projects/{quote(identifier)}#members")


@router.post(
    PROJECT + "/members/{email}/remove", openapi_extra=acts(Action.MEMBER_MANAGE), dependencies=[CsrfChecked]
)
def remove_member(identifier: str, email: str, viewer: PortalUser, ctx: CtxDep) -> Response:
    projects.remove_member(ctx, viewer.user, identifier, email)
    return redirect(f"{PREFIX}/projects/{quote(identifier)}#members")


@router.get(DELIVERY, openapi_extra=acts(Action.DELIVERY_READ))
def show_delivery(
    request: Request,
    identifier: str,
    name: str,
    viewer: PortalUser,
    ctx: CtxDep,
    q: str = "",
    page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
) -> Response:
    """One page of the delivery's files; ``q`` keeps those whose path contains it."""
    offset = min((page_no - 1) * PER_PAGE, deliveries.MAX_OFFSET)
    view = deliveries.file_page(ctx, viewer.user, identifier, name, search=q, offset=offset, limit=PER_PAGE)
    pages = max(1, -(-view.matching // PER_PAGE))
    tiers = sorted({tier for f in view.files for tier in f.tiers})  # a column per tier, area first
    return page(
        request, "delivery.html", delivery=view, page_no=page_no, pages=pages, tiers=tiers,
        upload_ready=has_asset("tus.min.js"),
    )  # fmt: skip


@router.get(DELIVERY + "/uploads", openapi_extra=acts(Action.DELIVERY_READ))
def uploads(identifier: str, name: str, viewer: PortalUser, ctx: CtxDep) -> JSONResponse:
    """The delivery's uploads in flight and how far each has come, for the page's live progress."""
    found = deliveries.uploads_in_flight(ctx, viewer.user, identifier, name)
    return JSONResponse(
        {"uploads": [{"path": u.path, "offset": u.offset, "length": u.length} for u in found]},
        headers={"Cache-Control": "no-store"},
    )


@router.get(DELIVERY + "/manifest.md5", openapi_extra=acts(Action.DELIVERY_READ))
def manifest(identifier: str, name: str, viewer: PortalUser, ctx: CtxDep) -> Response:
    """``md5sum -c manifest.md5`` inside the delivery's folder checks a download."""
    delivery = deliveries.manifest(ctx, viewer.user, identifier, name)
    text = "".join(sealing.manifest_lines((f.path, f.md5) for f in delivery.files or ()))
    return Response(
        text,
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}.md5"},
    )


@router.get(DELIVERY + "/files/{path:path}", openapi_extra=acts(Action.DATA_READ))
def download(identifier: str, name: str, path: str, viewer: PortalUser, ctx: CtxDep) -> Response:
    """The whole file; the service checks its checksum as it streams and breaks off on damage."""
    found = downloads.open_file(ctx, viewer.user, identifier, name, path)
    headers = {
        "Content-Length": str(found.size),
        "Levere-Checksum": f"md5={found.md5},sha256={found.sha256}",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(found.path.rsplit('/', 1)[-1])}",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(found.read(), headers=headers, media_type="application/octet-stream")


@router.get("/dashboard", openapi_extra=acts(Action.PROJECT_LIST_ALL))
def dashboard(
    request: Request,
    viewer: PortalUser,
    ctx: CtxDep,
    q: str = "",
    page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
) -> Response:
    """Every project's quota use, a page at a time (``q`` keeps the projects whose id or title has
    it), the syncs that need attention and the shared disks still open."""
    view = overview.dashboard(
        ctx,
        viewer.user,
        search=q,
        page=page_no,
        per_page=PER_PAGE,
        second_factor=federation.has_second_factor(ctx, viewer.token),
    )
    return page(request, "dashboard.html", dashboard=view)


def _people_page(
    request: Request, viewer: PortalUser, ctx: CtxDep, status: int = 200, **extra: object
) -> Response:
    values: dict[str, object] = {"errors": {}, "form": {}, "added": ""} | extra
    return page(request, "people.html", status, people=portal_views.people(ctx, viewer.user), **values)


@router.get("/people", openapi_extra=acts(Action.USER_LIST))
def people(request: Request, viewer: PortalUser, ctx: CtxDep, added: str = "") -> Response:
    return _people_page(request, viewer, ctx, added=added[:320])


@router.post("/people", openapi_extra=acts(Action.USER_CREATE), dependencies=[CsrfChecked])
def add_person(
    request: Request, viewer: PortalUser, ctx: CtxDep,
    email: Text = "", name: Text = "", kind: Text = "user", facility: Text = "",
) -> Response:  # fmt: skip
    """An account whose owner is e-mailed a link to set a password."""
    form = {"email": email, "name": name, "kind": kind, "facility": facility}
    try:
        try:
            user_kind = UserKind(kind)
        except ValueError:
            raise ValidationFailed({"kind": "choose user, facility or helpdesk"}) from None
        with invitations.handover():
            made = invitations.create_account(
                ctx,
                viewer.user,
                email,
                kind=user_kind,
                name=name.strip(),
                facility_name=facility.strip() or None,
            )
    except ValidationFailed as exc:
        return _people_page(request, viewer, ctx, 422, errors=exc.fields, form=form)
    return redirect(f"{PREFIX}/people?added={quote(made.email)}")
