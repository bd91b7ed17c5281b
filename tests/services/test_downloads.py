"""Downloads: who may read, byte ranges and resuming, ETag and checksum headers, HEAD, and the
long-term copy standing in for a file freed from the area."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from levere.context import Context
from levere.db.models import Replica, StoredFile
from levere.domain.tiers import Tier
from tests.conftest import LiveServer
from tests.deliveries_support import (
    Crew,
    area_kind,
    crew,
    delivery_bucket,
    digests,
    open_delivery,
    send_batch,
    settings,
    tar_of,
    tus_upload,
)

__all__ = ["area_kind", "delivery_bucket", "settings"]

DATA = os.urandom(1024 * 1024 + 4321)


def _with_file(http: TestClient | httpx.Client, ctx: Context) -> tuple[Crew, str]:
    c = crew(ctx)
    open_delivery(http, c)
    assert tus_upload(http, c, "RUN42", "lane1/S1_R1.fastq.gz", DATA).status_code == 204
    return c, f"/api/projects/{c.project}/data/RUN42/lane1/S1_R1.fastq.gz"


@pytest.mark.parametrize("role", ["member", "viewer", "admin", "staff", "helpdesk"])
def test_project_people_download_and_others_do_not(client: TestClient, ctx: Context, role: str) -> None:
    c, url = _with_file(client, ctx)
    r = client.get(url, headers=c.headers(role))
    assert r.status_code == 200, r.text
    assert r.content == DATA
    md5, sha256 = digests(DATA)
    assert r.headers["ETag"] == f'"{sha256}"'
    assert r.headers["Levere-Checksum"] == f"md5={md5},sha256={sha256}"
    assert r.headers["Content-Length"] == str(len(DATA))
    assert r.headers["Accept-Ranges"] == "bytes"
    for outsider in ("outsider", "other_staff"):
        denied = client.get(url, headers=c.headers(outsider))
        assert denied.status_code == 403 and denied.json()["error"] == "access_denied"
    assert client.get(url).status_code == 401


def test_ranges_resume_and_conditional_requests(client: TestClient, ctx: Context) -> None:
    c, url = _with_file(client, ctx)
    h = c.headers("viewer")
    etag = f'"{hashlib.sha256(DATA).hexdigest()}"'
    part = client.get(url, headers={**h, "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == DATA[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(DATA)}"
    assert part.headers["Content-Length"] == "100"
    tail = client.get(url, headers={**h, "Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == DATA[-500:]
    # resume: the first half arrived, the rest is asked for from where it stopped
    half = len(DATA) // 2
    rest = client.get(url, headers={**h, "Range": f"bytes={half}-", "If-Range": etag})
    assert rest.status_code == 206
    assert hashlib.sha256(DATA[:half] + rest.content).hexdigest() == etag.strip('"')
    # If-Range with another validator: the file changed, so the whole file comes back
    whole = client.get(url, headers={**h, "Range": f"bytes={half}-", "If-Range": '"something-else"'})
    assert whole.status_code == 200 and whole.content == DATA
    beyond = client.get(url, headers={**h, "Range": f"bytes={len(DATA)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(DATA)}"
    several = client.get(url, headers={**h, "Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == DATA
    assert client.get(url, headers={**h, "If-None-Match": etag}).status_code == 304
    head = client.head(url, headers={**h, "Range": "bytes=10-19"})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["Content-Length"] == "10" and head.headers["ETag"] == etag


def test_a_broken_download_resumes_over_real_http(live_server: LiveServer, ctx: Context) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        c, url = _with_file(http, ctx)
        got = bytearray()
        with http.stream("GET", url, headers=c.headers("member")) as r:
            for chunk in r.iter_bytes(64 * 1024):
                got += chunk
                if len(got) > 300_000:
                    break  # the connection drops here
        etag = r.headers["ETag"]
        rest = http.get(url, headers={**c.headers("member"), "Range": f"bytes={len(got)}-", "If-Range": etag})
        assert rest.status_code == 206
        got += rest.content
    assert bytes(got) == DATA


def test_missing_and_bad_paths(client: TestClient, ctx: Context) -> None:
    c, _ = _with_file(client, ctx)
    base = f"/api/projects/{c.project}/data"
    assert client.get(f"{base}/RUN42/nope.fq", headers=c.headers()).status_code == 404
    assert client.get(f"{base}/NORUN/lane1/S1_R1.fastq.gz", headers=c.headers()).status_code == 404
    assert client.get(f"{base}/RUN42/lane1/%2e%2e/%2e%2e/secret", headers=c.headers()).status_code in (
        400,
        404,
    )
    nul = client.get(f"{base}/RUN42/a%00b", headers=c.headers())  # refused before any route runs
    assert nul.status_code == 422 and "NUL character" in nul.json()["message"]


def test_zero_byte_files_download(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    send_batch(client, c, "RUN42", tar_of({"empty.txt": b""}))
    r = client.get(f"/api/projects/{c.project}/data/RUN42/empty.txt", headers=c.headers("viewer"))
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    assert (
        client.get(
            f"/api/projects/{c.project}/data/RUN42/empty.txt", headers={**c.headers(), "Range": "bytes=0-"}
        ).status_code
        == 416
    )


def test_a_file_freed_from_the_area_streams_from_long_term(client: TestClient, ctx: Context) -> None:
    c, url = _with_file(client, ctx)
    key = f"{c.project}/RUN42/lane1/S1_R1.fastq.gz"
    longterm = ctx.backend(Tier.LONGTERM)
    # what long-term sync and freeing do (issue 4): a verified copy there, the area's copy removed
    with longterm.open_writer(key, write_once=True) as writer:
        writer.write(DATA)
        writer.commit()
    with ctx.tx() as session:
        file_id = session.execute(select(StoredFile.id)).scalar_one()
        session.add(
            Replica(
                file_id=file_id, tier="longterm", backend_id=longterm.backend_id, key=key, state="present"
            )
        )
        session.execute(update(Replica).where(Replica.tier == "area").values(state="freed"))
    ctx.backend(Tier.AREA).delete(key)
    r = client.get(url, headers={**c.headers("viewer"), "Range": "bytes=5-9"})
    assert r.status_code == 206 and r.content == DATA[5:10]
    with ctx.tx() as session:
        session.execute(update(Replica).where(Replica.tier == "longterm").values(state="pending"))
    r = client.get(url, headers=c.headers("viewer"))
    assert r.status_code == 503 and "no readable copy" in r.json()["message"]
