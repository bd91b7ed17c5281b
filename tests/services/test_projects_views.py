"""What the services hand to every front end: frozen views, lists in a fixed number of queries, and
the pages a portal shows (a project's page, a delivery's files page by page, the helpdesk's dashboard)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from levere.context import Context
from levere.db.models import Delivery, JobRun, Replica, User, utcnow
from levere.domain.errors import AccessDenied, ValidationFailed
from levere.domain.roles import ProjectRole, UserKind
from levere.services import accounts, deliveries, invitations, overview, projects
from levere.services.deliveries import NewFile
from tests.helpers import World, auth, basic_world, make_user, token_for

T = TypeVar("T")
GiB = 1024**3


@contextmanager
def counted(ctx: Context) -> Iterator[list[str]]:
    """The SQL statements run inside the block, as the database received them."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(ctx.engine, "before_cursor_execute", seen)


def statements_of(ctx: Context, call: Callable[[], T]) -> tuple[T, int]:
    with counted(ctx) as statements:
        result = call()
    return result, len(statements)


def _provision(ctx: Context, world: World, number: int) -> str:
    identifier = f"LEV-2026-{number:04d}"
    with ctx.tx() as session:
        projects.provision(
            ctx, session, session.merge(world.helpdesk),
            identifier=identifier, title=f"Project {number}",
            quota_bytes={"area": number * GiB, "longterm": 2 * number * GiB},
            pi=session.merge(world.pi),
            members_wanted=[projects.NewMember("member@uib.example.org", ProjectRole.VIEWER)],
            facility=session.merge(world.facility),
        )  # fmt: skip
    return identifier


def _deliver(ctx: Context, world: World, identifier: str, name: str, paths: list[str]) -> None:
    view = deliveries.open_delivery(ctx, world.staff, identifier, name)
    files = [
        NewFile(path=p, size=len(p), md5=hashlib.md5(p.encode()).hexdigest(),
                sha256=hashlib.sha256(p.encode()).hexdigest(), key=f"{identifier}/{name}/{p}")
        for p in paths
    ]  # fmt: skip
    with ctx.tx() as session:
        deliveries.record_files(session, session.get_one(Delivery, view.id), "area-local", files)


def _user(ctx: Context, email: str) -> User:
    with ctx.tx() as session:
        return accounts.get_user_by_email(session, email)


def _lists(ctx: Context, world: World, member: User) -> dict[str, int]:
    """Statements each list costs, per viewer."""
    counts = {}
    for who, actor in (
        ("helpdesk", world.helpdesk),
        ("pi", world.pi),
        ("staff", world.staff),
        ("member", member),
    ):
        _, counts[who] = statements_of(ctx, lambda actor=actor: projects.list_projects(ctx, actor))  # type: ignore[misc]
    _, counts["dashboard"] = statements_of(ctx, lambda: overview.dashboard(ctx, world.helpdesk))
    return counts


def test_the_project_list_and_the_dashboard_cost_the_same_queries_for_1_or_50_projects(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    first = _provision(ctx, world, 1)
    _deliver(ctx, world, first, "RUN1", ["a.fastq.gz", "b.fastq.gz"])
    member = _user(ctx, "member@uib.example.org")  # invited by the provisioning
    token = token_for(ctx, world.helpdesk)
    one = _lists(ctx, world, member)
    client.get("/api/projects", headers=auth(token))  # the token's first use is recorded once
    _, api_one = statements_of(ctx, lambda: client.get("/api/projects", headers=auth(token)))

    for number in range(2, 51):
        identifier = _provision(ctx, world, number)
        if number % 10 == 0:
            _deliver(ctx, world, identifier, f"RUN{number}", [f"s{number}.bam"])
    fifty = _lists(ctx, world, member)
    r, api_fifty = statements_of(ctx, lambda: client.get("/api/projects", headers=auth(token)))

    assert fifty == one, "listing 50 projects must not cost more queries than listing one"
    assert api_fifty == api_one
    assert max(one.values()) <= 20
    assert r.status_code == 200 and len(r.json()) == 50
    # and the lists are right, for each viewer
    seen = projects.list_projects(ctx, world.pi)
    assert [p.identifier for p in seen] == [f"LEV-2026-{n:04d}" for n in range(1, 51)]
    assert {p.my_role for p in seen} == {"admin"}
    assert {p.my_role for p in projects.list_projects(ctx, member)} == {"viewer"}
    assert {p.my_role for p in projects.list_projects(ctx, world.staff)} == {None}
    twelfth = seen[11]
    assert twelfth.facilities == (world.facility.name,)
    assert [(q.tier, q.limit_bytes, q.used_bytes) for q in twelfth.quotas] == [
        ("area", 12 * GiB, 0),
        ("longterm", 24 * GiB, 0),
    ]
    assert twelfth.quota("area") is not None and twelfth.quota("tape") is None


def test_views_are_frozen_and_hold_no_database_rows(ctx: Context) -> None:
    world = basic_world(ctx)
    identifier = _provision(ctx, world, 1)
    view = projects.show_project(ctx, world.pi, identifier)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.title = "changed"  # type: ignore[misc]
    page = overview.project_page(ctx, world.pi, identifier)

    def walk(value: Any) -> Iterator[Any]:
        yield value
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                yield from walk(getattr(value, f.name))
        elif isinstance(value, (tuple, list)):
            for item in value:
                yield from walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)

    kinds = {type(v).__module__ for v in walk(page)}
    assert "levere.db.models" not in kinds
    assert not any(isinstance(v, list) for v in walk(page)), "collections in views are tuples"


