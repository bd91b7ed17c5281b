"""Long-term copies of released sensitive data: the secure zone's Crypt4GH bodies copied as they are
(headers stay in the database), write-once and verified against the body's checksum; ``levere
verify`` finds and repairs damage on either side; free and restore; only released deliveries go;
long-term never holds a 32-byte stretch of the plaintext."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from levere.config import Settings, TierSettings
from levere.context import Context
from levere.crypt4gh import PrivateKey
from levere.db.models import ApiToken, AuditEvent, JobRun, Replica, StoredFile, User
from levere.domain.errors import AlreadyExists, Conflict
from levere.domain.tiers import Tier
from levere.jobs.queue import build_queue
from levere.services import projects, scrub, sync, write_once, zone_release
from levere.storage import S3Spec
from tests.crypt4gh import oarepo_reader, spec_c4gh
from tests.helpers import auth, token_for
from tests.plaintext_scan import find_windows, scan_paths
from tests.secure.zone_support import USERS, Zone, add_delivery, make_zone
from tests.storage.conftest import raw_s3, s3_params

FASTQ = b"@read1\nACGTACGTTTGAACGT\n+\nIIIIIIIIIIIIIIII\n" * 9000  # several 64 KiB segments
FILES = {"lane1/s1.fastq": FASTQ, "notes.txt": os.urandom(100) + b" a note\n"}
CRYPT4GH = str(Path(sys.executable).parent / "crypt4gh")


def _tier_dir(ctx: Context, tier: str) -> Path:
    return ctx.settings.data_dir / "storage" / tier  # the embedded default's layout


def _stored(ctx: Context, zone: Zone) -> dict[str, tuple[StoredFile, dict[str, Replica]]]:
    """``{DELIVERY/PATH: (file, {tier: replica})}`` of the zone's project."""
    with ctx.tx() as session:
        project = projects.get_project(session, zone.project)
        files = session.execute(select(StoredFile).where(StoredFile.project_id == project.id)).scalars()
        found: dict[str, tuple[StoredFile, dict[str, Replica]]] = {}
        for file in files:
            replicas = session.execute(select(Replica).where(Replica.file_id == file.id)).scalars()
            name = next(k for k in zone.files if k.endswith("/" + file.path))
            found[name] = (file, {r.tier: r for r in replicas})
        return found


def _states(ctx: Context, zone: Zone, tier: str) -> dict[str, str]:
    return {name: r[tier].state for name, (_, r) in _stored(ctx, zone).items() if tier in r}


def _released(ctx: Context) -> Zone:
    zone = make_zone(ctx, FILES)
    zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    return zone


def _last_run(ctx: Context, kind: str) -> JobRun:
    with ctx.tx() as session:
        run = session.execute(
            select(JobRun).where(JobRun.kind == kind).order_by(JobRun.created_at.desc()).limit(1)
        ).scalar_one()
        session.expunge(run)
        return run


def _no_plaintext_on_longterm(ctx: Context, zone: Zone) -> None:
    folder = _tier_dir(ctx, "longterm")
    assert any(p.is_file() for p in folder.rglob("*"))
    for plaintext in zone.files.values():
        assert scan_paths([folder], plaintext) == []


def test_a_released_delivery_goes_to_long_term_as_its_stored_bodies(ctx: Context) -> None:
    zone = _released(ctx)  # the project syncs automatically: release starts it
    run = _last_run(ctx, "sync")
    assert (run.state, run.files_done) == ("done", len(FILES))
    for name, (file, replicas) in _stored(ctx, zone).items():
        assert replicas["longterm"].state == "present" and replicas["longterm"].verified_at is not None
        body = (_tier_dir(ctx, "secure") / replicas["secure"].key).read_bytes()
        copy = _tier_dir(ctx, "longterm") / replicas["longterm"].key
        # byte for byte the body the secure zone holds, checked against its own checksum
        assert copy.read_bytes() == body
        assert (len(body), hashlib.sha256(body).hexdigest()) == (file.body_size, file.body_sha256)
        assert file.sha256 == hashlib.sha256(zone.files[name]).hexdigest() != file.body_sha256
        longterm = ctx.backend(Tier.LONGTERM)  # write-once: neither replaced nor deleted
        with longterm.open_writer(replicas["longterm"].key) as writer:
            writer.write(b"something else")
            with pytest.raises(AlreadyExists):
                writer.commit()
        with pytest.raises(Conflict, match="write-once"):
            longterm.delete(replicas["longterm"].key)
        assert copy.read_bytes() == body
    _no_plaintext_on_longterm(ctx, zone)
    with ctx.tx() as session:
        actions = set(session.execute(select(AuditEvent.action)).scalars())
    assert {"delivery.released", "sync.requested"} <= actions


