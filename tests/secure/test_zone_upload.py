"""Uploads into the secure zone: a sensitive project's delivery lands on its shared disk, encrypted
at rest by the secure tier's layer, with a header for the disk; the plaintext is stored nowhere."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.crypt4gh import decrypt_body
from levere.db.models import AuditEvent, Delivery, FileHeader, Replica, Upload
from levere.domain.secure import HeaderHolder
from levere.domain.tiers import Tier
from levere.services import uploads, zone_files
from tests.plaintext_scan import scan_paths
from tests.secure.upload_support import has_window, make_zone, stored_bytes

KiB = 1024


def _digests(data: bytes) -> dict[str, str]:
    return {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_plaintext_upload_to_the_disk_is_stored_as_a_crypt4gh_body_with_a_header_for_the_disk(
    ctx: Context, client: TestClient, tmp_path: Path
) -> None:
    zone = make_zone(ctx)
    data = os.urandom(200 * KiB + 7)  # three whole segments and a short one
    opened = zone.open_delivery(client)
    assert opened.status_code == 201, opened.text
    created = zone.create(client, "RUN1", "s1_R1.fastq", len(data), **_digests(data))
    assert created.status_code == 201, created.text
    done = zone.patch(client, created.headers["Location"], 0, data)
    assert done.status_code == 204, done.text
    assert done.headers["Upload-Offset"] == str(len(data))

    (file,) = zone.files()
    assert (file.size, file.md5, file.sha256) == (len(data), _digests(data)["md5"], _digests(data)["sha256"])
    assert file.body_size == 3 * 65564 + (200 * KiB + 7 - 3 * 64 * KiB) + 28 and file.body_sha256
    disk = zone.disk_row()
    with ctx.tx() as session:
        replica = session.execute(select(Replica).where(Replica.file_id == file.id)).scalar_one()
        assert replica.tier == Tier.SECURE.value
        headers = session.execute(select(FileHeader).where(FileHeader.file_id == file.id)).scalars().all()
        assert [(h.holder_kind, h.holder_id) for h in headers] == [(HeaderHolder.DISK.value, disk.id)]
        delivery = session.execute(select(Delivery)).scalar_one()
        assert delivery.shared_disk_id == disk.id
        upload = session.execute(select(Upload)).scalar_one()
        assert upload.wrapped_data_key and upload.wrapped_data_key.startswith("c4gh-wrap-v1:")
        # the disk's key opens the body back to the plaintext (in memory)
        assert zone_files.open_plaintext(ctx, session, file, disk).read() == data
        stored = b"".join(zone_files.read_body(ctx, replica))
        assert len(stored) == file.body_size and hashlib.sha256(stored).hexdigest() == file.body_sha256
        key = zone_files.data_key(ctx, session, file, disk)
        plain = io.BytesIO()
        decrypt_body(io.BytesIO(stored), key, plain)
        assert plain.getvalue() == data
        assert session.execute(select(AuditEvent).where(AuditEvent.action == "zone.file_stored")).scalar_one()
    assert zone.disk_row().used_bytes == len(data)
    # nothing under the secure tier (nor anywhere in the data directory) holds a window of the plaintext
    everything = b"".join(content for _, content in stored_bytes(ctx))
    assert everything and not has_window(everything, data)
    # nor anything else under the test's folders: the data directory, the database, the key file
    assert scan_paths([tmp_path], data) == []


def test_an_upload_published_just_before_a_crash_is_recorded_with_its_header_when_resumed(
    ctx: Context, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = make_zone(ctx)
    data = os.urandom(100 * KiB)
    assert zone.open_delivery(client).status_code == 201
    created = zone.create(client, "RUN1", "a.fastq", len(data))
    real = uploads._record

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the process stopped here")

    monkeypatch.setattr(uploads, "_record", crash)
    with pytest.raises(RuntimeError):
        zone.patch(client, created.headers["Location"], 0, data)
    monkeypatch.setattr(uploads, "_record", real)
    assert zone.files() == []
    head = client.head(created.headers["Location"], headers={**zone.staff, "Tus-Resumable": "1.0.0"})
    assert head.status_code == 200 and head.headers["Upload-Offset"] == str(len(data))
    (file,) = zone.files()
    disk = zone.disk_row()
    with ctx.tx() as session:
        assert zone_files.open_plaintext(ctx, session, file, disk).read() == data
    assert file.body_size and file.body_sha256