def test_a_project_page_shows_quota_use_members_and_deliveries_to_those_who_may_see_them(
    ctx: Context,
) -> None:
    world = basic_world(ctx)
    identifier = _provision(ctx, world, 7)
    _deliver(ctx, world, identifier, "RUN1", ["a.fastq.gz", "b.fastq.gz", "c.fastq.gz"])
    _deliver(ctx, world, identifier, "RUN2", [])
    deliveries_open = deliveries.list_deliveries(ctx, world.pi, identifier)
    assert [d.state for d in deliveries_open] == ["open", "open"]

    page = overview.project_page(ctx, world.pi, identifier)
    assert page.project.identifier == identifier and page.project.my_role == "admin"
    assert [(m.email, m.role, m.has_account) for m in page.members] == [
        (world.pi.email, "admin", False),
        ("member@uib.example.org", "viewer", False),
    ]
    assert [(d.name, d.file_count, d.total_bytes) for d in page.deliveries] == [
        ("RUN1", 3, 30),
        ("RUN2", 0, 0),
    ]
    assert (page.summary.total, page.summary.open, page.summary.files, page.summary.bytes) == (2, 2, 3, 30)
    assert page.recent_jobs == ()

    outsider = make_user(ctx, "outsider@uib.example.org", password=None)
    with pytest.raises(AccessDenied):
        overview.project_page(ctx, outsider, identifier)


