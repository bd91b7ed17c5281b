"""An encrypting upload into the secure zone cut off mid-step and resumed by another server
process: the same body continues under the same data key, and the checksums hold."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from levere.config import Settings
from levere.context import Context
from levere.crypt4gh import body_size
from levere.services import zone_files
from levere.storage.encrypting import STEP
from tests.deliveries_support import Server
from tests.secure.upload_support import OCTETS, TUS, has_window, make_zone, stored_bytes


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    srv = Server(settings, tmp_path)
    yield srv
    srv.stop()


def test_an_encrypting_upload_cut_off_mid_step_resumes_from_the_last_step_in_another_process(
    ctx: Context, client: TestClient, server: Server
) -> None:
    zone = make_zone(ctx)
    data = os.urandom(2 * STEP + 3 * 65536 + 11)
    assert zone.open_delivery(client).status_code == 201
    created = zone.create(
        client, "RUN1", "big.fastq", len(data),
        md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    url = created.headers["Location"]
    # the first request ends in the middle of the second step: only the whole first step is kept
    first = zone.patch(client, url, 0, data[: STEP + 70_000])
    assert first.status_code == 204, first.text
    assert first.headers["Upload-Offset"] == str(STEP)
    # the piece of the second step was never stored in plaintext: the tier holds at most the body of
    # what was sent (and the session's small record)
    staged = b"".join(content for _, content in stored_bytes(ctx))
    assert len(staged) < body_size(STEP + 70_000) + 200 and not has_window(staged, data)

    assert ctx.settings.secure.master_key_file is not None
    server.start(LEVERE_SECURE__MASTER_KEY_FILE=str(ctx.settings.secure.master_key_file))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        head = http.head(url, headers={**zone.staff, **TUS})
        assert head.status_code == 200 and head.headers["Upload-Offset"] == str(STEP)
        rest = http.patch(
            url, content=data[STEP:], headers={**zone.staff, **TUS, **OCTETS, "Upload-Offset": str(STEP)}
        )
        assert rest.status_code == 204, rest.text
        assert rest.headers["Upload-Offset"] == str(len(data))

    (file,) = zone.files()
    assert file.sha256 == hashlib.sha256(data).hexdigest() and file.size == len(data)
    disk = zone.disk_row()
    with ctx.tx() as session:
        assert zone_files.open_plaintext(ctx, session, file, disk).read() == data
    everything = b"".join(content for _, content in stored_bytes(ctx))
    assert len(everything) == file.body_size and not has_window(everything, data)
