"""tus 1.0 uploads: a stock client (tuspy), resume, the protocol's extensions and its errors."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
from tusclient import client as tus_client

from levere.context import Context
from levere.domain.tiers import Tier
from tests.conftest import LiveServer
from tests.deliveries_support import (
    TUS,
    area_kind,
    crew,
    delivery_bucket,
    digests,
    open_delivery,
    quota,
    settings,
    tus_create,
    tus_patch,
)

__all__ = ["area_kind", "delivery_bucket", "settings"]


def test_options_tells_what_the_server_speaks(live_server: LiveServer) -> None:
    r = httpx.options(f"{live_server.url}/api/tus/")
    assert r.status_code == 204
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert r.headers["Tus-Version"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "termination", "checksum", "expiration",
    }  # fmt: skip
    assert "sha256" in r.headers["Tus-Checksum-Algorithm"].split(",")


def test_tuspy_uploads_and_resumes(live_server: LiveServer, ctx: Context, tmp_path) -> None:
    c = crew(ctx)
    data = os.urandom(3 * 1024 * 1024 + 12345)
    source = tmp_path / "sample_R1.fastq.gz"
    source.write_bytes(data)
    md5, sha256 = digests(data)
    with httpx.Client(base_url=live_server.url) as http:
        open_delivery(http, c)
    client = tus_client.TusClient(f"{live_server.url}/api/tus/", headers=c.headers())
    meta = {"project": c.project, "delivery": "RUN42", "path": "lane1/sample_R1.fastq.gz", "md5": md5}
    first = client.uploader(str(source), chunk_size=1024 * 1024, metadata=meta)
    first.upload(stop_at=2 * 1024 * 1024)  # the client stops (or dies) here
    assert first.url is not None
    # a new client process resumes from the URL: it asks the server for the offset (HEAD)
    second = client.uploader(str(source), chunk_size=1024 * 1024, url=first.url)
    assert second.offset == 2 * 1024 * 1024
    second.upload()
    assert second.request.response_headers["levere-checksum"] == f"md5={md5},sha256={sha256}"
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        delivery = http.get(f"/api/projects/{c.project}/deliveries/RUN42").json()
        got = http.get(f"/api/projects/{c.project}/data/RUN42/lane1/sample_R1.fastq.gz")
    assert got.content == data
    [stored] = delivery["files"]
    assert (stored["path"], stored["size"], stored["md5"], stored["sha256"]) == (
        "lane1/sample_R1.fastq.gz", len(data), md5, sha256,
    )  # fmt: skip
    assert stored["tiers"] == {"area": "present"}
    assert delivery["uploads"] == []
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (len(data), 0)


def test_tuspy_with_per_request_checksums(live_server: LiveServer, ctx: Context, tmp_path) -> None:
    c = crew(ctx)
    data = os.urandom(2 * 1024 * 1024 + 7)
    (tmp_path / "f.bin").write_bytes(data)
    with httpx.Client(base_url=live_server.url) as http:
        open_delivery(http, c)
    client = tus_client.TusClient(f"{live_server.url}/api/tus/", headers=c.headers())
    meta = {"project": c.project, "delivery": "RUN42", "path": "f.bin"}
    uploader = client.uploader(
        str(tmp_path / "f.bin"), chunk_size=512 * 1024, metadata=meta, upload_checksum=True
    )
    uploader.upload()
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        assert http.get(f"/api/projects/{c.project}/data/RUN42/f.bin").content == data


def test_a_wrong_request_checksum_stores_nothing_of_that_request(
    live_server: LiveServer, ctx: Context
) -> None:
    c = crew(ctx)
    data = os.urandom(100_000)
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "a.bin", len(data)).headers["Location"]
        assert tus_patch(http, c, url, 0, data[:50_000]).status_code == 204
        wrong = base64.b64encode(hashlib.sha1(b"something else").digest()).decode()
        r = tus_patch(http, c, url, 50_000, data[50_000:], **{"Upload-Checksum": f"sha1 {wrong}"})
        assert r.status_code == 460, r.text
        assert r.json()["error"] == "checksum_mismatch"
        assert http.head(url, headers={**c.headers(), **TUS}).headers["Upload-Offset"] == "50000"
        right = base64.b64encode(hashlib.sha256(data[50_000:]).digest()).decode()
        r = tus_patch(http, c, url, 50_000, data[50_000:], **{"Upload-Checksum": f"sha256 {right}"})
        assert r.status_code == 204, r.text
        assert r.headers["Upload-Offset"] == str(len(data))
        r = tus_patch(http, c, url, 0, b"x", **{"Upload-Checksum": f"crc32 {right}"})
        assert r.status_code in (400, 409)


def test_creation_with_upload_and_zero_byte_files(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx)
    data = b"@read1\nACGT\n+\nFFFF\n"
    md5, sha256 = digests(data)
    from levere.transfer.wire import encode_metadata

    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        meta = encode_metadata(
            {"project": c.project, "delivery": "RUN42", "path": "tiny.fq", "sha256": sha256}
        )
        r = http.post(
            "/api/tus/",
            content=data,
            headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta,
                     "Content-Type": "application/offset+octet-stream"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.headers["Upload-Offset"] == str(len(data))
        assert r.headers["Levere-Checksum"] == f"md5={md5},sha256={sha256}"
        empty = tus_create(http, c, "RUN42", "empty.txt", 0, extra={"md5": hashlib.md5(b"").hexdigest()})
        assert empty.status_code == 201, empty.text
        assert empty.headers["Upload-Offset"] == "0"
        files = {
            f["path"]: f for f in http.get(f"/api/projects/{c.project}/deliveries/RUN42").json()["files"]
        }
    assert files["tiny.fq"]["sha256"] == sha256
    assert files["empty.txt"]["size"] == 0
    assert files["empty.txt"]["md5"] == hashlib.md5(b"").hexdigest()


def test_wrong_whole_file_checksum_fails_the_upload_and_frees_its_reservation(
    live_server: LiveServer, ctx: Context
) -> None:
    c = crew(ctx)
    data = os.urandom(300_000)
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        bogus = hashlib.md5(b"not the data").hexdigest()
        url = tus_create(http, c, "RUN42", "bad.bin", len(data), extra={"md5": bogus}).headers["Location"]
        assert quota(ctx, c.project).reserved_bytes == len(data)
        r = tus_patch(http, c, url, 0, data)
        assert r.status_code == 460
        assert r.json()["error"] == "checksum_mismatch"
        assert "bad.bin" in r.json()["message"]
        assert http.head(url, headers=TUS).status_code == 404
        assert http.get(f"/api/projects/{c.project}/deliveries/RUN42").json()["files"] == []
        assert http.get(f"/api/projects/{c.project}/data/RUN42/bad.bin").status_code == 404
        # the same path can be uploaded again, right this time
        good = tus_create(http, c, "RUN42", "bad.bin", len(data), extra={"md5": digests(data)[0]})
        assert tus_patch(http, c, good.headers["Location"], 0, data).status_code == 204
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (len(data), 0)
    assert not ctx.backend(Tier.AREA).exists(f"{c.project}/RUN42/bad.bin") or (
        b"".join(ctx.backend(Tier.AREA).read(f"{c.project}/RUN42/bad.bin")) == data
    )


def test_levere_checksum_on_the_last_patch_is_compared(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx)
    data = os.urandom(70_000)
    md5, sha256 = digests(data)
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "x.bin", len(data)).headers["Location"]
        assert tus_patch(http, c, url, 0, data[:1000]).status_code == 204
        r = tus_patch(http, c, url, 1000, data[1000:], **{"Levere-Checksum": f"md5={md5},sha256={'0' * 64}"})
        assert r.status_code == 460
        assert quota(ctx, c.project).reserved_bytes == 0
        url = tus_create(http, c, "RUN42", "x.bin", len(data)).headers["Location"]
        r = tus_patch(http, c, url, 0, data, **{"Levere-Checksum": f"md5={md5},sha256={sha256}"})
        assert r.status_code == 204
        assert r.headers["Levere-Checksum"] == f"md5={md5},sha256={sha256}"


def test_protocol_errors(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx)
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "p.bin", 10).headers["Location"]
        r = http.patch(
            url,
            content=b"0123",
            headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
        assert r.status_code == 412 and r.headers["Tus-Version"] == "1.0.0"
        r = http.patch(
            url, content=b"0123", headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}
        )
        assert r.status_code == 415
        assert tus_patch(http, c, url, 0, b"0123").status_code == 204
        r = tus_patch(http, c, url, 2, b"23456")
        assert r.status_code == 409 and r.headers["Upload-Offset"] == "4"
        r = tus_patch(http, c, url, 4, b"45678901234")
        assert r.status_code == 422  # more than the upload's length
        head = http.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == "4" and head.headers["Upload-Length"] == "10"
        assert head.headers["Cache-Control"] == "no-store" and "Upload-Expires" in head.headers
        assert http.head("/api/tus/no-such-upload", headers=TUS).status_code == 404
        r = http.post("/api/tus/", headers={**TUS, "Upload-Length": "5"})
        assert r.status_code == 422  # no metadata


def test_termination_drops_the_bytes_and_the_reservation(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx)
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "t.bin", 1000).headers["Location"]
        assert tus_patch(http, c, url, 0, b"x" * 500).status_code == 204
        assert quota(ctx, c.project).reserved_bytes == 1000
        assert http.delete(url, headers=TUS).status_code == 204
        assert quota(ctx, c.project).reserved_bytes == 0
        assert http.head(url, headers=TUS).status_code == 404
        assert tus_patch(http, c, url, 500, b"x" * 500).status_code == 404
        # the path is free again
        assert tus_create(http, c, "RUN42", "t.bin", 1000).status_code == 201
