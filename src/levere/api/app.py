"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from levere import __version__
from levere.api import openapi
from levere.api.limits import JsonBodyCap, NoNulInAddress, trust_proxies
from levere.api.methods import framework_error
from levere.api.routes import (
    accounts,
    admin,
    applications,
    deliveries,
    federation,
    grants,
    invite_page,
    projects,
    secure,
    sync,
    zone,
)
from levere.context import Context
from levere.domain.errors import LevereError
from levere.web import install as install_portal
from levere.web.render import error_page, is_portal
from levere.web.session import SecondFactorNeeded, SignInNeeded, StepUpNeeded

log = logging.getLogger(__name__)


def create_app(ctx: Context, *, start_worker: bool | None = None) -> FastAPI:
    """Build the API around a service context. ``start_worker`` runs the job consumer in-process."""
    run_worker = ctx.settings.embedded_worker if start_worker is None else start_worker

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_worker and ctx.jobs is not None:
            ctx.jobs.start()
        try:
            yield
        finally:
            if run_worker and ctx.jobs is not None:
                ctx.jobs.stop()

    app = FastAPI(
        title="levere",
        version=__version__,
        description="Deliver sequencing data from a core facility into research projects' storage.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        swagger_ui_oauth2_redirect_url="/api/docs/oauth2-redirect",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx

    @app.exception_handler(LevereError)
    async def _levere_error(request: Request, exc: LevereError) -> Response:
        if is_portal(request):
            return error_page(request, exc)
        return JSONResponse(
            status_code=exc.http_status,
            content={"error": exc.code, "message": exc.message, "details": exc.details},
            headers={"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None,
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return error_page(request, exc) if is_portal(request) else await framework_error(request, exc)

    # raised only by the portal's pages: to the sign-in page, or to enrolling a second factor
    app.add_exception_handler(SignInNeeded, error_page)
    app.add_exception_handler(SecondFactorNeeded, error_page)
    app.add_exception_handler(StepUpNeeded, error_page)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if is_portal(request):
            return error_page(request, exc)
        fields: dict[str, str] = {}
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
            fields[where or "body"] = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        listed = "; ".join(f"{k}: {v}" for k, v in fields.items())
        return JSONResponse(
            status_code=422,
            content={
                "error": "validation_failed",
                "message": f"invalid input: {listed}",
                "details": {"fields": fields},
            },
        )

    @app.get(
        "/api/health",
        tags=["service"],
        summary="Whether the service is up, and its version",
        operation_id="get_health",
        openapi_extra={"x-levere-action": None},
    )
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    for module in (
        accounts,
        federation,
        grants,
        admin,
        applications,
        projects,
        deliveries,
        sync,
        secure,
        zone,
    ):
        app.include_router(module.router, prefix="/api")
    app.include_router(invite_page.router)  # where invitation links point, outside the API
    install_portal(app)  # the web portal, under /portal
    settings = ctx.settings
    app.add_middleware(
        JsonBodyCap,
        signed_in=settings.json_body_limit_bytes,
        anonymous=settings.json_body_limit_anonymous_bytes,
    )
    app.add_middleware(NoNulInAddress)
    trust_proxies(app, settings.trusted_proxies)
    openapi.install(app)
    return app