def test_a_delivery_still_on_its_shared_disk_is_not_synced(ctx: Context) -> None:
    zone = make_zone(ctx, FILES)
    with pytest.raises(Conflict) as refused:
        sync.request_sync(ctx, zone.world.helpdesk, zone.project, zone.delivery)
    assert "still on its shared disk" in refused.value.message
    assert refused.value.details == {"state": "not_released"}
    # a project-wide sync leaves it out, and nothing reaches long-term
    sync.request_sync(ctx, zone.world.helpdesk, zone.project)
    assert _states(ctx, zone, "longterm") == {}
    assert not any(p.is_file() for p in _tier_dir(ctx, "longterm").rglob("*"))
    # released, it goes; another delivery still on the disk does not
    add_delivery(ctx, zone, "RUN2", {"other.txt": b"not released yet\n" * 4})
    zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    sync.request_sync(ctx, zone.world.helpdesk, zone.project)
    assert _states(ctx, zone, "longterm") == {f"RUN1/{p}": "present" for p in FILES}


def test_verify_passes_and_repairs_a_damaged_copy_on_either_side_from_the_other(ctx: Context) -> None:
    zone = _released(ctx)
    scrub.request_verify(ctx, zone.world.helpdesk, zone.project)
    run = _last_run(ctx, "verify")
    assert run.state == "done" and run.report["damaged"] == [], run.report
    stored = _stored(ctx, zone)
    file, replicas = stored["RUN1/lane1/s1.fastq"]
    body = (_tier_dir(ctx, "secure") / replicas["secure"].key).read_bytes()

    # bit rot on the long-term copy: found by the body's checksum, rewritten from the secure zone
    copy = _tier_dir(ctx, "longterm") / replicas["longterm"].key
    copy.chmod(0o644)
    copy.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    scrub.request_verify(ctx, zone.world.helpdesk, zone.project)
    run = _last_run(ctx, "verify")
    assert [d["path"] for d in run.report["damaged"]] == [f"{zone.project}/RUN1/lane1/s1.fastq"]
    assert run.report["damaged"][0]["repaired"], run.report
    assert copy.read_bytes() == body
    assert _states(ctx, zone, "longterm")["RUN1/lane1/s1.fastq"] == "present"

    # and a damaged secure-zone body is rewritten from long-term
    secure = _tier_dir(ctx, "secure") / replicas["secure"].key
    secure.write_bytes(body[:100])
    scrub.request_verify(ctx, zone.world.helpdesk, zone.project)
    assert _last_run(ctx, "verify").report["damaged"][0]["repaired"]
    assert secure.read_bytes() == body and hashlib.sha256(body).hexdigest() == file.body_sha256
    _no_plaintext_on_longterm(ctx, zone)


def _zone_token(ctx: Context, user: User) -> dict[str, str]:
    """A token as a sign-in with a one-time code issues it (the zone's routes take no other)."""
    token = token_for(ctx, user)
    with ctx.tx() as session:
        session.execute(update(ApiToken).where(ApiToken.user_id == user.id).values(second_factor=True))
    return auth(token)


