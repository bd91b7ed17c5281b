"""Faults: the long-term store down (locally and on S3), retries with backoff, crashes at every step
of a copy (lost leases, published-but-unrecorded objects), and a real S3 long-term tier."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from sqlalchemy import select

from levere.config import Settings, SyncSettings, TierSettings
from levere.context import Context
from levere.dataplane import batch_copy, replication
from levere.dataplane.batch_copy import Scope
from levere.db.models import JobRun, Replica
from levere.domain.errors import Conflict
from levere.domain.tiers import Tier
from levere.jobs.queue import build_queue
from levere.services import scrub, sync, sync_sweep
from levere.storage import S3Backend, S3Spec
from tests.conftest import Mailbox, free_port
from tests.sync_support import (
    Setup,
    area_path,
    deliver,
    longterm_path,
    mails_to,
    quota,
    random_files,
    replica_states,
    replicas,
    setup_project,
)

S3_ENV = ("LEVERE_TEST_S3_ENDPOINT", "LEVERE_TEST_S3_ACCESS_KEY", "LEVERE_TEST_S3_SECRET_KEY")


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@pytest.fixture
def make_ctx(settings: Settings) -> Iterator[Callable[..., Context]]:
    """Contexts on the test's database and data folder with other settings."""
    made: list[Context] = []

    def build(*, embedded: bool = False, **changes: Any) -> Context:
        ctx = Context.build(settings.model_copy(update=changes))
        queue = build_queue(ctx, immediate=not embedded)
        if embedded:
            queue.start(workers=2)
        made.append(ctx)
        return ctx

    yield build
    for ctx in made:
        if ctx.jobs is not None:
            ctx.jobs.stop()
        ctx.close()


def area_intact(ctx: Context, s: Setup, files: dict[str, bytes], name: str = "RUN1") -> bool:
    return all(Path(area_path(ctx, f"{s.project}/{name}/{p}")).read_bytes() == d for p, d in files.items())


def run_row(ctx: Context, run_id: str) -> JobRun:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        return run


# --- the long-term store down ---------------------------------------------------------------------


def test_store_down_fails_visibly_retries_with_backoff_and_finishes(
    ctx: Context, make_ctx: Callable[..., Context], tmp_path: Path, mailbox: Mailbox
) -> None:
    s = setup_project(ctx)
    files = random_files(6, 5000)
    deliver(ctx, s, "RUN1", files)
    worker = make_ctx(
        embedded=True,
        queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
        sync=SyncSettings(retries=6, retry_delay_seconds=0.5),
    )
    root = Path(worker.backend(Tier.LONGTERM).root)  # type: ignore[attr-defined]
    root.rename(root.with_name("longterm-unmounted"))  # the long-term share goes away
    job = sync.request_sync(worker, s.world.helpdesk, s.project)

    # visible: the job says it will retry, each file says why it failed
    first = wait_until(lambda: (r := run_row(ctx, job.id)).state == "retrying" and r, what="a retry")
    assert "is not available" in first.error and "next try in 0.5 s" in first.error
    assert set(replica_states(ctx, s, "longterm").values()) == {"failed"}
    assert all("is not available" in r.reason for r in replicas(ctx, s, "longterm"))
    status = sync.status(ctx, s.world.pi, s.project)
    assert status.deliveries[0].longterm == "failed"
    # backoff: each wait doubles
    wait_until(lambda: run_row(ctx, job.id).attempt >= 2, what="a second try")
    assert "next try in 1 s" in run_row(ctx, job.id).error
    assert quota(ctx, s, "longterm").reserved_bytes == 0
    assert area_intact(ctx, s, files)

    root.with_name("longterm-unmounted").rename(root)  # back again
    done = wait_until(lambda: (r := run_row(ctx, job.id)).state in ("done", "failed") and r, what="the end")
    assert done.state == "done", done.error
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    for path, data in files.items():
        assert Path(longterm_path(ctx, f"{s.project}/RUN1/{path}")).read_bytes() == data
    assert quota(ctx, s, "longterm").used_bytes == sum(len(d) for d in files.values())
    # people hear about the result, not about each retry
    mailbox.wait_for(s.world.pi.email, "safely on long-term storage")
    assert not [m for m in mails_to(mailbox, s.world.pi.email) if "failed" in m["Subject"]]


