"""The helpdesk's dashboard in the portal: syncs that failed or stalled, deliveries with failed
copies, the shared disks still open (for a sign-in with a second factor), and projects a page at a
time from the dashboard's service."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from levere.context import Context
from levere.db.models import JobRun, Replica, User, utcnow
from levere.domain.roles import UserKind
from levere.services import accounts, overview, projects, secure, secure_disks
from tests.helpers import make_user, provisioned_project
from tests.sync_support import deliver, random_files, setup_project


def _session_for(ctx: Context, client: TestClient, user: User, second_factor: bool) -> None:
    with ctx.tx() as session:
        issued = accounts.issue_token(ctx, session, session.merge(user), "portal session")
        issued.record.second_factor = second_factor
    client.cookies.set("levere_session", issued.token, path="/portal")


def _table(page: str, table_id: str) -> list[list[str]]:
    """The rows of the table ``table_id``, each a list of its cells' text."""
    found = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert found, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows
    ]


def test_dashboard_shows_failed_and_stalled_syncs_and_open_disks(ctx: Context, client: TestClient) -> None:
    s = setup_project(ctx, sync_mode="auto")
    deliver(ctx, s, "RUN1", random_files(3, 1000))
    long_ago = utcnow() - timedelta(days=1)
    with ctx.tx() as session:
        project = projects.get_project(session, s.project)
        session.execute(
            update(Replica)
            .where(Replica.tier == "longterm", Replica.key.like(f"{s.project}/RUN1/%"))
            .values(state="failed", reason="disk full")
        )
        session.add(JobRun(kind="sync", project_id=project.id, state="failed", error="disk full",
                           finished_at=long_ago))  # fmt: skip
        session.add(JobRun(kind="restore", project_id=project.id, state="running", created_at=long_ago,
                           started_at=long_ago, updated_at=long_ago))  # fmt: skip
    provisioned_project(ctx, s.world, sensitive=True, secure_project_id="p1234")
    secure.register(ctx, s.world.helpdesk, "p11", facility=s.world.facility.name)
    ends = utcnow() + timedelta(days=9)
    disk = secure_disks.create(
        ctx, s.world.helpdesk, facility_project="p11", users_project="p1234", ends_at=ends
    )
    desk = make_user(ctx, "desk@levere.test", UserKind.HELPDESK, password=None)

    _session_for(ctx, client, desk, second_factor=True)
    page = client.get("/portal/dashboard").text
    assert _table(page, "sync-problems") == [[f"{s.project}/RUN1", "long-term storage", "3", "0"]]
    (failed,) = _table(page, "failed-jobs")
    assert failed[0].startswith("sync") and failed[1] == s.project and failed[4] == "disk full"
    assert [row[0].split()[0] for row in _table(page, "stalled-jobs")] == ["restore"]
    assert _table(page, "open-disks") == [
        [disk.name, "p11", "p1234", "0 B of 1.0 TiB", ends.strftime("%Y-%m-%d %H:%M UTC")]
    ]

    # without a second factor the zone's disks are not listed, and the page says how to see them
    _session_for(ctx, client, desk, second_factor=False)
    page = client.get("/portal/dashboard").text
    assert (
        'id="open-disks"' not in page
        and "confirm with your one-time code</a>" in page
        and "/portal/account/step-up?next=/portal/dashboard" in page
    )
    assert _table(page, "sync-problems")  # the rest is there


def test_dashboard_service_pages_and_searches_projects(ctx: Context) -> None:
    s = setup_project(ctx)
    second = provisioned_project(ctx, s.world, title="Cod lice")
    third = provisioned_project(ctx, s.world, title="Cod genomes")
    pages = [overview.dashboard(ctx, s.world.helpdesk, per_page=2, page=n) for n in (1, 2, 9)]
    assert [[p.identifier for p in board.projects] for board in pages] == [
        [s.project, second],
        [third],
        [third],  # past the end: the last page
    ]
    assert {(b.matching, b.pages) for b in pages} == {(3, 2)}
    found = overview.dashboard(ctx, s.world.helpdesk, search="cod", per_page=1, page=2)
    assert (found.matching, found.pages, [p.identifier for p in found.projects]) == (2, 2, [third])
    # the totals stay those of every project, whichever page is shown
    everything = overview.dashboard(ctx, s.world.helpdesk)
    assert found.tiers == everything.tiers and len(everything.projects) == 3
