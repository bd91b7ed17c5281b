"""An encrypting upload whose size is a whole number of steps, or of segments, completes in one
request (its last step ends exactly where the file does)."""

from __future__ import annotations

import hashlib
import os

import pytest
from fastapi.testclient import TestClient

from levere.context import Context
from levere.crypt4gh.body import SEGMENT
from levere.storage.encrypting import STEP
from tests.secure.upload_support import make_zone


@pytest.mark.parametrize("size", [STEP, 2 * STEP, 3 * SEGMENT, 0])
def test_an_upload_ending_on_a_step_or_segment_boundary_completes(
    ctx: Context, client: TestClient, size: int
) -> None:
    zone = make_zone(ctx)
    data = os.urandom(size)
    assert zone.open_delivery(client).status_code == 201
    created = zone.create(
        client, "RUN1", "whole.fastq", len(data),
        md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    if size:
        sent = zone.patch(client, created.headers["Location"], 0, data)
        assert sent.status_code == 204, sent.text
        assert sent.headers["Upload-Offset"] == str(size)
    (file,) = zone.files()
    assert file.size == size and file.sha256 == hashlib.sha256(data).hexdigest()
