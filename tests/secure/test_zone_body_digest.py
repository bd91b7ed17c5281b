"""An encrypting upload's body checksum (what every copy of the body is checked against) is
computed while the body is written; where the process that wrote the body's start is not the one
that finishes it, the stored body is hashed once at completion instead. Either way it is the
checksum of the bytes stored."""

from __future__ import annotations

import hashlib
import os

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.db.models import Replica
from levere.domain.tiers import Tier
from levere.services import zone_uploads
from levere.storage import encrypting
from levere.storage.encrypting import STEP
from tests.secure.upload_support import make_zone

MiB = 1024 * 1024


def _stored_body(ctx: Context) -> bytes:
    with ctx.tx() as session:
        (key,) = session.execute(select(Replica.key).where(Replica.tier == Tier.SECURE.value)).scalars()
    return b"".join(ctx.backend(Tier.SECURE).read(key))


@pytest.mark.parametrize("lost_between_requests", [False, True])
def test_the_body_checksum_is_that_of_the_stored_body(
    ctx: Context, client: TestClient, monkeypatch: pytest.MonkeyPatch, lost_between_requests: bool
) -> None:
    read_back: list[str] = []
    hash_stored = zone_uploads.body_checksum

    def counting(ctx_: Context, key: str) -> tuple[str, int]:
        read_back.append(key)
        return hash_stored(ctx_, key)

    monkeypatch.setattr(zone_uploads, "body_checksum", counting)
    zone = make_zone(ctx)
    data = os.urandom(2 * STEP + 70_001)
    assert zone.open_delivery(client).status_code == 201
    created = zone.create(
        client, "RUN1", "reads.fastq", len(data),
        md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    url = created.headers["Location"]
    # three requests, the second ending mid-step (the layer keeps whole steps only: it stored
    # three chunks' segments past the step, which the third request drops again)
    assert zone.patch(client, url, 0, data[:STEP]).headers["Upload-Offset"] == str(STEP)
    cut = STEP + 3 * MiB + 12_345
    assert zone.patch(client, url, STEP, data[STEP:cut]).headers["Upload-Offset"] == str(STEP)
    if lost_between_requests:  # as if another server process took the upload over
        monkeypatch.setattr(encrypting, "_body_digests", encrypting._BodyDigests())
    done = zone.patch(client, url, STEP, data[STEP:])
    assert done.status_code == 204, done.text

    (file,) = zone.files()
    body = _stored_body(ctx)
    assert (file.body_sha256, file.body_size) == (hashlib.sha256(body).hexdigest(), len(body))
    assert file.sha256 == hashlib.sha256(data).hexdigest()
    # hashed on the way in unless the running hash was lost; then the stored body, once
    assert len(read_back) == (1 if lost_between_requests else 0)