def test_after_the_last_retry_the_job_fails_and_people_are_told_once(
    ctx: Context, make_ctx: Callable[..., Context], tmp_path: Path, mailbox: Mailbox
) -> None:
    s = setup_project(ctx)
    files = random_files(3, 2000)
    deliver(ctx, s, "RUN1", files)
    worker = make_ctx(
        embedded=True,
        queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
        sync=SyncSettings(retries=2, retry_delay_seconds=0.2),
    )
    root = Path(worker.backend(Tier.LONGTERM).root)  # type: ignore[attr-defined]
    root.rename(root.with_name("gone"))
    job = sync.request_sync(worker, s.world.helpdesk, s.project)
    run = wait_until(lambda: (r := run_row(ctx, job.id)).state == "failed" and r, what="giving up")
    assert run.error.startswith("gave up after 3 attempt(s)") and "is not available" in run.error
    assert run.report["failures"][0]["reason"].endswith("is not available (missing or not a folder)")
    mail = mailbox.wait_for(s.world.helpdesk.email, "to long-term storage failed")
    assert "Nothing was lost" in str(mail.get_payload(decode=True))
    assert area_intact(ctx, s, files)

    root.with_name("gone").rename(root)
    again = sync.request_sync(worker, s.world.helpdesk, s.project)
    wait_until(lambda: run_row(ctx, again.id).state == "done", what="the second sync")
    mailbox.wait_for(s.world.pi.email, "safely on long-term storage")
    assert sum("failed" in m["Subject"] for m in mails_to(mailbox, s.world.pi.email)) == 1


def test_s3_store_on_a_closed_port_fails_visibly_and_loses_nothing(
    ctx: Context, make_ctx: Callable[..., Context]
) -> None:
    s = setup_project(ctx)
    files = random_files(2, 3000)
    deliver(ctx, s, "RUN1", files)
    closed = free_port()  # nothing listens there
    spec = S3Spec(
        type="s3", backend_id="lt-s3", bucket="levere-longterm", endpoint_url=f"http://127.0.0.1:{closed}",
        access_key="key", secret_key="secret",  # type: ignore[arg-type]
    )  # fmt: skip
    worker = make_ctx(tiers=TierSettings(longterm=spec), sync=SyncSettings(retries=3, retry_delay_seconds=30))
    job = sync.request_sync(worker, s.world.helpdesk, s.project)

    run = run_row(ctx, job.id)
    assert run.state == "retrying" and f"127.0.0.1:{closed}" in run.error and "unreachable" in run.error
    assert run.next_attempt_at is not None
    assert {r.state for r in replicas(ctx, s, "longterm")} == {"failed"}
    assert all("unreachable" in r.reason for r in replicas(ctx, s, "longterm"))
    assert quota(ctx, s, "longterm").reserved_bytes == 0 and quota(ctx, s, "longterm").used_bytes == 0
    assert area_intact(ctx, s, files)
    with pytest.raises(Conflict, match="not safely on long-term storage"):
        sync.free(ctx, s.world.pi, s.project, ["RUN1"])


# --- crashes at each step of a copy ---------------------------------------------------------------


def dead_worker_claims(ctx: Context, s: Setup, lease: float = 0.3) -> tuple[Scope, str, list[Any]]:
    """A worker that claims a batch and then dies (its lease runs out)."""
    from levere.services.projects import get_project

    with ctx.tx() as session:
        run = JobRun(kind="sync", project_id=get_project(session, s.project).id, state="running")
        session.add(run)
        session.flush()
        scope = replication.scope_of(session, run)
    owner = "dead-host:1:abc"
    with ctx.tx() as session:
        items = replication.claim(session, scope, owner, "longterm", lease, replication.utcnow())
    return scope, owner, items


