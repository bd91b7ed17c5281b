"""Downloads read from any intact copy: a file gone from or damaged on the working area is served
from its long-term copy (local folder or S3), through the API (ranges too) and ``levere download``;
a file with no intact copy anywhere says so, naming the file and each tier."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.config import Settings, TierSettings
from levere.context import Context
from levere.db.models import AuditEvent
from levere.domain.tiers import Tier
from levere.services import sync
from levere.storage import S3Spec
from tests.cli_live import Service, Traffic, cli_env, levere, one_line_error, tree
from tests.conftest import LiveServer
from tests.deliveries_support import delivery_bucket, raw_s3, s3_params, s3_spec, storage_kind
from tests.helpers import auth, token_for
from tests.sync_support import (
    Setup,
    area_path,
    deliver,
    longterm_path,
    replica_states,
    replicas,
    setup_project,
)

__all__ = ["delivery_bucket"]

MiB = 1024 * 1024
FILES = {"lane1/big.fastq": os.urandom(3 * MiB + 7), "small.txt": b"a few bytes of text\n"}


@pytest.fixture(params=["local", "s3"])
def longterm_kind(request: pytest.FixtureRequest) -> str:
    return storage_kind(request)


@pytest.fixture
def settings(settings: Settings, longterm_kind: str, request: pytest.FixtureRequest) -> Settings:
    if longterm_kind == "local":
        return settings
    # not write-once: these tests damage copies behind levere's back, which object lock forbids
    # (tests/services/test_s3_write_once.py shows that an overwritten write-once copy still reads back intact)
    spec = s3_spec(request, "longterm-s3").model_copy(update={"write_once": False})
    return settings.model_copy(update={"tiers": TierSettings(longterm=spec)})


@pytest.fixture
def synced(ctx: Context) -> Setup:
    """A sealed delivery RUN1 with a verified long-term copy of every file."""
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", FILES)
    sync.request_sync(ctx, s.world.helpdesk, s.project)
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    return s


def _key(ctx: Context, s: Setup, tier: str, path: str) -> str:
    return next(r.key for r in replicas(ctx, s, tier) if r.key.endswith(f"/RUN1/{path}"))


def remove(ctx: Context, s: Setup, tier: str, path: str) -> None:
    ctx.backend(Tier(tier)).delete(_key(ctx, s, tier, path), force=True)


def corrupt(ctx: Context, s: Setup, tier: str, path: str, same_size: bool = True) -> None:
    """Flip the copy's first byte (or cut its last), behind levere's back."""
    key = _key(ctx, s, tier, path)
    data = bytearray(FILES[path])
    if same_size:
        data[0] ^= 0xFF
    else:
        del data[-1]
    spec = ctx.settings.tiers.longterm if tier == "longterm" else None
    if isinstance(spec, S3Spec):
        params = s3_params()
        assert params is not None
        raw_s3(params).put_object(Bucket=spec.bucket, Key=spec.prefix + key, Body=bytes(data))
        return
    local = Path(longterm_path(ctx, key) if tier == "longterm" else area_path(ctx, key))
    local.chmod(0o600)  # long-term copies are read-only
    local.write_bytes(bytes(data))


def damage_events(ctx: Context) -> list[dict[str, Any]]:
    with ctx.tx() as session:
        rows = session.execute(
            select(AuditEvent.after).where(AuditEvent.action == "replica.damaged")
        ).scalars()
        return [dict(r or {}) for r in rows]


def url(s: Setup, path: str) -> str:
    return f"/api/projects/{s.project}/data/RUN1/{path}"


def test_a_file_missing_from_the_area_is_read_from_long_term(
    ctx: Context, client: TestClient, synced: Setup
) -> None:
    s = synced
    remove(ctx, s, "area", "lane1/big.fastq")
    member = auth(token_for(ctx, s.world.pi))
    r = client.get(url(s, "lane1/big.fastq"), headers=member)
    assert r.status_code == 200, r.text
    assert r.content == FILES["lane1/big.fastq"]
    assert r.headers["ETag"] == f'"{hashlib.sha256(FILES["lane1/big.fastq"]).hexdigest()}"'
    part = client.get(url(s, "lane1/big.fastq"), headers={**member, "Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == FILES["lane1/big.fastq"][1000:2000]
    # the missing copy is recorded (and audited), so verify or sync can repair it
    assert replica_states(ctx, s, "area")["lane1/big.fastq"] == "damaged"
    assert [e["tier"] for e in damage_events(ctx)] == ["area"]
    assert damage_events(ctx)[0]["reason"] == "missing"


def test_a_copy_of_the_wrong_size_is_passed_over_for_ranges_too(
    ctx: Context, client: TestClient, synced: Setup
) -> None:
    s = synced
    corrupt(ctx, s, "area", "small.txt", same_size=False)
    member = auth(token_for(ctx, s.world.pi))
    r = client.get(url(s, "small.txt"), headers={**member, "Range": "bytes=2-5"})
    assert r.status_code == 206 and r.content == FILES["small.txt"][2:6]
    assert replica_states(ctx, s, "area")["small.txt"] == "damaged"


def test_a_damaged_area_copy_is_never_completed_and_the_retry_reads_long_term(
    ctx: Context, live_server: LiveServer, synced: Setup
) -> None:
    s = synced
    corrupt(ctx, s, "area", "lane1/big.fastq")
    member = auth(token_for(ctx, s.world.pi))
    data = FILES["lane1/big.fastq"]
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        got = bytearray()
        broken_off = pytest.raises(httpx.HTTPError)  # before its last piece
        with broken_off, http.stream("GET", url(s, "lane1/big.fastq"), headers=member) as response:
            for chunk in response.iter_bytes():
                got += chunk
        assert len(got) < len(data)
        again = http.get(url(s, "lane1/big.fastq"), headers=member)
    assert again.status_code == 200 and again.content == data
    assert replica_states(ctx, s, "area")["lane1/big.fastq"] == "damaged"


def test_a_file_damaged_on_every_tier_says_so_naming_the_file_and_tiers(
    ctx: Context, client: TestClient, synced: Setup
) -> None:
    s = synced
    remove(ctx, s, "area", "small.txt")
    corrupt(ctx, s, "longterm", "small.txt", same_size=False)
    r = client.get(url(s, "small.txt"), headers=auth(token_for(ctx, s.world.pi)))
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "no_intact_copy"
    message = body["message"]
    assert "RUN1/small.txt has no intact copy on any tier" in message
    assert "the project area: damaged (missing)" in message
    assert f"long-term storage: damaged ({len(FILES['small.txt']) - 1} bytes instead of" in message
    assert "restored" not in message


# --- levere download ------------------------------------------------------------------------------


@pytest.fixture
def service(ctx: Context) -> Iterator[Service]:
    running = Service(ctx, Traffic())
    running.start()
    yield running
    running.stop()


def download(
    ctx: Context, s: Setup, service: Service, tmp_path: Path, what: str
) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path, service.url, token_for(ctx, s.world.pi), "pi")
    return levere(env, "download", s.project, what, "--to", str(tmp_path / "got"))


def test_levere_download_reads_past_damaged_and_missing_area_copies(
    ctx: Context, synced: Setup, service: Service, tmp_path: Path
) -> None:
    s = synced
    corrupt(ctx, s, "area", "lane1/big.fastq")
    remove(ctx, s, "area", "small.txt")
    done = download(ctx, s, service, tmp_path, "RUN1")
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "got" / "RUN1") == FILES  # verified by the client against the manifest
    assert set(replica_states(ctx, s, "area").values()) == {"damaged"}


def test_levere_download_of_a_file_damaged_everywhere_fails_naming_it(
    ctx: Context, synced: Setup, service: Service, tmp_path: Path
) -> None:
    s = synced
    corrupt(ctx, s, "area", "lane1/big.fastq")  # same sizes: found only by reading them through
    corrupt(ctx, s, "longterm", "lane1/big.fastq")
    failed = download(ctx, s, service, tmp_path, "RUN1/lane1/big.fastq")
    message = one_line_error(failed)
    assert failed.returncode == 5
    assert "RUN1/lane1/big.fastq has no intact copy on any tier" in message
    assert "the project area: damaged" in message and "long-term storage: damaged" in message
    assert not (tmp_path / "got" / "big.fastq").exists()
