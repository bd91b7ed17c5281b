"""Tar batches of small files into a delivery on a shared disk: each member encrypted under its own
data key by the secure tier's layer, checked against its PAX checksums, recorded with its body's
checksum and a header for the disk, counted on the disk's quota; refused where uploads are."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from levere.api.app import create_app
from levere.config import Settings, TierSettings
from levere.context import Context
from levere.crypt4gh import iter_plaintext
from levere.crypt4gh.body import body_size
from levere.db.models import (
    AuditEvent,
    Delivery,
    FileHeader,
    Quota,
    Replica,
    SecureProject,
    StoredFile,
    Upload,
    utcnow,
)
from levere.domain.errors import Conflict
from levere.domain.secure import HeaderHolder
from levere.domain.tiers import Tier
from levere.services import batches, zone_batches, zone_files, zone_release
from levere.services.batch_reservation import DiskQuota
from levere.services.deliveries import reclaim_dead_batches
from levere.services.zone_files import chunk_reader
from levere.storage import S3Spec
from levere.storage.encrypting import EncryptingBackend
from tests.deliveries_support import tar_of
from tests.secure.upload_support import Zone, has_window, make_zone, stored_bytes
from tests.storage.conftest import raw_s3, s3_params

KiB = 1024


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _batch(zone: Zone, client: TestClient, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        f"/api/projects/{zone.project}/deliveries/RUN1/batch",
        content=body,
        headers={**(headers or zone.staff), "Content-Type": "application/x-tar"},
    )


def _run(count: int) -> dict[str, bytes]:
    """Small files of many sizes (empty, under a segment, several segments), and their md5sum.txt."""
    sizes = [0, 1, 33, 64 * KiB, 64 * KiB + 1, 150 * KiB]
    files = {f"s{n // 50}/f{n:04d}.txt": os.urandom(sizes[n % len(sizes)] or 0) for n in range(count)}
    files["md5sum.txt"] = "".join(f"{_md5(data)}  {path}\n" for path, data in files.items()).encode()
    return files


def _objects(ctx: Context) -> dict[str, bytes]:
    root = Path(ctx.settings.tier_spec(Tier.SECURE.value).root)  # type: ignore[union-attr]
    return {str(p.relative_to(root)): data for p, data in stored_bytes(ctx)}


def _headers(ctx: Context) -> list[tuple[str, str]]:
    with ctx.tx() as session:
        return [(h.holder_kind, h.holder_id) for h in session.execute(select(FileHeader)).scalars()]


def test_a_batch_of_many_small_files_onto_a_disk_is_encrypted_file_by_file_seals_and_releases(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    zone = make_zone(ctx)
    assert zone.open_delivery(client).status_code == 201
    files = _run(300)
    answer = _batch(zone, client, tar_of(files))
    assert answer.status_code == 200, answer.text
    assert answer.json()["failed"] == [] and len(answer.json()["stored"]) == len(files)
    assert {f["path"]: f["tiers"] for f in answer.json()["stored"]}["md5sum.txt"] == {"secure": "present"}
    sealed = client.post(
        f"/api/projects/{zone.project}/deliveries/RUN1/seal", json={"checksum_file": "md5sum.txt"},
        headers=zone.staff,
    )  # fmt: skip
    assert sealed.status_code == 200 and sealed.json()["state"] == "sealed", sealed.text

    disk = zone.disk_row()
    objects = _objects(ctx)
    stored = zone.files()
    assert len(stored) == len(objects) == len(files)
    with ctx.tx() as session:
        keys = dict(session.execute(select(Replica.file_id, Replica.key)).all())
        assert set(session.execute(select(Replica.tier)).scalars()) == {Tier.SECURE.value}
        data_keys: set[bytes] = set()
        for file in stored:
            data = files[file.path]
            assert (file.size, file.md5, file.sha256) == (
                len(data),
                _md5(data),
                hashlib.sha256(data).hexdigest(),
            )
            # the object is the Crypt4GH body only, of the size its plaintext makes, and no plaintext
            body = objects[keys[file.id]]
            assert (file.body_size, file.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
            assert len(body) == body_size(len(data)) and (len(data) < 32 or not has_window(body, data))
            assert zone_files.open_plaintext(ctx, session, file, disk).read() == data
            data_keys.add(zone_files.data_key(ctx, session, file, disk).secret_bytes())
        assert len(data_keys) == len(files)  # a fresh data key per file
        batch = session.execute(select(Upload)).scalar_one()
        assert (batch.kind, batch.state, batch.length) == ("batch", "complete", 0)
        logged = session.execute(select(AuditEvent).where(AuditEvent.action == "zone.files_stored")).scalars()
        assert sum(e.after["files"] for e in logged) == len(files)
        area = session.execute(select(func.sum(Quota.used_bytes))).scalar_one()
        assert not area  # the disk's quota counts the files, not the project's landing quota
    assert _headers(ctx) == [(HeaderHolder.DISK.value, disk.id)] * len(files)
    assert zone.disk_row().used_bytes == sum(len(d) for d in files.values())
    # nor in the database, the key file or any temp file: every byte under the test's folders, at
    # once (the checksum file aside: its lines are the checksums and paths the database records)
    everything = b"".join(p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file())
    assert not has_window(everything, b"".join(d for p, d in files.items() if p != "md5sum.txt"))

    # release moves every header to the users' secure project, which opens them
    moved = zone_release.release(ctx, zone.world.staff, zone.disk, "RUN1", batch_size=128)
    assert moved.moved == len(files)
    users_project = zone.disk_row().users_secure_id
    assert {kind for kind, _ in _headers(ctx)} == {HeaderHolder.SECURE.value}
    with ctx.tx() as session:
        assert session.execute(select(Delivery.released_at)).scalar_one() is not None
        secure = session.get(SecureProject, users_project)
        assert secure is not None
        for file in session.execute(select(StoredFile)).scalars():
            assert zone_files.open_plaintext(ctx, session, file, secure).read() == files[file.path]


def test_a_member_whose_bytes_differ_from_its_pax_checksum_is_refused_and_nothing_is_kept_for_it(
    ctx: Context, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "IN_MEMORY", 100 * KiB)  # members larger than this are streamed
    zone = make_zone(ctx)
    assert zone.open_delivery(client).status_code == 201
    files = {n: os.urandom(size) for n, size in (("a.txt", 5000), ("b.txt", 6000), ("big.fq", 300 * KiB),
                                                   ("bad.fq", 300 * KiB), ("c.txt", 700))}  # fmt: skip
    wrong = {p: (_md5(b"other"), hashlib.sha256(b"other").hexdigest()) for p in ("b.txt", "bad.fq")}
    answer = _batch(zone, client, tar_of(files, checksums=wrong))
    assert answer.status_code == 200, answer.text
    failed = {f["path"]: f for f in answer.json()["failed"]}
    assert set(failed) == {"b.txt", "bad.fq"}
    assert {f["error"] for f in failed.values()} == {"checksum_mismatch"}
    assert failed["b.txt"]["md5"] == _md5(files["b.txt"])  # what arrived, for the client to compare
    kept = {"a.txt", "big.fq", "c.txt"}
    assert {f.path for f in zone.files()} == kept
    objects = _objects(ctx)
    assert sorted(objects) == sorted(f"{zone.project}/RUN1/{p}" for p in kept)  # no body, no temp file
    everything = b"".join(objects.values())
    assert not any(has_window(everything, data) for data in files.values())
    disk = zone.disk_row()
    with ctx.tx() as session:
        for file in session.execute(select(StoredFile)).scalars():  # the streamed one too
            assert zone_files.open_plaintext(ctx, session, file, disk).read() == files[file.path]
            assert file.body_size == body_size(file.size)
    assert disk.used_bytes == sum(len(files[p]) for p in kept)


def test_a_batch_over_the_disks_quota_stores_what_fits_and_counts_exactly_that(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, quota=10_000)
    assert zone.open_delivery(client).status_code == 201
    files = {f"f{n}.txt": os.urandom(3000) for n in range(5)}  # 15,000 bytes: three fit
    answer = _batch(zone, client, tar_of(files))
    assert answer.status_code == 200, answer.text
    stored = [f["path"] for f in answer.json()["stored"]]
    assert stored == ["f0.txt", "f1.txt", "f2.txt"]
    assert {f["path"]: f["error"] for f in answer.json()["failed"]} == {
        "f3.txt": "quota_exceeded", "f4.txt": "quota_exceeded",
    }  # fmt: skip
    assert "shared disk" in answer.json()["failed"][0]["message"]
    assert zone.disk_row().used_bytes == 9000
    assert len(_objects(ctx)) == 3 and [f.path for f in zone.files()] == stored
    with ctx.tx() as session:
        assert session.execute(select(Upload.length)).scalar_one() == 0  # nothing left reserved
    # nothing at all fits: the batch is refused as a whole
    refused = _batch(zone, client, tar_of({"g.txt": os.urandom(2000)}))
    assert refused.status_code == 413 or refused.json()["error"] == "quota_exceeded", refused.text
    assert zone.disk_row().used_bytes == 9000 and len(_objects(ctx)) == 3


@pytest.mark.parametrize("state", ["released", "expired", "past its end date"])
def test_a_batch_to_a_disk_that_is_not_open_or_without_a_second_factor_is_refused(
    ctx: Context, client: TestClient, state: str
) -> None:
    zone = make_zone(ctx)
    assert zone.open_delivery(client).status_code == 201
    body = tar_of({"a.txt": os.urandom(500)})
    refused = _batch(zone, client, body, headers=zone.plain)
    assert refused.status_code == 403 and refused.json()["details"]["reason"] == "second_factor_required"
    if state == "past its end date":
        zone.set_disk(ends_at=utcnow() - timedelta(minutes=1))
    else:
        zone.set_disk(state=state)
    refused = _batch(zone, client, body)
    assert refused.status_code == 409 and refused.json()["error"] == "disk_read_only", refused.text
    assert zone.files() == [] and _objects(ctx) == {} and zone.disk_row().used_bytes == 0


def test_a_batch_to_a_released_delivery_is_refused_and_one_released_meanwhile_keeps_nothing(
    ctx: Context, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = make_zone(ctx)
    assert zone.open_delivery(client).status_code == 201
    # released while the batch is received: its recording, which takes the delivery's lock as the
    # release does, finds it released; the bodies written for it are dropped
    real = zone_batches.ZoneBatch.check_open

    def released_meanwhile(self: zone_batches.ZoneBatch, session: Any, name: str) -> None:
        with ctx.tx() as other:
            other.execute(update(Delivery).values(released_at=func.now()))
        real(self, session, name)

    monkeypatch.setattr(zone_batches.ZoneBatch, "check_open", released_meanwhile)
    refused = _batch(zone, client, tar_of({f"f{n}.txt": os.urandom(900) for n in range(20)}))
    assert refused.status_code == 409 and refused.json()["error"] == "no_header", refused.text
    assert "released: no access" in refused.json()["message"]
    assert zone.files() == [] and _objects(ctx) == {} and _headers(ctx) == []
    assert zone.disk_row().used_bytes == 0
    monkeypatch.setattr(zone_batches.ZoneBatch, "check_open", real)
    # and a released delivery (sealed first) takes no batch at all
    with ctx.tx() as session:
        session.execute(update(Delivery).values(state="sealed"))
    refused = _batch(zone, client, tar_of({"late.txt": os.urandom(900)}))
    assert refused.status_code == 409, refused.text
    assert zone.files() == [] and _objects(ctx) == {} and zone.disk_row().used_bytes == 0


def test_the_layers_sealed_writes_give_each_object_its_own_key_and_plain_small_writes_refuse(
    ctx: Context,
) -> None:
    layer = ctx.backend(Tier.SECURE)
    assert isinstance(layer, EncryptingBackend)
    data = os.urandom(70 * KiB)
    with layer.sealed_writes() as write:
        one, two = write("t/one", data), write("t/two", data)
    layer.flush()
    assert one.data_key != two.data_key and one.body_sha256 != two.body_sha256
    for name, sealed in (("t/one", one), ("t/two", two)):
        body = b"".join(layer.read(name))
        assert (len(body), hashlib.sha256(body).hexdigest()) == (sealed.body_size, sealed.body_sha256)
        assert not has_window(body, data)
        assert b"".join(iter_plaintext(chunk_reader(iter([body])), sealed.data_key)) == data
    with pytest.raises(Conflict, match="sealed writes"), layer.small_writes() as plain:
        plain("t/three", data)
    assert layer.stat("t/three") is None


def test_a_batch_whose_request_died_gives_its_reservation_back_to_the_disk(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, quota=10_000)
    assert zone.open_delivery(client).status_code == 201
    with ctx.tx() as session:
        delivery = session.execute(select(Delivery)).scalar_one()
        DiskQuota(delivery.shared_disk_id).reserve(session, 6000, "the batch")  # type: ignore[arg-type]
        session.add(
            Upload(
                delivery_id=delivery.id, project_id=delivery.project_id, path="", length=6000,
                backend_id=ctx.backend(Tier.SECURE).backend_id, key=f"{zone.project}/RUN1/",
                created_by_id=zone.world.staff.id, expires_at=utcnow() + timedelta(hours=1),
                lease_owner=None, kind="batch",
            )
        )  # fmt: skip
    assert zone.disk_row().used_bytes == 6000
    with ctx.tx() as session:
        assert reclaim_dead_batches(session) == 1
    assert zone.disk_row().used_bytes == 0


def test_on_s3_a_batch_onto_a_disk_stores_bodies_only_each_with_its_own_key(settings: Settings) -> None:
    """The secure tier on an object store (radosgw): sealed writes go on its threads."""
    params = s3_params()
    if params is None:
        pytest.skip("S3 not configured: set LEVERE_TEST_S3_* (scripts/s3-server.sh start DIR PORT)")
    bucket = f"levere-zb-{uuid.uuid4().hex[:12]}"
    spec = S3Spec(type="s3", backend_id="sec-s3", bucket=bucket, prefix="sec/", **params)
    ctx = Context.build(settings.model_copy(update={"tiers": TierSettings(secure=spec)}))
    try:
        raw_s3(params).create_bucket(Bucket=bucket)
        zone = make_zone(ctx)
        with TestClient(create_app(ctx, start_worker=False)) as client:
            assert zone.open_delivery(client).status_code == 201
            files = {f"f{n:03d}.txt": os.urandom(100 + 700 * n) for n in range(150)}
            answer = _batch(zone, client, tar_of(files))
        assert answer.status_code == 200 and answer.json()["failed"] == [], answer.text
        disk = zone.disk_row()
        raw = raw_s3(params)
        with ctx.tx() as session:
            for file in session.execute(select(StoredFile)).scalars():
                replica = zone_files.body_replica(session, file)
                body = raw.get_object(Bucket=bucket, Key=f"sec/{replica.key}")["Body"].read()
                assert hashlib.sha256(body).hexdigest() == file.body_sha256 and len(body) == file.body_size
                assert not has_window(body, files[file.path])
                assert zone_files.open_plaintext(ctx, session, file, disk).read() == files[file.path]
    finally:
        ctx.close()
