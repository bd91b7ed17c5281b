"""The web portal: server-rendered pages for every role, served by ``levere serve`` under ``/portal``.

Routes only parse a form, call a service and render a template; what a user may do is decided by the
services through the permission table, as for the API. Pages are plain HTML forms with a small
stylesheet of the portal's own; the delivery page adds two small scripts of its own (live progress,
uploads) and tus-js-client from the package's ``assets`` (``make portal-assets``), and works
without them. Nothing is fetched from elsewhere.
"""

from __future__ import annotations

from fastapi import FastAPI

from levere.web.session import PREFIX


def install(app: FastAPI) -> None:
    """Add the portal's routes to the application (``/`` leads to the portal's home page)."""
    from levere.web import account, applications, federated, home, projects, uploads, zone

    for module in (home, account, federated, applications, projects, uploads, zone):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(uploads.assets, prefix=PREFIX)
    app.include_router(home.root)
    app.include_router(federated.root)


__all__ = ["PREFIX", "install"]
