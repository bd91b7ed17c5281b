"""Real ``levere worker`` processes on one queue file: sharing a sync without ever copying a file
twice, and a worker killed with SIGKILL mid-copy. Runs on SQLite, and on PostgreSQL when
LEVERE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from levere.config import Settings
from levere.context import Context
from levere.db.models import Replica
from levere.services import sync, sync_sweep
from tests.conftest import Mailbox, job, wait_for
from tests.sync_support import (
    deliver,
    longterm_path,
    mails_to,
    quota,
    random_files,
    replica_states,
    replicas,
    setup_project,
)


def test_two_workers_share_a_sync_and_never_copy_one_file_twice(
    ctx: Context, producer: Context, workers: Callable[..., subprocess.Popen[str]], mailbox: Mailbox
) -> None:
    s = setup_project(ctx)
    files = random_files(240, 20_000)
    deliver(ctx, s, "RUN1", files)
    # small batches and a slow copy, so that every worker gets a share while the others still work
    first = workers("a", batch_files=10, bandwidth_limit=1_500_000)
    second = workers("b", batch_files=10, bandwidth_limit=1_500_000)
    started = sync.request_sync(producer, s.world.helpdesk, s.project)

    done = wait_for(lambda: (r := job(ctx, started.id)).state in ("done", "failed") and r, what="the sync")
    assert (done.state, done.files_done, done.files_failed) == ("done", 240, 0), done.error
    rows = replicas(ctx, s, "longterm")
    assert {r.state for r in rows} == {"present"}
    # each file was claimed once, and both processes copied some of them
    assert [r.attempts for r in rows] == [1] * 240
    pids = {int(str(r.lease_owner).split(":")[1]) for r in rows}
    assert pids == {first.pid, second.pid}
    for path, data in list(files.items())[::40]:
        assert Path(longterm_path(ctx, f"{s.project}/RUN1/{path}")).read_bytes() == data
    used = quota(ctx, s, "longterm")
    assert (used.used_bytes, used.reserved_bytes) == (240 * 20_000, 0)
    # four tasks on two processes announce the delivery once
    mailbox.wait_for(s.world.pi.email, "safely on long-term storage")
    time.sleep(0.5)
    assert sum("safely" in m["Subject"] for m in mails_to(mailbox, s.world.pi.email)) == 1


def test_a_worker_killed_mid_copy_leaves_nothing_half_done_and_the_rerun_finishes(
    ctx: Context, settings: Settings, producer: Context, workers: Callable[..., subprocess.Popen[str]]
) -> None:
    s = setup_project(ctx)
    big = os.urandom(24 * 1024 * 1024)
    files = random_files(5, 3000) | {"run.bam": big}
    deliver(ctx, s, "RUN1", files)
    doomed = workers("doomed", bandwidth_limit=4_000_000, lease_seconds=2)
    first = sync.request_sync(producer, s.world.helpdesk, s.project)

    tmp = Path(settings.data_dir) / "storage" / "longterm" / ".levere-tmp"
    wait_for(
        lambda: tmp.is_dir() and any(f.stat().st_size > 4 * 1024 * 1024 for f in tmp.iterdir()),
        what="the big file half copied",
    )
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()

    # nothing counts as on long-term storage, and nothing half-written has a final name
    assert "present" not in set(replica_states(ctx, s, "longterm").values())
    assert not Path(longterm_path(ctx, f"{s.project}/RUN1/run.bam")).exists()
    assert job(ctx, first.id).state == "running"
    assert quota(ctx, s, "longterm").reserved_bytes == sum(len(d) for d in files.values())

    workers("rescuer", lease_seconds=2)
    rerun = sync.request_sync(producer, s.world.helpdesk, s.project)
    done = wait_for(lambda: (r := job(ctx, rerun.id)).state in ("done", "failed") and r, what="the rerun")
    assert done.state == "done", done.error
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    stored = Path(longterm_path(ctx, f"{s.project}/RUN1/run.bam")).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(big).hexdigest()
    assert {r.attempts for r in replicas(ctx, s, "longterm")} == {2}
    used = quota(ctx, s, "longterm")
    assert (used.used_bytes, used.reserved_bytes) == (sum(len(d) for d in files.values()), 0)
    # the killed worker's job: the sweep (each worker runs it every minute; here it is called too)
    # queues it again once two leases passed without a heartbeat, and the next pass closes it
    time.sleep(4.1)
    sync_sweep.sweep(producer)
    wait_for(lambda: job(ctx, first.id).state == "done", what="the first job closed")
    with ctx.tx() as session:
        owners = set(session.execute(select(Replica.lease_owner).where(Replica.tier == "longterm")).scalars())
    assert all(str(doomed.pid) not in str(o).split(":")[1] for o in owners)
