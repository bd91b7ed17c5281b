"""Uploads from the delivery page: tus 1.0.0 at ``/portal/tus/`` for a stock browser tus client.

The same protocol and the same use cases as the API's ``/api/tus/`` (:mod:`levere.services.uploads`),
signed in by the portal's session cookie instead of a bearer token. The cookie is sent by the
browser on its own, so every request must also carry the page's CSRF token in a header
(``Levere-Csrf``), which another site's page cannot read or send.

The browser client is tus-js-client from the npm registry, copied by ``make portal-assets`` into
the package's git-ignored ``assets`` folder and served from there; without it the delivery page
says how to get it and everything else on the page works as before.
"""

from __future__ import annotations

import hmac
from importlib.resources import files

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from levere.domain.roles import Action
from levere.http_deps import CtxDep, acts
from levere.http_tus import TusRoute, append_body, has_body, upload_headers
from levere.services import upload_endings, upload_grants, uploads
from levere.transfer import tus
from levere.web.session import PREFIX, FormExpired, PortalUser, csrf_for_session

CSRF_HEADER = "Levere-Csrf"
#: the browser libraries ``make portal-assets`` copies in, by name
ASSETS = {"tus.min.js": "text/javascript; charset=utf-8"}


def has_asset(name: str) -> bool:
    return files("levere.web").joinpath("assets", name).is_file()


def check_csrf_header(request: Request, viewer: PortalUser) -> None:
    """Refuse a request that does not carry the page's CSRF token in its header."""
    sent = request.headers.get(CSRF_HEADER, "")
    expected = csrf_for_session(request.app.state.ctx, viewer.token)
    if not hmac.compare_digest(sent, expected):
        raise FormExpired(
            "this upload did not come from levere's delivery page; reload the page and try again"
        )


CsrfHeader = Depends(check_csrf_header)
router = APIRouter(include_in_schema=False, prefix="/tus", route_class=TusRoute)
assets = APIRouter(include_in_schema=False)


@router.post("/", openapi_extra=acts(Action.DELIVERY_UPLOAD), dependencies=[CsrfHeader])
async def create(request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    """Create an upload (the metadata names the project, delivery and path, as for the API)."""
    headers = dict(request.headers)
    view = await run_in_threadpool(uploads.create, ctx, viewer.user, headers)
    await run_in_threadpool(upload_grants.grant, ctx, view.id, viewer.token)
    answer = {"Location": f"{PREFIX}/tus/{view.id}", **upload_headers(view)}
    if has_body(request) and view.offset < view.length:
        view = await append_body(ctx, viewer.user, view.id, request, {**headers, "upload-offset": "0"})
        answer |= upload_headers(view)
    return Response(status_code=201, headers=answer)


@router.head("/{upload_id}", openapi_extra=acts(Action.DELIVERY_UPLOAD), dependencies=[CsrfHeader])
def head(upload_id: str, request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    """Where to resume, after a page reload too (the client keeps the upload's address)."""
    view = uploads.status(ctx, viewer.user, upload_id, dict(request.headers))
    return Response(status_code=200, headers=upload_headers(view))


@router.patch("/{upload_id}", openapi_extra=acts(Action.DELIVERY_UPLOAD), dependencies=[CsrfHeader])
async def patch(upload_id: str, request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    view = await append_body(ctx, viewer.user, upload_id, request, dict(request.headers))
    return Response(status_code=204, headers=upload_headers(view))


@router.delete("/{upload_id}", openapi_extra=acts(Action.DELIVERY_UPLOAD), dependencies=[CsrfHeader])
def terminate(upload_id: str, request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    upload_endings.terminate(ctx, viewer.user, upload_id, dict(request.headers))
    return Response(status_code=204, headers={"Tus-Resumable": tus.VERSION})


@assets.get("/assets/{name}", openapi_extra=acts(None))
def asset(name: str) -> Response:
    """A browser library ``make portal-assets`` put in the package (open to anyone, like a stylesheet)."""
    if name not in ASSETS or not has_asset(name):
        return Response(
            "not here: run `make portal-assets`", status_code=404, media_type="text/plain; charset=utf-8"
        )
    body = files("levere.web").joinpath("assets", name).read_bytes()
    return Response(
        body,
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
