"""Release as a job: the request checks everything at once and answers with a job run; the run
records its progress in files, ends done with the release's outcome in its report, is never started
twice for one delivery, and a retry after a crash goes on where the attempt stopped."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import select, update

from levere.cli import sync as cli_sync
from levere.cli.client import Client, Credentials
from levere.config import Settings, SyncSettings
from levere.context import Context
from levere.db.models import Delivery, JobRun, SharedDisk
from levere.domain.errors import AccessDenied, AlreadyReleased, Conflict, NotFound, StorageUnavailable
from levere.domain.jobruns import JobKind, JobRunState
from levere.domain.secure import HeaderHolder
from levere.jobs import dispatch
from levere.jobs.queue import build_queue
from levere.services import secure_disks, zone_analysis, zone_pages, zone_release
from tests.cli_live import Cli
from tests.conftest import LiveServer
from tests.secure.test_zone_download import _zone_token
from tests.secure.test_zone_release import FILES, _actions, _bodies, _headers, _users_plaintext
from tests.secure.zone_support import USERS, add_delivery, make_zone


def _runs(ctx: Context) -> list[JobRun]:
    with ctx.tx() as session:
        runs = list(session.execute(select(JobRun).where(JobRun.kind == JobKind.RELEASE.value)).scalars())
        session.expunge_all()
        return runs


def _released_at(ctx: Context, name: str = "RUN1") -> Any:
    with ctx.tx() as session:
        return session.execute(select(Delivery.released_at).where(Delivery.name == name)).scalar_one()


def test_the_api_starts_a_release_job_that_ends_done_with_the_outcome_in_its_report(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, FILES)
    staff = _zone_token(ctx, zone.world.staff)
    answer = client.post(f"/api/secure/disks/{zone.disk}/deliveries/RUN1/release", headers=staff)
    assert answer.status_code == 202
    started = answer.json()
    assert (started["kind"], started["project"], started["delivery"]) == ("release", zone.project, "RUN1")
    assert started["files_total"] == 3
    # the job ran at once (tests' queue): done, with what the release did
    job = client.get(f"/api/projects/{zone.project}/jobs/{started['id']}", headers=staff).json()
    assert job["state"] == "done" and job["files_done"] == job["files_total"] == 3 and job["error"] == ""
    report = job["report"]
    assert (report["users_project"], report["files"], report["moved"], report["disk_state"]) == (
        USERS, 3, 3, "released",
    )  # fmt: skip
    assert report["released_at"] == _released_at(ctx).isoformat()
    assert _users_plaintext(ctx) == FILES
    assert _actions(ctx, "delivery.release_requested") == 1 and _actions(ctx, "delivery.released") == 1
    assert _actions(ctx, "file.released") == 3 and _actions(ctx, "disk.released") == 1


def test_every_refusal_comes_with_the_request_and_starts_no_job(ctx: Context, client: TestClient) -> None:
    zone = make_zone(ctx, FILES)
    add_delivery(ctx, zone, "OPEN1", {"x.fq": b"@x\nA\n+\nI\n"}, sealed=False)
    add_delivery(ctx, zone, "RUN2", {"y.fq": b"@y\nC\n+\nI\n"})
    url = f"/api/secure/disks/{zone.disk}/deliveries/{{}}/release"
    staff = _zone_token(ctx, zone.world.staff)
    for who in (zone.world.helpdesk, zone.world.pi):  # not the facility's side of the disk
        refused = client.post(url.format("RUN1"), headers=_zone_token(ctx, who))
        assert refused.status_code == 403, refused.json()
    not_sealed = client.post(url.format("OPEN1"), headers=staff)
    assert not_sealed.status_code == 409 and "only a sealed delivery" in not_sealed.json()["message"]
    assert client.post(url.format("RUN9"), headers=staff).status_code == 404
    with pytest.raises(AccessDenied):
        zone_release.request_release(ctx, zone.world.pi, zone.disk, "RUN1")
    assert _runs(ctx) == [] and _actions(ctx, "delivery.release_requested") == 0

    assert client.post(url.format("RUN1"), headers=staff).status_code == 202
    again = client.post(url.format("RUN1"), headers=staff)
    assert again.status_code == 409 and again.json()["error"] == "already_released"
    with pytest.raises(AlreadyReleased):
        zone_release.request_release(ctx, zone.world.staff, zone.disk, "RUN1")
    # a disk whose key is gone (destroyed) releases nothing
    secure_disks.destroy(ctx, zone.world.helpdesk, zone.disk)
    gone = client.post(url.format("RUN2"), headers=staff)
    assert gone.status_code == 409 and "nothing on it can be released" in gone.json()["message"]
    with pytest.raises(Conflict, match="nothing on it can be released"):
        zone_release.request_release(ctx, zone.world.staff, zone.disk, "RUN2")
    assert len(_runs(ctx)) == 1 and _actions(ctx, "delivery.release_requested") == 1


def test_a_second_request_while_a_release_is_queued_gets_the_same_job(
    ctx: Context, producer: Context
) -> None:
    zone = make_zone(ctx, FILES)
    # the producer only queues (no worker here): the run stays queued
    first = zone_release.request_release(producer, zone.world.staff, zone.disk, "RUN1")
    second = zone_release.request_release(producer, zone.world.staff, zone.disk, "RUN1")
    assert first.state == JobRunState.QUEUED and second.id == first.id
    assert [r.id for r in _runs(ctx)] == [first.id] and _actions(ctx, "delivery.release_requested") == 1
    # the disk's page shows it under way and offers no second release (nor an analysis) meanwhile
    screen = zone_pages.disk_page(ctx, zone.world.staff, zone.disk)
    (shown,) = screen.deliveries
    assert [(j.id, j.kind, j.files_done, j.files_total) for j in shown.running] == [
        (first.id, JobKind.RELEASE, 0, 3)
    ]
    assert not shown.may_release and not shown.may_analyse
    # a worker takes it up: it ends done, and the page offers nothing more
    dispatch.attempt(ctx, dispatch.RELEASE, first.id, retries_left=0, retry_delay=0)
    (run,) = _runs(ctx)
    assert run.state == JobRunState.DONE and run.report["disk_state"] == "released"
    (after,) = zone_pages.disk_page(ctx, zone.world.staff, zone.disk).deliveries
    assert after.running == () and after.released_at is not None and not after.may_release
    with pytest.raises(NotFound):
        zone_release.request_release(ctx, zone.world.staff, zone.disk, "RUN7")


@pytest.fixture
def retrying(settings: Settings) -> Iterator[Context]:
    """Jobs at once, in-process, with retries taken up at once (no delay)."""
    context = Context.build(
        settings.model_copy(update={"sync": SyncSettings(retries=2, retry_delay_seconds=0)})
    )
    build_queue(context, immediate=True)
    yield context
    context.close()


def test_a_release_attempt_that_dies_after_its_first_batch_is_retried_and_completes(
    retrying: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = retrying
    files = {f"f{n:02}.fq": f"@read{n}\nACGT\n+\nIIII\n".encode() * (n + 1) for n in range(9)}
    zone = make_zone(ctx, files)
    bodies = _bodies(ctx)
    monkeypatch.setattr(zone_release, "BATCH", 2)
    noted = zone_release._note_progress
    seen: list[int] = []

    def crash_once(ctx: Context, run_id: str, files_done: int) -> None:
        # after every committed batch, every file is readable by exactly one side
        holders = _headers(ctx)
        assert all(len(h) == 1 for h in holders.values()), holders
        moved = sum(next(iter(h))[0] == HeaderHolder.SECURE for h in holders.values())
        assert moved == files_done
        seen.append(files_done)
        noted(ctx, run_id, files_done)
        if len(seen) == 1:
            raise StorageUnavailable("the database went away")

    monkeypatch.setattr(zone_release, "_note_progress", crash_once)
    job = zone_release.request_release(ctx, zone.world.staff, zone.disk, "RUN1")
    (run,) = _runs(ctx)
    assert run.id == job.id and run.state == JobRunState.DONE and run.attempt == 1, run.error
    # the retry went on from the files the first attempt moved, its progress counting them
    assert seen == [2, 4, 6, 8, 9] and run.files_done == run.files_total == 9
    assert run.report["moved"] == 7 and run.report["files"] == 9 and run.error == ""
    assert all(len(h) == 1 and next(iter(h))[0] == HeaderHolder.SECURE for h in _headers(ctx).values())
    assert _users_plaintext(ctx) == files and _bodies(ctx) == bodies
    assert _actions(ctx, "delivery.release_started") == 2 and _actions(ctx, "delivery.released") == 1
    with ctx.tx() as session:
        disk = session.execute(select(SharedDisk)).scalar_one()
        assert disk.wrapped_private_key is None and disk.state == "released"


def test_a_release_that_keeps_failing_ends_failed_with_its_reason_and_can_be_asked_for_again(
    retrying: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = retrying
    zone = make_zone(ctx, FILES)

    def broken(*_: Any) -> None:
        raise StorageUnavailable("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(zone_release, "_release_batch", broken)
        failed = zone_release.request_release(ctx, zone.world.staff, zone.disk, "RUN1")
    (run,) = _runs(ctx)
    assert run.state == JobRunState.FAILED and run.attempt == 2 and "the database went away" in run.error
    assert _released_at(ctx) is None
    again = zone_release.request_release(ctx, zone.world.staff, zone.disk, "RUN1")
    assert again.id != failed.id
    assert {r.id: r.state for r in _runs(ctx)}[again.id] == JobRunState.DONE
    assert _users_plaintext(ctx) == FILES


def test_a_run_whose_delivery_an_earlier_attempt_released_ends_done(ctx: Context, producer: Context) -> None:
    """The attempt that released the delivery died before it closed the run: the next one closes it."""
    zone = make_zone(ctx, FILES)
    job = zone_release.request_release(producer, zone.world.staff, zone.disk, "RUN1")
    zone_release.release(ctx, zone.world.staff, zone.disk, "RUN1")
    with ctx.tx() as session:
        session.execute(
            update(JobRun).where(JobRun.id == job.id).values(state=JobRunState.RETRYING.value, attempt=1)
        )
    dispatch.attempt(ctx, dispatch.RELEASE, job.id, retries_left=0, retry_delay=0)
    (run,) = _runs(ctx)
    assert run.state == JobRunState.DONE and run.report["users_project"] == USERS
    assert run.report["files"] == run.files_done == 3 and run.report["moved"] == 0
    assert run.report["released_at"] == _released_at(ctx).isoformat()


def test_levere_secure_release_follows_the_job_and_words_its_outcome(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = live_server.ctx
    zone = make_zone(ctx, FILES)
    add_delivery(ctx, zone, "RUN2", {"y.fq": b"@y\nC\n+\nI\n"})
    add_delivery(ctx, zone, "RUN3", {"z.fq": b"@z\nG\n+\nI\n"})
    cli = Cli(url=live_server.url, home=tmp_path / "cli")
    env = {"LEVERE_TOKEN": _zone_token(ctx, zone.world.staff)["Authorization"].split()[1]}
    printed = cli.ok("staff", "secure", "release", zone.disk, "RUN1", env=env)
    assert printed.strip().endswith(f"delivery RUN1 (3 files) released to {USERS}")  # RUN2 keeps it open
    # without waiting: the job's id and how to follow it; the job's own view words the outcome too
    started = cli.ok("staff", "secure", "release", zone.disk, "RUN2", "--no-wait", env=env)
    job_id = started.split("started as job ")[1].split(";")[0]
    assert f"levere jobs show {job_id} --project {zone.project} --wait" in started
    shown = cli.ok("staff", "jobs", "show", job_id, "--project", zone.project, "--wait", env=env)
    assert f"delivery RUN2 (1 files) released to {USERS}" in shown
    # a run that fails for good: its error, and exit code 1
    monkeypatch.setattr(ctx.jobs._tasks["release"].task_class, "default_retries", 0)  # type: ignore[union-attr]

    def broken(*_: Any) -> None:
        raise StorageUnavailable("the database went away")

    monkeypatch.setattr(zone_release, "_release_batch", broken)
    failed = cli.run("staff", "secure", "release", zone.disk, "RUN3", env=env)
    assert failed.returncode == 1 and "release of RUN3 failed: the database went away" in failed.stdout
    assert cli.json("staff", "jobs", "list", zone.project, env=env)[0]["state"] == "failed"
    monkeypatch.undo()
    done = cli.json("staff", "secure", "release", zone.disk, "RUN3", env=env)
    assert done["state"] == "done" and done["report"]["disk_state"] == "released"


def test_the_cli_follows_a_release_in_progress_by_its_files(
    ctx: Context, producer: Context, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``follow`` (shared by every job command) shows a release's files done of total on its bar."""
    zone = make_zone(ctx, FILES)
    queued = zone_release.request_release(producer, zone.world.staff, zone.disk, "RUN1")
    monkeypatch.setattr(zone_release, "BATCH", 1)
    noted = zone_release._note_progress

    def slow(ctx: Context, run_id: str, files_done: int) -> None:
        noted(ctx, run_id, files_done)
        time.sleep(0.7)  # a poll or two sees each batch

    monkeypatch.setattr(zone_release, "_note_progress", slow)
    screen = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    monkeypatch.setattr(cli_sync, "err_console", screen)
    token = _zone_token(ctx, zone.world.staff)["Authorization"].split()[1]
    api = Client(Credentials(url=live_server.url, token=token))
    job = api.get(f"/projects/{zone.project}/jobs/{queued.id}")
    worker = threading.Thread(target=dispatch.attempt, args=(ctx, dispatch.RELEASE, queued.id, 0, 0))
    worker.start()
    try:
        ended = cli_sync.follow(api, job)
    finally:
        worker.join(timeout=30)
    assert ended["state"] == "done" and ended["files_done"] == ended["files_total"] == 3
    shown = screen.export_text()
    assert f"release of {zone.project}/RUN1" in shown
    counts = set(re.findall(r"(\d)/3 files", shown))
    assert {"0", "3"} <= counts and counts & {"1", "2"}, shown  # it moved along, file by file
    assert " B/" not in shown  # a release moves no bytes: no sizes on its bar