def test_free_and_restore_of_zone_files_and_downloads_on_the_way(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    zone = _released(ctx)
    key = PrivateKey.generate()
    sec = tmp_path / "me.sec"
    sec.write_text(key.to_crypt4gh())
    headers = _zone_token(ctx, zone.world.pi)
    url = f"/api/secure/projects/{USERS}/deliveries/RUN1/data/lane1/s1.fastq"

    def download() -> bytes:
        answer = client.get(url, params={"pubkey": key.public_key.to_pem()}, headers=headers)
        assert answer.status_code == 200, answer.text
        return subprocess.run(
            [CRYPT4GH, "decrypt", "--sk", str(sec)], input=answer.content, capture_output=True,
            check=True, timeout=60,
        ).stdout  # fmt: skip

    before = _stored(ctx, zone)
    bodies = {n: (_tier_dir(ctx, "secure") / r["secure"].key).read_bytes() for n, (_, r) in before.items()}
    freed = sync.free(ctx, zone.world.pi, zone.project, ["RUN1"])
    assert freed.freed_files == len(FILES)
    assert _states(ctx, zone, "secure") == {n: "freed" for n in zone.files}
    assert not any(p.is_file() for p in (_tier_dir(ctx, "secure") / zone.project).rglob("*"))
    assert download() == FASTQ  # read from the long-term copy meanwhile: the same body

    job = sync.request_restore(ctx, zone.world.pi, zone.project, ["RUN1"])
    run = _last_run(ctx, "restore")
    assert (run.id, run.state, run.files_done) == (job.id, "done", len(FILES))
    for name, (_, replicas) in _stored(ctx, zone).items():
        assert replicas["secure"].state == "present"
        assert (_tier_dir(ctx, "secure") / replicas["secure"].key).read_bytes() == bodies[name]
    assert download() == FASTQ
    with ctx.tx() as session:
        actions = list(session.execute(select(AuditEvent.action)).scalars())
    assert {"data.freed", "data.restore_requested", "data.restored"} <= set(actions)
    _no_plaintext_on_longterm(ctx, zone)


def test_a_download_from_the_long_term_copy_and_after_restore_opens_with_the_specification_and_a_third_party_reader(
    ctx: Context, client: TestClient
) -> None:
    zone = _released(ctx)
    secret = spec_c4gh.new_secret_key()
    pubkey = spec_c4gh.public_key_file(spec_c4gh.public_key(secret))
    headers = _zone_token(ctx, zone.world.pi)

    def download(path: str) -> bytes:
        url = f"/api/secure/projects/{USERS}/deliveries/RUN1/data/{path}"
        answer = client.get(url, params={"pubkey": pubkey}, headers=headers)
        assert answer.status_code == 200, answer.text
        plaintext = spec_c4gh.decrypt(answer.content, secret)
        assert oarepo_reader.decrypt(answer.content, secret) == plaintext  # a third-party reader agrees
        return plaintext

    sync.free(ctx, zone.world.pi, zone.project, ["RUN1"])
    assert _states(ctx, zone, "secure") == {n: "freed" for n in zone.files}
    assert download("lane1/s1.fastq") == FASTQ  # the long-term body under a header for this key
    sync.request_restore(ctx, zone.world.pi, zone.project, ["RUN1"])
    assert _states(ctx, zone, "secure") == {n: "present" for n in zone.files}
    assert {path: download(path) for path in FILES} == FILES


# --- long-term on S3 (radosgw) ---------------------------------------------------------------------


@pytest.fixture
def s3_ctx(settings: Settings) -> Iterator[tuple[Context, dict[str, Any], str]]:
    """A context whose long-term tier is a write-once bucket on a real radosgw (the others local)."""
    params = s3_params()
    if params is None:
        pytest.skip("S3 not configured: set LEVERE_TEST_S3_* (scripts/s3-server.sh start DIR PORT)")
    bucket = f"levere-zlt-{uuid.uuid4().hex[:12]}"
    spec = S3Spec(
        type="s3", backend_id="lt-s3", bucket=bucket, prefix="lt/", retention_mode="compliance",
        retention_days=1, **params,
    )  # fmt: skip
    ctx = Context.build(settings.model_copy(update={"tiers": TierSettings(longterm=spec)}))
    build_queue(ctx, immediate=True)
    assert write_once.prepare(ctx) == []
    yield ctx, params, bucket
    ctx.close()


def test_on_s3_the_long_term_object_is_the_body_verified_and_restored_from(
    s3_ctx: tuple[Context, dict[str, Any], str],
) -> None:
    ctx, params, bucket = s3_ctx
    zone = _released(ctx)
    raw = raw_s3(params)
    stored = _stored(ctx, zone)
    bodies = {}
    for name, (file, replicas) in stored.items():
        copy = replicas["longterm"]
        assert copy.state == "present" and copy.version_id
        got = raw.get_object(Bucket=bucket, Key=f"lt/{copy.key}", VersionId=copy.version_id)["Body"].read()
        bodies[name] = (_tier_dir(ctx, "secure") / replicas["secure"].key).read_bytes()
        assert got == bodies[name] and hashlib.sha256(got).hexdigest() == file.body_sha256
        assert not find_windows(got, zone.files[name])
    job = scrub.request_verify(ctx, zone.world.helpdesk, zone.project)
    with ctx.tx() as session:
        run = session.get(JobRun, job.id)
        assert run is not None
        assert (run.state, run.report["damaged_found"], run.report["ok"]) == ("done", 0, 2 * len(FILES))
    sync.free(ctx, zone.world.pi, zone.project, ["RUN1"])
    sync.request_restore(ctx, zone.world.pi, zone.project, ["RUN1"])
    for name, (_, replicas) in _stored(ctx, zone).items():
        assert replicas["secure"].state == "present"
        assert (_tier_dir(ctx, "secure") / replicas["secure"].key).read_bytes() == bodies[name]