def test_a_worker_that_died_after_claiming_is_taken_over_without_double_quota(
    ctx: Context, make_ctx: Callable[..., Context]
) -> None:
    s = setup_project(ctx)
    files = random_files(4, 3000)
    deliver(ctx, s, "RUN1", files)
    # a lease long enough that a loaded machine makes the first request while it still holds
    _, _, items = dead_worker_claims(ctx, s, lease=3.0)
    assert len(items) == 4
    assert quota(ctx, s, "longterm").reserved_bytes == 12_000
    assert set(replica_states(ctx, s, "longterm").values()) == {"copying"}

    worker = make_ctx(sync=SyncSettings(lease_seconds=30))
    early = sync.request_sync(worker, s.world.helpdesk, s.project)
    assert run_row(ctx, early.id).state == "running"  # the lease still runs: it waits (a huey retry)
    time.sleep(3.2)
    later = sync.request_sync(worker, s.world.helpdesk, s.project)
    assert run_row(ctx, later.id).state == "done"
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    assert [r.attempts for r in replicas(ctx, s, "longterm")] == [2] * 4
    limit = quota(ctx, s, "longterm")
    assert (limit.used_bytes, limit.reserved_bytes) == (12_000, 0)


def test_an_object_published_but_not_recorded_is_adopted_not_copied_again(ctx: Context) -> None:
    s = setup_project(ctx)
    files = random_files(3, 3000)
    deliver(ctx, s, "RUN1", files)
    scope, owner, items = dead_worker_claims(ctx, s)
    with ThreadPoolExecutor(2) as pool:
        outcomes = batch_copy.copy_batch(ctx, pool, scope, items, owner, None)
    assert all(o.error is None for o in outcomes)  # ... and the worker dies before recording them
    inodes = {i.key: os.stat(longterm_path(ctx, i.key)).st_ino for i in items}
    time.sleep(0.35)

    sync.request_sync(ctx, s.world.helpdesk, s.project)
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    assert {k: os.stat(longterm_path(ctx, k)).st_ino for k in inodes} == inodes
    assert (quota(ctx, s, "longterm").used_bytes, quota(ctx, s, "longterm").reserved_bytes) == (9000, 0)


def test_a_broken_leftover_of_a_crash_is_replaced_and_verified(ctx: Context) -> None:
    s = setup_project(ctx)
    files = {"a.bin": os.urandom(20_000)}
    deliver(ctx, s, "RUN1", files)
    _, _, (item,) = dead_worker_claims(ctx, s)
    # what a power cut can leave: the name published, the bytes not all on disk
    with ctx.backend(Tier.LONGTERM).open_writer(item.key, write_once=True) as writer:
        writer.write(files["a.bin"][:4096])
        writer.commit()
    time.sleep(0.35)
    sync.request_sync(ctx, s.world.helpdesk, s.project)
    assert replica_states(ctx, s, "longterm") == {"a.bin": "present"}
    assert Path(longterm_path(ctx, item.key)).read_bytes() == files["a.bin"]


def test_a_worker_that_lost_its_lease_changes_nothing(ctx: Context) -> None:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", random_files(2, 1000))
    scope, owner, items = dead_worker_claims(ctx, s)
    time.sleep(0.35)
    sync.request_sync(ctx, s.world.helpdesk, s.project)  # another worker takes over and finishes
    before = quota(ctx, s, "longterm")
    # the first worker wakes up and reports its (now stale) batch as copied, then as failed
    with ctx.tx() as session:
        replication.finish(ctx, session, scope, owner, [replication.Outcome(i) for i in items])
    with ctx.tx() as session:
        replication.finish(
            ctx, session, scope, owner,
            [replication.Outcome(i, error=replication.StorageUnavailable("late")) for i in items],
        )  # fmt: skip
    after = quota(ctx, s, "longterm")
    assert (after.used_bytes, after.reserved_bytes) == (before.used_bytes, before.reserved_bytes) == (2000, 0)
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}


