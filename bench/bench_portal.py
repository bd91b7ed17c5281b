"""The portal's heaviest pages: a delivery of 20,000 files, and the helpdesk's dashboard of 1,000 projects.

Each page is asked for through the whole application (routing, session, service, template) as a
browser would, in-process, so the time is the server's; the goal is absolute: the 95th percentile
under 300 ms. A search of the delivery (the files whose path contains a word) and its last page are
timed too. The rows are made by the services where they are few (people, the project, the delivery)
and inserted in bulk where they are many (files, their copies, the other projects and their quotas).

On SQLite always; on PostgreSQL too when LEVERE_TEST_DATABASE_URL names a server.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from levere.api.app import create_app
from levere.config import Settings, SmtpSettings
from levere.context import Context
from levere.db.migrate import upgrade
from levere.db.models import Project, Quota, files_table, new_ids, replicas_table, utcnow
from levere.domain.applications import ApplicationForm
from levere.domain.roles import UserKind
from levere.services import accounts, applications, deliveries
from levere.web.session import SESSION_COOKIE

GOAL_MS = 300.0
FILES = 20_000
PROJECTS = 1_000
ROUNDS = 40


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-portal-") as tmp:
            url = f"sqlite:///{tmp}/levere.db"
            upgrade(url)
            yield url
        return
    server = os.environ["LEVERE_TEST_DATABASE_URL"]
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    name = f"levere_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        upgrade(f"{server}/{name}")
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def populate(ctx: Context) -> tuple[str, str]:
    """A project with a delivery of FILES files, PROJECTS more projects; the helpdesk's session."""
    with ctx.tx() as session:
        desk = accounts.create_user(session, None, "desk@levere.bench", kind=UserKind.HELPDESK)
        seq = accounts.create_facility(session, desk, "seq", "Seq", "c@seq.bench")
        staff = accounts.create_user(session, desk, "staff@seq.bench", kind=UserKind.FACILITY, facility=seq)
        pi = accounts.create_user(session, desk, "pi@uib.bench")
    form = ApplicationForm(
        title="Big run", pi_email=pi.email, data_ownership="UiB", funding_source="RCN", description="x",
        facility="seq", quota_area_bytes=2**44, quota_longterm_bytes=2**45,
    )  # fmt: skip
    application = applications.create(ctx, staff, form)
    applications.submit(ctx, pi, str(application.number))
    _, project = applications.approve(ctx, desk, str(application.number))
    view = deliveries.open_delivery(ctx, staff, project.identifier, "RUN1")
    now = utcnow()
    file_ids = new_ids(FILES)
    with ctx.tx() as session:
        session.execute(sa.insert(files_table), [
            {"id": file_ids[i], "delivery_id": view.id, "project_id": project.id,
             "path": f"lane{i % 4 + 1}/sample{i:05d}_R{i % 2 + 1}.fastq.gz", "size": 10**9 + i,
             "md5": f"{i:032x}", "sha256": f"{i:064x}", "created_at": now}
            for i in range(FILES)
        ])  # fmt: skip
        session.execute(sa.insert(replicas_table), [
            {"id": rid, "file_id": fid, "tier": tier, "backend_id": "bench", "key": fid, "state": "present",
             "reason": "", "attempts": 0}
            for tier in ("area", "longterm") for fid, rid in zip(file_ids, new_ids(FILES), strict=True)
        ])  # fmt: skip
        project_ids = new_ids(PROJECTS)
        session.execute(sa.insert(Project.__table__), [
            {"id": pid, "identifier": f"BENCH-{i:04d}", "title": f"Project {i}", "sensitive": False,
             "secure_project_id": "", "sync_mode": "auto", "created_at": now}
            for i, pid in enumerate(project_ids)
        ])  # fmt: skip
        session.execute(sa.insert(Quota.__table__), [
            {"project_id": pid, "tier": tier, "limit_bytes": 2**40, "used_bytes": i * 2**30, "reserved_bytes": 0}
            for i, pid in enumerate(project_ids) for tier in ("area", "longterm")
        ])  # fmt: skip
        token = accounts.issue_token(ctx, session, session.merge(desk), "portal session").token
    return project.identifier, token


def timed(client: TestClient, url: str) -> list[float]:
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, url
    return times


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1]


def run(kind: str) -> bool:
    ok = True
    with database(kind) as url, tempfile.TemporaryDirectory(prefix="bench-portal-data-") as data:
        settings = Settings(
            mode="development", data_dir=Path(data), database_url=url, queue_url="memory",
            smtp=SmtpSettings(enabled=False),
        )  # fmt: skip
        ctx = Context.build(settings)
        try:
            identifier, token = populate(ctx)
            if kind == "postgresql":
                # the statistics autovacuum would gather soon after a bulk insert, so that the first
                # page is not timed against a plan made for empty tables
                with ctx.engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE")
            with TestClient(create_app(ctx, start_worker=False)) as client:
                client.cookies.set(SESSION_COOKIE, token, path="/portal")
                base = f"/portal/projects/{identifier}/deliveries/RUN1"
                pages = {
                    f"delivery of {FILES:,} files, first page": base,
                    "the same, last page": f"{base}?page={FILES // 100}",
                    "the same, searched (sample1999)": f"{base}?q=sample1999",
                    f"dashboard of {PROJECTS + 1:,} projects, first page": "/portal/dashboard",
                    "the same, searched (0999)": "/portal/dashboard?q=0999",
                }
                for what, page_url in pages.items():
                    times = timed(client, page_url)
                    worst = p95(times)
                    verdict = "ok" if worst < GOAL_MS else f"OVER the {GOAL_MS:.0f} ms goal"
                    ok = ok and worst < GOAL_MS
                    print(
                        f"  {kind:<10} {what:<42} median {statistics.median(times):6.1f} ms  "
                        f"p95 {worst:6.1f} ms  {verdict}"
                    )
        finally:
            ctx.close()
    return ok


def main() -> int:
    kinds = ["sqlite"] + (["postgresql"] if os.environ.get("LEVERE_TEST_DATABASE_URL") else [])
    results = [run(kind) for kind in kinds]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