def test_a_refusal_met_by_a_queued_release_ends_it_at_once_without_retries(
    retrying: Context, producer: Context
) -> None:
    """The disk was destroyed between the request and the worker: no retry can mend that."""
    zone = make_zone(retrying, FILES)
    job = zone_release.request_release(producer, zone.world.staff, zone.disk, "RUN1")
    secure_disks.destroy(retrying, zone.world.helpdesk, zone.disk)
    dispatch.attempt(retrying, dispatch.RELEASE, job.id, retries_left=2, retry_delay=0)
    (run,) = _runs(retrying)
    assert run.state == JobRunState.FAILED and run.attempt == 0
    assert "nothing on it can be released" in run.error
    assert _released_at(retrying) is None


def test_no_analysis_starts_while_a_release_is_under_way(ctx: Context, producer: Context) -> None:
    zone = make_zone(ctx, FILES)
    job = zone_release.request_release(producer, zone.world.staff, zone.disk, "RUN1")
    with pytest.raises(Conflict, match=f"the release of RUN1 is under way \\(job {job.id}\\)"):
        zone_analysis.request_analysis(ctx, zone.world.staff, zone.disk, "RUN1")
    assert [r.kind for r in _all_runs(ctx)] == [JobKind.RELEASE]


def _all_runs(ctx: Context) -> list[JobRun]:
    with ctx.tx() as session:
        runs = list(session.execute(select(JobRun)).scalars())
        session.expunge_all()
        return runs