def test_the_sweep_restarts_work_of_dead_workers(ctx: Context, make_ctx: Callable[..., Context]) -> None:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", random_files(2, 1000))
    # leases long enough that a loaded machine reaches the first sweep while they still hold: the
    # files' (3 s) and the job's (the sweeper counts a running job dead after two of its leases)
    dead_worker_claims(ctx, s, lease=3.0)
    sweeper = make_ctx(sync=SyncSettings(lease_seconds=1.5))
    assert sync_sweep.sweep(sweeper) == []  # leases still valid: nothing to do yet
    time.sleep(3.2)
    started = sync_sweep.sweep(sweeper)
    assert len(started) == 1  # the dead worker's job, queued again
    assert run_row(ctx, started[0]).state == "done"
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    assert sync_sweep.sweep(sweeper) == []


# --- a real S3 long-term tier ----------------------------------------------------------------------


@pytest.fixture
def s3_longterm(make_ctx: Callable[..., Context]) -> Iterator[tuple[Context, Any, str, str]]:
    values = [os.environ.get(n, "") for n in S3_ENV]
    if not all(values):
        pytest.skip("S3 not configured: set LEVERE_TEST_S3_* (scripts/s3-server.sh start DIR PORT)")
    endpoint, access, secret = values
    bucket, prefix = f"levere-lt-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:8]}/"
    # a bucket without object lock (write_once = false): levere's own marks and checks only
    spec = S3Spec(
        type="s3", backend_id="lt-s3", bucket=bucket, prefix=prefix, endpoint_url=endpoint,
        access_key=access, secret_key=secret, write_once=False,  # type: ignore[arg-type]
    )  # fmt: skip
    S3Backend(endpoint, bucket, access, secret).ensure_bucket()
    raw = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )  # fmt: skip
    yield make_ctx(tiers=TierSettings(longterm=spec)), raw, bucket, prefix
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            raw.delete_object(Bucket=bucket, Key=obj["Key"])
    raw.delete_bucket(Bucket=bucket)


def test_sync_to_s3_write_once_idempotent_and_scrubbed(
    ctx: Context, s3_longterm: tuple[Context, Any, str, str]
) -> None:
    worker, raw, bucket, prefix = s3_longterm
    s = setup_project(ctx)
    files = random_files(3, 3000) | {"big.bam": os.urandom(20 * 1024 * 1024)}
    deliver(ctx, s, "RUN1", files)
    sync.request_sync(worker, s.world.helpdesk, s.project)
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    for path, data in files.items():
        got = raw.get_object(Bucket=bucket, Key=f"{prefix}{s.project}/RUN1/{path}")
        assert hashlib.sha256(got["Body"].read()).hexdigest() == hashlib.sha256(data).hexdigest()
        assert got["Metadata"].get("levere-write-once") == "1"
    again = sync.request_sync(worker, s.world.helpdesk, s.project)
    assert run_row(ctx, again.id).files_total == 0

    # rot on the S3 copy (an outside tool overwrote it): verify finds it and levere rewrites it
    raw.put_object(Bucket=bucket, Key=f"{prefix}{s.project}/RUN1/big.bam", Body=b"rotten")
    job = scrub.request_verify(worker, s.world.helpdesk, s.project)
    run = run_row(ctx, job.id)
    assert (run.state, run.report["damaged_found"], run.report["repaired"]) == ("done", 1, 1)
    assert "size is 6 bytes" in run.report["damaged"][0]["reason"]
    body = raw.get_object(Bucket=bucket, Key=f"{prefix}{s.project}/RUN1/big.bam")["Body"].read()
    assert body == files["big.bam"]

    # free and restore through S3
    sync.free(worker, s.world.pi, s.project, ["RUN1"])
    assert not Path(area_path(ctx, f"{s.project}/RUN1/big.bam")).exists()
    sync.request_restore(worker, s.world.pi, s.project, ["RUN1"])
    assert area_intact(ctx, s, files)
    with ctx.tx() as session:
        assert (
            session.execute(select(Replica.state).where(Replica.tier == "area")).scalars().all()
            == ["present"] * 4
        )
