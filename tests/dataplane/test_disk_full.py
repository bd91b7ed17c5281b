"""A full disk: tus uploads, tar batches, ``levere deliver`` and sync jobs against tiers on a small
file system the test mounts (tmpfs; mounting needs root, which CI has).

A write that finds no room answers 507 ``storage_full`` in levere's error format and leaves nothing of
itself; the upload resumes from what was durable before it; small deliveries work again as soon as
there is room; the CLI says the server's storage is full and stops rather than retry; a sync job into
a full long-term tier says so on the job.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from levere.config import Settings, SyncSettings, TierSettings
from levere.context import Context
from levere.db.models import JobRun
from levere.domain.errors import StorageFull
from levere.jobs.queue import build_queue
from levere.services import sync
from levere.storage import LocalSpec
from tests.cli_live import levere, make_env, make_run
from tests.conftest import LiveServer
from tests.deliveries_support import (
    TUS,
    Crew,
    crew,
    digests,
    open_delivery,
    send_batch,
    tar_of,
    tus_create,
    tus_patch,
)
from tests.sync_support import deliver, random_files, replica_states, setup_project

KiB = 1024
MiB = 1024 * KiB


class SmallDisk:
    """A tmpfs of a given size at ``path``, made larger (as if space were freed) with :meth:`grow`."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        path.mkdir(parents=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "levere-test", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")

    def grow(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[Callable[[str, int], SmallDisk]]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    made: list[SmallDisk] = []

    def mount(name: str, size: int) -> SmallDisk:
        made.append(SmallDisk(tmp_path / name, size))
        return made[-1]

    yield mount
    for disk in made:
        disk.unmount()


@pytest.fixture
def area_disk(disks: Callable[[str, int], SmallDisk]) -> SmallDisk:
    return disks("area", 1 * MiB)


@pytest.fixture
def settings(settings: Settings, area_disk: SmallDisk) -> Settings:
    area = LocalSpec(type="local", root=area_disk.path, backend_id="area")
    return settings.model_copy(update={"tiers": TierSettings(area=area)})


def _staged_bytes(disk: SmallDisk) -> int:
    staging = disk.path / ".levere-staging"
    return sum(p.stat().st_size for p in staging.glob("*.part")) if staging.is_dir() else 0


def _leftovers(disk: SmallDisk) -> list[str]:
    """Files in the area's helper folders that belong to no upload in progress."""
    tmp = disk.path / ".levere-tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def _offset(http: httpx.Client, c: Crew, url: str) -> int:
    head = http.head(url, headers={**c.headers(), **TUS})
    assert head.status_code == 200, head.text
    return int(head.headers["Upload-Offset"])


def _five_bytes(http: httpx.Client, c: Crew, name: str) -> None:
    """A 5-byte file delivered the way the CLI sends small files (a tar batch), and by tus."""
    batch = send_batch(http, c, "RUN42", tar_of({f"{name}.txt": b"hello"}))
    assert batch.status_code == 200, batch.text
    assert [f["path"] for f in batch.json()["stored"]] == [f"{name}.txt"]
    created = tus_create(http, c, "RUN42", f"{name}.tus", 5)
    assert created.status_code == 201, created.text
    patched = tus_patch(http, c, created.headers["Location"], 0, b"world")
    assert patched.status_code == 204, patched.text


def test_a_tus_patch_into_a_full_area_is_507_and_resumes_from_its_durable_offset(
    live_server: LiveServer, ctx: Context, area_disk: SmallDisk
) -> None:
    c = crew(ctx)
    data = os.urandom(3 * MiB)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        created = tus_create(http, c, "RUN42", "big.bin", len(data), extra={"md5": digests(data)[0]})
        url = created.headers["Location"]
        first = tus_patch(http, c, url, 0, data[: 512 * KiB])
        assert first.status_code == 204, first.text

        full = tus_patch(http, c, url, 512 * KiB, data[512 * KiB : 2 * MiB])
        assert full.status_code == 507
        body = full.json()
        assert body["error"] == "storage_full"
        assert "storage is full" in body["message"] and "big.bin" in body["message"]
        assert body["details"]["offset"] == 512 * KiB
        assert full.headers["Upload-Offset"] == str(512 * KiB)
        # the failed request left nothing: the upload holds what it held before it
        assert _offset(http, c, url) == 512 * KiB
        assert _staged_bytes(area_disk) == 512 * KiB

        # small deliveries work at once: the failed chunk's space is free again
        _five_bytes(http, c, "right-after")

        area_disk.grow(8 * MiB)  # room is made
        rest = tus_patch(http, c, url, 512 * KiB, data[512 * KiB :])
        assert rest.status_code == 204, rest.text
        md5, sha256 = digests(data)
        assert rest.headers["Levere-Checksum"] == f"md5={md5},sha256={sha256}"
    assert (area_disk.path / c.project / "RUN42" / "big.bin").read_bytes() == data
    assert _staged_bytes(area_disk) == 0


def test_a_batch_into_a_full_area_is_507_keeps_the_files_before_and_leaves_no_trace(
    live_server: LiveServer, ctx: Context, area_disk: SmallDisk
) -> None:
    c = crew(ctx)
    fits = {f"small/{i}.txt": os.urandom(10 * KiB) for i in range(4)}
    too_big = {"big/one.bin": os.urandom(900 * KiB), "big/two.bin": os.urandom(900 * KiB)}
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        answer = send_batch(http, c, "RUN42", tar_of({**fits, **too_big}))
        assert answer.status_code == 507, answer.text
        assert answer.json()["error"] == "storage_full"
        assert "no space left" in answer.json()["message"]
        delivery = http.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()
        stored = {f["path"] for f in delivery["files"]}
        assert set(fits) <= stored and "big/two.bin" not in stored
        assert _leftovers(area_disk) == []
        _five_bytes(http, c, "after-batch")


def test_levere_deliver_says_the_storage_is_full_and_stops(
    ctx: Context, area_disk: SmallDisk, tmp_path: Path
) -> None:
    made = make_env(ctx, tmp_path)
    env = next(made)
    try:
        # the first PATCH carries 23 MiB, far more than the socket buffers hold when the service
        # answers: the client still reads the answer
        run = make_run(tmp_path / "230601_A00123_0042", {"reads_R1.fastq": 24 * MiB})
        started = time.monotonic()
        stopped = levere(env.staff, "deliver", env.project, str(run))
        took = time.monotonic() - started
        assert stopped.returncode == StorageFull.exit_code, stopped.stderr
        assert "the server's storage is full" in stopped.stderr
        assert len(stopped.stderr.strip().splitlines()) == 1
        # it stopped rather than retried: one failed PATCH, and no retry's back-off waits
        assert env.traffic.calls("PATCH", "/api/tus/") == 1
        assert took < 20
        assert _staged_bytes(area_disk) == 0

        area_disk.grow(64 * MiB)
        again = levere(env.staff, "deliver", env.project, str(run))
        assert again.returncode == 0, again.stderr
        assert (area_disk.path / env.project / run.name / "reads_R1.fastq").read_bytes() == (
            run / "reads_R1.fastq"
        ).read_bytes()
    finally:
        made.close()


def _run_row(ctx: Context, run_id: str) -> JobRun:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


def test_a_sync_into_a_full_long_term_tier_says_so_on_the_job(
    ctx: Context, settings: Settings, disks: Callable[[str, int], SmallDisk]
) -> None:
    s = setup_project(ctx)
    files = random_files(6, 100 * KiB)
    deliver(ctx, s, "RUN1", files)
    longterm = disks("longterm", 256 * KiB)
    spec = LocalSpec(type="local", root=longterm.path, backend_id="longterm")
    worker = Context.build(
        settings.model_copy(
            update={
                "tiers": TierSettings(area=settings.tiers.area, longterm=spec),
                "sync": SyncSettings(retries=0, threads=1, processes=1),
            }
        )
    )
    build_queue(worker, immediate=True)
    try:
        job = sync.request_sync(worker, s.world.helpdesk, s.project)
        run = _run_row(ctx, job.id)
        assert run.state == "failed"
        assert "long-term storage is full" in run.error and "Traceback" not in run.error
        states = replica_states(ctx, s, "longterm")
        assert "failed" in states.values()
        assert not list((longterm.path / ".levere-tmp").glob("*"))

        longterm.grow(4 * MiB)  # room is made: the same sync finishes
        again = sync.request_sync(worker, s.world.helpdesk, s.project)
        assert _run_row(ctx, again.id).state == "done"
        assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    finally:
        worker.close()


def test_a_restore_into_a_full_area_says_so_on_the_job(
    ctx: Context, settings: Settings, area_disk: SmallDisk
) -> None:
    s = setup_project(ctx)
    files = random_files(4, 100 * KiB)
    deliver(ctx, s, "RUN1", files)
    worker = Context.build(
        settings.model_copy(update={"sync": SyncSettings(retries=0, threads=1, processes=1)})
    )
    build_queue(worker, immediate=True)
    try:
        sync.request_sync(worker, s.world.helpdesk, s.project)
        sync.free(worker, s.world.pi, s.project, ["RUN1"])
        filler = area_disk.path / "filler"  # something else takes the area's disk meanwhile
        filler.write_bytes(b"\0" * (area_disk.free() - 150 * KiB))
        job = sync.request_restore(worker, s.world.pi, s.project, ["RUN1"])
        run = _run_row(ctx, job.id)
        assert run.state == "failed"
        assert "the project area is full" in run.error
        assert not list((area_disk.path / ".levere-tmp").glob("*"))

        filler.unlink()  # room is made: the restore goes through
        again = sync.request_restore(worker, s.world.pi, s.project, ["RUN1"])
        assert _run_row(ctx, again.id).state == "done"
        assert set(replica_states(ctx, s, "area").values()) == {"present"}
        for path, data in files.items():
            assert (area_disk.path / s.project / "RUN1" / path).read_bytes() == data
    finally:
        worker.close()