def test_the_project_page_over_the_api(ctx: Context, client: TestClient) -> None:
    world = basic_world(ctx)
    identifier = _provision(ctx, world, 3)
    _deliver(ctx, world, identifier, "RUN1", ["x.bam"])
    r = client.get(f"/api/projects/{identifier}/overview", headers=auth(token_for(ctx, world.staff)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["project"]["identifier"] == identifier and body["project"]["my_role"] is None
    assert [q["tier"] for q in body["project"]["quotas"]] == ["area", "longterm"]
    assert [d["name"] for d in body["deliveries"]] == ["RUN1"] and body["summary"]["files"] == 1
    assert {m["email"] for m in body["members"]} == {world.pi.email, "member@uib.example.org"}


def test_a_delivery_s_files_come_page_by_page_in_path_order_and_can_be_searched(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    identifier = _provision(ctx, world, 1)
    names = [f"lane{i % 2}/Sample_{i:03d}.fastq.gz" for i in range(250)] + ["README.txt", "50%_done.txt"]
    _deliver(ctx, world, identifier, "RUN1", names)

    first = deliveries.file_page(ctx, world.pi, identifier, "RUN1", limit=100)
    assert first.matching == 252 and len(first.files) == 100
    assert first.delivery.name == "RUN1" and first.delivery.file_count == 252
    ordered = sorted(names, key=lambda p: p.encode())
    assert [f.path for f in first.files] == ordered[:100]
    last = deliveries.file_page(ctx, world.pi, identifier, "RUN1", offset=200, limit=100)
    assert [f.path for f in last.files] == ordered[200:]
    assert all(f.tiers == {"area": "present"} for f in last.files)

    # any case, anywhere in the path; LIKE's wildcards are plain characters
    found = deliveries.file_page(ctx, world.pi, identifier, "RUN1", search="sample_01")
    assert found.matching == 10 and {f.path.split("/")[1][:10] for f in found.files} == {
        f"Sample_01{d}" for d in range(10)
    }
    assert deliveries.file_page(ctx, world.pi, identifier, "RUN1", search="%").matching == 1
    assert deliveries.file_page(ctx, world.pi, identifier, "RUN1", search="_done").matching == 1
    with pytest.raises(ValidationFailed):
        deliveries.file_page(ctx, world.pi, identifier, "RUN1", limit=0)
    with pytest.raises(ValidationFailed):
        deliveries.file_page(ctx, world.pi, identifier, "RUN1", offset=-1)
    with pytest.raises(ValidationFailed):  # past what the database's integers hold
        deliveries.file_page(ctx, world.pi, identifier, "RUN1", offset=2**70)

    r = client.get(
        f"/api/projects/{identifier}/deliveries/RUN1/files",
        params={"search": "readme", "limit": 5},
        headers=auth(token_for(ctx, world.pi)),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matching"] == 1 and [f["path"] for f in body["files"]] == ["README.txt"]
    assert body["files"][0]["md5"] == hashlib.md5(b"README.txt").hexdigest()
    assert body["delivery"]["file_count"] == 252
    r = client.get(
        f"/api/projects/{identifier}/deliveries/RUN1/files",
        params={"limit": 5000},
        headers=auth(token_for(ctx, world.pi)),
    )
    assert r.status_code == 422


def test_the_dashboard_shows_every_project_and_the_jobs_that_need_attention(
    ctx: Context, client: TestClient
) -> None:
    world = basic_world(ctx)
    first = _provision(ctx, world, 1)
    second = _provision(ctx, world, 2)
    _deliver(ctx, world, second, "RUN1", ["a.bam", "b.bam"])
    long_ago = utcnow() - timedelta(days=2)
    with ctx.tx() as session:
        project_id = projects.get_project(session, second).id
        session.add(JobRun(kind="sync", project_id=project_id, state="failed", error="disk gone",
                           finished_at=long_ago))  # fmt: skip
        session.add(JobRun(kind="sync", project_id=project_id, state="running", created_at=long_ago,
                           started_at=long_ago, updated_at=long_ago))  # fmt: skip
        session.add(JobRun(kind="restore", project_id=project_id, state="running"))  # a worker is on it
        replica = session.query(Replica).first()
        assert replica is not None
        replica.state = "damaged"

    board = overview.dashboard(ctx, world.helpdesk)
    assert [p.identifier for p in board.projects] == [first, second]
    one, two = board.projects
    assert (one.members, one.deliveries.total, one.problem_files) == (2, 0, 0)
    assert (two.deliveries.total, two.deliveries.files, two.deliveries.bytes, two.problem_files) == (
        1,
        2,
        10,
        1,
    )
    assert [(q.tier, q.limit_bytes) for q in board.tiers] == [("area", 3 * GiB), ("longterm", 6 * GiB)]
    assert [(j.state, j.error, j.project) for j in board.failed_jobs] == [("failed", "disk gone", second)]
    assert [(j.kind, j.state) for j in board.stalled_jobs] == [("sync", "running")]

    with pytest.raises(AccessDenied):
        overview.dashboard(ctx, world.pi)
    r = client.get("/api/dashboard", headers=auth(token_for(ctx, world.helpdesk)))
    assert r.status_code == 200, r.text
    assert [p["identifier"] for p in r.json()["projects"]] == [first, second]
    assert r.json()["stalled_jobs"][0]["created_by"] == "levere"
    staff = make_user(ctx, "staff2@norseq.example.org", UserKind.FACILITY, world.facility, password=None)
    assert client.get("/api/dashboard", headers=auth(token_for(ctx, staff))).status_code == 403


def test_the_pending_invitations_cost_the_same_queries_for_2_or_20_people(ctx: Context) -> None:
    world = basic_world(ctx)
    _provision(ctx, world, 1)  # invites the PI and a member, the project named
    two, count_two = statements_of(ctx, lambda: invitations.list_pending(ctx, world.helpdesk))
    for n in range(18):
        invitations.create_account(ctx, world.helpdesk, f"invited-{n:02d}@uib.example.org")
    invitations.resend(ctx, world.helpdesk, "invited-03@uib.example.org")
    twenty, count_twenty = statements_of(ctx, lambda: invitations.list_pending(ctx, world.helpdesk))
    assert count_twenty == count_two
    assert len(two) == 2 and len(twenty) == 20
    by_email = {p.email: p for p in twenty}
    assert by_email["member@uib.example.org"].project == "LEV-2026-0001"
    assert by_email["invited-03@uib.example.org"].invited_by == world.helpdesk.email
    assert (
        by_email["invited-03@uib.example.org"].created_at > by_email["invited-04@uib.example.org"].created_at
    )
