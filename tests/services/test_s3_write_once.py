"""Long-term storage on S3 is write-once by default: a versioned bucket with object lock, each copy
under a retention, and levere reading back the version it wrote. Against a real radosgw."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from levere.config import Settings, TierSettings
from levere.context import Context
from levere.db.models import JobRun
from levere.domain.errors import ConfigurationError
from levere.jobs.queue import build_queue
from levere.services import audit_anchors, downloads, scrub, sync, write_once
from levere.storage import S3Backend, S3Spec
from tests.storage.conftest import raw_s3, s3_params
from tests.sync_support import area_path, deliver, random_files, replica_states, replicas, setup_project


@pytest.fixture
def s3() -> dict[str, Any]:
    params = s3_params()
    if params is None:
        pytest.skip("S3 not configured: set LEVERE_TEST_S3_* (scripts/s3-server.sh start DIR PORT)")
    return params


def spec(s3: dict[str, Any], bucket: str, **changes: Any) -> S3Spec:
    return S3Spec(type="s3", backend_id="lt-s3", bucket=bucket, prefix="lt/", **s3, **changes)


@pytest.fixture
def make_ctx(settings: Settings) -> Iterator[Callable[..., Context]]:
    made: list[Context] = []

    def build(**changes: Any) -> Context:
        ctx = Context.build(settings.model_copy(update=changes))
        build_queue(ctx, immediate=True)
        made.append(ctx)
        return ctx

    yield build
    for ctx in made:
        ctx.close()


def new_bucket() -> str:
    return f"levere-wo-{uuid.uuid4().hex[:12]}"


def test_a_synced_copy_survives_delete_and_overwrite_and_still_verifies(
    ctx: Context, s3: dict[str, Any], make_ctx: Callable[..., Context]
) -> None:
    bucket = new_bucket()
    # compliance for a day: nobody, levere's credentials included, can remove these versions
    worker = make_ctx(
        tiers=TierSettings(longterm=spec(s3, bucket, retention_mode="compliance", retention_days=1))
    )
    assert write_once.prepare(worker) == []  # the bucket did not exist: levere made it
    raw = raw_s3(s3)
    assert raw.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lock = raw.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"

    s = setup_project(ctx)
    files = random_files(3, 3000) | {"big.bam": os.urandom(12 * 1024 * 1024)}  # a multipart upload
    deliver(ctx, s, "RUN1", files)
    sync.request_sync(worker, s.world.helpdesk, s.project)
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    recorded = {r.key: r.version_id for r in replicas(ctx, s, "longterm")}
    assert all(recorded.values())

    # someone with levere's own credentials tries to destroy the copies
    small, big = f"{s.project}/RUN1/reads/sample_0000.fastq", f"{s.project}/RUN1/big.bam"
    raw.delete_object(Bucket=bucket, Key=f"lt/{small}")  # only a delete marker
    raw.put_object(Bucket=bucket, Key=f"lt/{big}", Body=b"rotten")  # only a newer version
    for key in (small, big):
        head = raw.head_object(Bucket=bucket, Key=f"lt/{key}", VersionId=recorded[key])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        with pytest.raises(ClientError, match="AccessDenied"):
            raw.delete_object(
                Bucket=bucket, Key=f"lt/{key}", VersionId=recorded[key], BypassGovernanceRetention=True
            )
    with pytest.raises(ClientError):
        raw.head_object(Bucket=bucket, Key=f"lt/{small}")  # the key itself looks gone

    # the versions levere wrote are intact: verify finds no damage and changes nothing
    job = scrub.request_verify(worker, s.world.helpdesk, s.project)
    with worker.tx() as session:
        run = session.get(JobRun, job.id)
        assert run is not None
        assert (run.state, run.report["damaged_found"], run.report["ok"]) == ("done", 0, len(files) * 2)
    assert {r.key: r.version_id for r in replicas(ctx, s, "longterm")} == recorded
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}

    # downloads from long-term storage read the original bytes, and so does a restore
    sync.free(worker, s.world.pi, s.project, ["RUN1"])
    assert not area_path(ctx, big).exists()  # type: ignore[attr-defined]
    for path in ("big.bam", "reads/sample_0000.fastq"):
        readable = downloads.open_file(worker, s.world.pi, s.project, "RUN1", path)
        assert readable.tier == "longterm"
        got = hashlib.sha256(b"".join(readable.read())).hexdigest()
        assert got == hashlib.sha256(files[path]).hexdigest()
    sync.request_restore(worker, s.world.pi, s.project, ["RUN1"])
    for path, data in files.items():
        assert area_path(ctx, f"{s.project}/RUN1/{path}").read_bytes() == data  # type: ignore[attr-defined]

    # audit anchors on this tier are held the same way
    (anchor,) = audit_anchors.write_anchor(worker)
    head = raw.head_object(Bucket=bucket, Key=f"lt/{audit_anchors.key_for(anchor.seq)}")
    assert head["ObjectLockMode"] == "COMPLIANCE"


def test_start_up_refuses_a_long_term_bucket_without_object_lock(
    s3: dict[str, Any], make_ctx: Callable[..., Context]
) -> None:
    bucket = new_bucket()
    S3Backend(bucket=bucket, **s3).ensure_bucket()  # made by hand, without object lock
    with pytest.raises(ConfigurationError, match=f"bucket '{bucket}' exists without object lock"):
        write_once.prepare(make_ctx(tiers=TierSettings(longterm=spec(s3, bucket))))
    # said in so many words, levere starts on it, warning
    unprotected = make_ctx(tiers=TierSettings(longterm=spec(s3, bucket, write_once=False)))
    (warning,) = write_once.prepare(unprotected)
    assert "long-term storage is not write-once" in warning and "can delete or overwrite" in warning
    # the working area on S3 needs none of it
    area = make_ctx(tiers=TierSettings(area=spec(s3, bucket)))
    assert write_once.prepare(area) == []


def _start(command: str, env: dict[str, str]) -> tuple[bool, str]:
    """Run ``levere COMMAND`` until it says it is ready (then stop it) or exits: (started, stderr)."""
    args = [sys.executable, "-m", "levere.cli.main", command]
    if command == "serve":
        args += ["--port", "0", "--no-worker"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(60, proc.kill)  # never hang the suite
    guard.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        while line := proc.stderr.readline():
            seen.append(line)
            if line.startswith(("levere serving", "levere worker with")):
                proc.kill()
                proc.wait()
                return True, "".join(seen)
        return proc.wait() == 0, "".join(seen) + f"(exit code {proc.returncode})"
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_to_start_without_object_lock(
    command: str, s3: dict[str, Any], settings: Settings, tmp_path: Any
) -> None:
    bucket = new_bucket()
    S3Backend(bucket=bucket, **s3).ensure_bucket()
    longterm = (
        f'{{"type": "s3", "backend_id": "lt-s3", "bucket": "{bucket}", "endpoint_url": "{s3["endpoint_url"]}", '
        f'"access_key": "{s3["access_key"]}", "secret_key": "{s3["secret_key"]}"'
    )
    env = {
        **os.environ,
        "LEVERE_DATA_DIR": str(tmp_path / "data"),
        "LEVERE_DATABASE_URL": settings.resolved_database_url,
        "LEVERE_QUEUE_URL": "memory",
        "LEVERE_TIERS__LONGTERM": longterm + "}",
    }
    started, stderr = _start(command, env)
    assert not started and stderr.endswith("(exit code 2)"), stderr
    last = stderr.strip().splitlines()[-2]  # after the log lines of the migrations, if any
    assert "exists without object lock" in last and "write_once = false" in last
    assert "Traceback" not in stderr and s3["secret_key"] not in stderr

    started, stderr = _start(command, env | {"LEVERE_TIERS__LONGTERM": longterm + ', "write_once": false}'})
    assert started, stderr
    assert "warning:" in stderr and "long-term storage is not write-once" in stderr
