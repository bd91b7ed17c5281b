"""No token expires mid-delivery, for every kind of transfer: a real ``levere serve`` and the real
CLI in a process of its own. The CLI is frozen (SIGSTOP) as soon as it holds its transfer grant,
its token's lifetime ends while it is frozen, and then it goes on: every request of the transfer
after that moment is one the expired token can only make with the grant. The transfer must still
finish, and the grant must have carried requests and be ended by the end of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from levere.config import Settings
from levere.context import Context
from levere.db.models import ApiToken, AuditEvent, Delivery, TransferGrant, User, utcnow
from levere.services import accounts
from tests.cli_live import make_run, tree
from tests.deliveries_support import Server, crew
from tests.sync_support import deliver_as, random_files, setup_project

#: seconds the token lives unless its transfer makes it end sooner: enough for the CLI to start and
#: ask for its grant on a busy machine
LIFETIME = 60.0


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    srv = Server(settings, tmp_path)
    srv.start(worker=True)
    yield srv
    srv.stop()


def short_token(ctx: Context, user: User) -> tuple[str, str]:
    """A token of ``user`` that expires within :data:`LIFETIME` seconds, and its id."""
    with ctx.tx() as session:
        issued = accounts.issue_token(ctx, session, session.merge(user), "short")
        issued.record.expires_at = utcnow() + timedelta(seconds=LIFETIME)
        return issued.token, issued.record.id


def run_frozen_until_expired(
    ctx: Context, service: Server, tmp_path: Path, token: str, token_id: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], TransferGrant]:
    """Run ``levere ARGS``; freeze it once its grant exists, end the token's lifetime, go on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")} | {
        "LEVERE_URL": service.url,
        "LEVERE_TOKEN": token,
        "LEVERE_CLI_CONFIG": str(tmp_path / "cli.toml"),
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "levere.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + LIFETIME
    grant: TransferGrant | None = None
    while grant is None and time.monotonic() < deadline and proc.poll() is None:
        with ctx.tx() as session:
            grant = session.execute(select(TransferGrant).where(TransferGrant.token_id == token_id)).scalar()
        if grant is None:
            time.sleep(0.005)
    if grant is not None:
        os.kill(proc.pid, signal.SIGSTOP)
        with ctx.tx() as session:  # its lifetime ends now, mid-transfer
            record = session.get(ApiToken, token_id)
            assert record is not None
            record.expires_at = utcnow()
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=180)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert grant is not None, f"the CLI asked for no grant in time: {result}"
    with ctx.tx() as session:
        final = session.get(TransferGrant, grant.id)
        assert final is not None
        session.expunge(final)
    return result, final


def _check_grant(ctx: Context, grant: TransferGrant, token_id: str) -> None:
    """The grant carried requests after its token expired, and the transfer's end ended it."""
    with ctx.tx() as session:
        expired_at = session.execute(select(ApiToken.expires_at).where(ApiToken.id == token_id)).scalar_one()
        actions = list(
            session.execute(
                select(AuditEvent.action).where(AuditEvent.object_id == grant.id).order_by(AuditEvent.seq)
            ).scalars()
        )
    assert grant.used_at is not None and grant.used_at > expired_at
    assert grant.ended_at is not None and grant.ended_at > expired_at
    assert actions == ["transfer_grant.issued", "transfer_grant.ended"]


def test_a_delivery_of_many_small_files_outlives_its_token(
    ctx: Context, service: Server, tmp_path: Path
) -> None:
    c = crew(ctx)
    run = make_run(tmp_path / "RUN42", big={}, tiny=1200)
    token, token_id = short_token(ctx, c.staff)
    result, grant = run_frozen_until_expired(
        ctx, service, tmp_path, token, token_id, "deliver", c.project, str(run)
    )
    assert result.returncode == 0, result.stderr
    assert grant.kind == "delivery" and grant.target == "RUN42"
    with ctx.tx() as session:
        delivery = session.execute(select(Delivery).where(Delivery.name == "RUN42")).scalar_one()
        expired_at = session.execute(select(ApiToken.expires_at).where(ApiToken.id == token_id)).scalar_one()
        assert delivery.state == "sealed" and delivery.sealed_at is not None
        assert delivery.sealed_at > expired_at  # the seal itself came after the token expired
    _check_grant(ctx, grant, token_id)


def test_a_download_of_a_whole_delivery_outlives_its_token(
    ctx: Context, service: Server, tmp_path: Path
) -> None:
    setup = setup_project(ctx)
    files = random_files(6, 512 * 1024)
    deliver_as(ctx, setup.world.staff, setup.project, "RUN42", files)
    token, token_id = short_token(ctx, setup.world.pi)
    target = tmp_path / "got"
    result, grant = run_frozen_until_expired(
        ctx,
        service,
        tmp_path,
        token,
        token_id,
        "download",
        setup.project,
        "RUN42",
        "--to",
        str(target),
        "--jobs",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert grant.kind == "download" and grant.target == "RUN42"
    assert tree(target / "RUN42") == files
    _check_grant(ctx, grant, token_id)


def test_waiting_on_a_sync_job_outlives_its_token(ctx: Context, service: Server, tmp_path: Path) -> None:
    setup = setup_project(ctx)
    deliver_as(ctx, setup.world.staff, setup.project, "RUN42", random_files(40, 256 * 1024))
    token, token_id = short_token(ctx, setup.world.helpdesk)
    result, grant = run_frozen_until_expired(
        ctx, service, tmp_path, token, token_id, "sync", setup.project, "RUN42"
    )
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stdout
    assert grant.kind == "job"
    _check_grant(ctx, grant, token_id)
