"""Server-side commands: ``levere init``, ``levere serve``, ``levere worker``.

They import the service (settings, database, storage) only when run, so that the client commands
start fast.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Annotated

import typer

from levere.cli.output import done, err_console
from levere.cli.process import tune_gc
from levere.domain.errors import ValidationFailed
from levere.domain.roles import UserKind

if TYPE_CHECKING:
    from levere.context import Context


def _password_from_env() -> str:
    password = os.environ.get("LEVERE_PASSWORD", "")
    if not password:
        raise ValidationFailed({"LEVERE_PASSWORD": "set it to the first operator's password"})
    return password


def init(
    email: Annotated[str, typer.Option(help="E-mail of the first helpdesk operator.")],
    name: Annotated[str, typer.Option(help="Their name.")] = "",
) -> None:
    """Create the database (run migrations) and the first helpdesk operator.

    The password is read from the LEVERE_PASSWORD environment variable, so this can be scripted.
    Running it again on an initialised database only applies new migrations.
    """
    from sqlalchemy import select

    from levere.config import get_settings
    from levere.context import Context
    from levere.db.migrate import upgrade
    from levere.db.models import User
    from levere.services import accounts

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    ctx = Context.build(settings)
    try:
        with ctx.tx() as session:
            if session.execute(select(User).where(User.email == email.strip().lower())).scalar():
                done(f"database is up to date; {email} already exists")
                return
            accounts.create_user(
                session, None, email, kind=UserKind.HELPDESK, name=name, password=_password_from_env()
            )
        done(f"database ready; helpdesk operator {email} created (enrol two-factor sign-in at first login)")
    finally:
        ctx.close()


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run the job worker in-process.")
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the levere service (API) with its embedded job worker.

    SIGTERM or Ctrl-C stops it gracefully within 10 seconds (exit code 0).
    """
    from levere import dataplane
    from levere.api.app import create_app
    from levere.cli import serving
    from levere.config import get_settings
    from levere.context import Context
    from levere.db.migrate import upgrade
    from levere.jobs.queue import build_queue

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    sock = serving.listen(host, port)  # first: a busy port fails before anything starts
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context.build(settings)
    _check_write_once(ctx)  # makes a missing long-term bucket, so before the tiers are checked
    ctx.check_tiers()  # a tier it cannot use is one line now, not a first failed sync
    upgrade(settings.resolved_database_url)
    queue = build_queue(ctx)
    if settings.smtp.enabled:
        queue.enqueue("catch_up_emails")  # mail recorded while mail was off (run by whichever worker)
    embedded = worker and settings.embedded_worker
    app = create_app(ctx, start_worker=embedded)
    dataplane.warm_up(ctx)
    tune_gc()  # again: the service's modules are loaded now
    err_console.print(
        f"levere serving on http://{host}:{port} (data in {settings.data_dir})", highlight=False
    )
    try:
        serving.serve_http(app, sock, queue if embedded else None, log_level)
    finally:
        serving.finish(ctx, queue)


def worker(
    threads: Annotated[int, typer.Option(help="Worker threads in this process.")] = 2,
) -> None:
    """Run a job worker in the foreground (for running work on separate machines).

    SIGTERM or Ctrl-C stops it within 10 seconds (exit code 0); tasks still running then are put
    back on the queue for the next worker.
    """
    from levere.cli import serving
    from levere.config import get_settings
    from levere.context import Context
    from levere.jobs.queue import build_queue

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    ctx = Context.build(settings)
    _check_write_once(ctx)
    ctx.check_tiers()
    queue = build_queue(ctx)
    if settings.smtp.enabled:
        queue.enqueue("catch_up_emails")  # mail recorded while mail was off
    tune_gc()  # again: the service's modules are loaded now
    err_console.print(f"levere worker with {threads} thread(s), queue {settings.queue_url}", highlight=False)
    try:
        serving.run_worker(queue, threads)
        err_console.print("levere worker stopped", highlight=False)
    finally:
        serving.finish(ctx, queue)


def _check_write_once(ctx: Context) -> None:
    """Refuse to start on a long-term bucket that is not write-once (``write_once = false``
    starts, with a warning)."""
    from levere.services import write_once

    for warning in write_once.prepare(ctx):
        logging.getLogger("levere").warning("%s", warning)
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(serve)
    app.command()(worker)
