"""The portal's home page, its stylesheet, and ``/`` leading to it."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from levere.http_deps import CtxDep, acts
from levere.services import portal_views
from levere.web.render import page
from levere.web.session import PREFIX, PortalUser

router = APIRouter(include_in_schema=False)
root = APIRouter(include_in_schema=False)


@root.get("/", openapi_extra=acts(None))
def to_portal() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=303)


@router.get("/", openapi_extra=acts(None))
def home(request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    """Lists only what the viewer may see (the service filters through the permission table)."""
    return page(request, "home.html", home=portal_views.home(ctx, viewer.user))


STATIC = {
    "portal.css": "text/css; charset=utf-8",
    "uploads.js": "text/javascript; charset=utf-8",
    "upload.js": "text/javascript; charset=utf-8",
    "sizes.js": "text/javascript; charset=utf-8",
}


@router.get("/static/{name}", openapi_extra=acts(None))
def static(name: str) -> Response:
    """The portal's own stylesheet and scripts, open to anyone like any stylesheet."""
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    body = files("levere.web").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type=STATIC[name],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
