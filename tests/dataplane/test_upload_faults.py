"""Uploads interrupted at any point resume from the last byte the server stored, and the finished
file is byte-identical with checksums equal to the source's: a client killed, a connection dropped,
the server killed with SIGKILL and restarted. Memory stays flat whatever the file size."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from levere.context import Context
from levere.db.models import Upload
from levere.transfer import hashing
from tests.conftest import LiveServer
from tests.deliveries_support import (
    OCTETS,
    TUS,
    Crew,
    MiB,
    Server,
    _check_stored,
    _paced,
    _staged,
    area_kind,
    crew,
    delivery_bucket,
    digests,
    open_delivery,
    quota,
    send_batch,
    server,
    settings,
    tar_of,
    tus_create,
    tus_patch,
)

__all__ = ["area_kind", "delivery_bucket", "server", "settings"]


def _finish(http: httpx.Client, c: Crew, url: str, data: bytes) -> httpx.Response:
    head = http.head(url, headers={**c.headers(), **TUS})
    assert head.status_code == 200, head.text
    offset = int(head.headers["Upload-Offset"])
    assert 0 < offset < len(data)
    done = tus_patch(http, c, url, offset, data[offset:])
    assert done.status_code == 204, done.text
    return done


CLIENT = r"""
import http.client, sys, time
host, port, path, token, offset, source = sys.argv[1:7]
data = open(source, "rb").read()[int(offset):]
conn = http.client.HTTPConnection(host, int(port))
conn.putrequest("PATCH", path)
for k, v in {"Authorization": "Bearer " + token, "Tus-Resumable": "1.0.0", "Upload-Offset": offset,
             "Content-Type": "application/offset+octet-stream", "Content-Length": str(len(data))}.items():
    conn.putheader(k, v)
conn.endheaders()
for i in range(0, len(data), 256 * 1024):
    conn.send(data[i:i + 256 * 1024])
    print(i + 256 * 1024, flush=True)
    time.sleep(0.02)
"""


def test_a_client_killed_mid_upload_resumes(live_server: LiveServer, ctx: Context, tmp_path: Path) -> None:
    c = crew(ctx)
    data = os.urandom(12 * MiB + 333)
    source = tmp_path / "sample.bin"
    source.write_bytes(data)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "sample.bin", len(data)).headers["Location"]
        port = live_server.url.rsplit(":", 1)[1]
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, "127.0.0.1", port, url, c.tokens["staff"], "0", str(source)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        for line in client.stdout:
            if int(line) > 4 * MiB:
                break
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
        done = _finish(http, c, url, data)
        _check_stored(http, c, ctx, "sample.bin", data, done)


def test_a_connection_dropped_mid_patch_keeps_what_arrived(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx)
    data = os.urandom(6 * MiB + 17)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "dropped.bin", len(data)).headers["Location"]
        port = int(live_server.url.rsplit(":", 1)[1])
        head = (
            f"PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {c.tokens['staff']}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        sent = 3 * MiB + 5
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head.encode() + data[:sent])
            time.sleep(0.3)
        # HEAD waits for the interrupted request to finish, then tells the durable offset
        offset = int(http.head(url, headers={**c.headers(), **TUS}).headers["Upload-Offset"])
        assert offset == sent
        assert _staged(ctx, url) == sent
        done = _finish(http, c, url, data)
        _check_stored(http, c, ctx, "dropped.bin", data, done)


def test_the_server_killed_mid_upload_loses_nothing(server: Server, ctx: Context) -> None:
    """``levere serve`` in a child process gets SIGKILL while a PATCH streams; restarted, it tells
    the durable offset, the client resumes, and the file and its checksums are the source's."""
    c = crew(ctx)
    data = os.urandom(40 * MiB + 4321)
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "big.bin", len(data)).headers["Location"]
        sent = [0]

        def stream() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server dies under it
                http.patch(
                    url,
                    content=_paced(data, MiB, 0.05, sent),
                    headers={**c.headers(), **TUS, **OCTETS, "Upload-Offset": "0"},
                )

        sender = threading.Thread(target=stream)
        sender.start()
        deadline = time.monotonic() + 60
        while _staged(ctx, url) < 20 * MiB:
            assert time.monotonic() < deadline, "the upload did not progress"
            time.sleep(0.05)
        server.kill()
        sender.join(timeout=30)
        assert sent[0] < len(data) - MiB  # it really was killed mid-upload
        held = _staged(ctx, url)
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        head = http.head(url, headers={**c.headers(), **TUS})
        assert head.status_code == 200, head.text
        offset = int(head.headers["Upload-Offset"])
        assert offset == held >= 20 * MiB
        done = tus_patch(http, c, url, offset, data[offset:])
        assert done.status_code == 204, done.text
        _check_stored(http, c, ctx, "big.bin", data, done)


def test_the_server_restarted_between_requests_continues_from_saved_state(
    server: Server, ctx: Context
) -> None:
    c = crew(ctx)
    data = os.urandom(9 * MiB + 1)
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "two.bin", len(data)).headers["Location"]
        assert tus_patch(http, c, url, 0, data[: 5 * MiB + 3]).status_code == 204
    server.kill()
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.head(url, headers={**c.headers(), **TUS}).headers["Upload-Offset"] == str(5 * MiB + 3)
        done = tus_patch(http, c, url, 5 * MiB + 3, data[5 * MiB + 3 :])
        assert done.status_code == 204, done.text
        _check_stored(http, c, ctx, "two.bin", data, done)


def test_two_requests_for_one_upload_never_interleave(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx)
    data = os.urandom(4 * MiB)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "once.bin", len(data)).headers["Location"]
        sent = [0]
        results: list[httpx.Response] = []
        first = threading.Thread(
            target=lambda: results.append(
                http.patch(url, content=_paced(data, 256 * 1024, 0.05, sent),
                           headers={**c.headers(), **TUS, **OCTETS, "Upload-Offset": "0"})
            )
        )  # fmt: skip
        first.start()
        while sent[0] < MiB:
            time.sleep(0.01)
        with httpx.Client(base_url=live_server.url, timeout=60) as other:
            second = tus_patch(other, c, url, 0, data)
        first.join()
        # the second waited for the first, then found the offset moved on
        assert second.status_code == 409 and second.headers["Upload-Offset"] == str(len(data))
        assert results[0].status_code == 204
        got = http.get(f"/api/projects/{c.project}/data/RUN42/once.bin", headers=c.headers())
        assert got.content == data


def test_memory_stays_flat_whatever_the_file_size(live_server: LiveServer, ctx: Context) -> None:
    """The server holds a few buffers per request, never the body: the peak of Python allocations
    while uploading 256 MiB is no higher than while uploading 32 MiB (and both are small)."""
    c = crew(ctx)
    chunk = os.urandom(MiB)

    def body(size: int) -> Iterator[bytes]:
        for _ in range(size // MiB):
            yield chunk

    peaks = {}
    with httpx.Client(base_url=live_server.url, timeout=120) as http:
        open_delivery(http, c)
        for size in (32 * MiB, 256 * MiB):
            url = tus_create(http, c, "RUN42", f"m{size}.bin", size).headers["Location"]
            tracemalloc.start()
            try:
                r = http.patch(
                    url, content=body(size), headers={**c.headers(), **TUS, **OCTETS, "Upload-Offset": "0"}
                )
                peaks[size] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert r.status_code == 204, r.text
    assert peaks[256 * MiB] < 64 * MiB, peaks
    assert peaks[256 * MiB] < peaks[32 * MiB] + 16 * MiB, peaks


def test_a_batch_broken_off_keeps_the_files_completed_before_the_break(
    live_server: LiveServer, ctx: Context
) -> None:
    c = crew(ctx)
    files = {f"lane1/r{i:03d}.fq": os.urandom(3000 + i) for i in range(100)}
    body = tar_of(files)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        port = int(live_server.url.rsplit(":", 1)[1])
        head = (
            f"POST /api/projects/{c.project}/deliveries/RUN42/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {c.tokens['staff']}\r\nContent-Type: application/x-tar\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        cut = len(body) // 2
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head.encode() + body[:cut])
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while quota(ctx, c.project).reserved_bytes:  # the batch gives its reservation back when done
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stored = {
            f["path"]: f
            for f in http.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()[
                "files"
            ]
        }
        assert 40 <= len(stored) < 100
        for path, f in stored.items():
            assert (f["size"], f["md5"], f["sha256"]) == (len(files[path]), *digests(files[path]))
        # the client sends the batch again: what is there counts as stored, the rest is added
        again = send_batch(http, c, "RUN42", body).json()
        assert len(again["stored"]) == 100 and again["failed"] == []
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (sum(len(d) for d in files.values()), 0)


def test_saved_checksum_state_round_trips_and_refuses_foreign_state() -> None:
    data = os.urandom(3 * MiB + 7)
    first = hashing.new_hash()
    first.update(data[:MiB])
    state = first.export()
    assert state is not None
    resumed = hashing.restore_hash(MiB, state)
    assert resumed is not None
    resumed.update(memoryview(data)[MiB:])
    assert resumed.digests() == hashing.Digests(*digests(data))
    foreign = "openssl1:sparc64:92:112;" + state.split(";", 1)[1]
    assert hashing.restore_hash(MiB, foreign) is None
    assert hashing.restore_hash(MiB, None) is None


def test_without_savable_checksum_state_the_local_backend_rebuilds_it(
    live_server: LiveServer, ctx: Context, area_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If libcrypto's contexts cannot be used, checksums fall back to hashlib and each request
    rebuilds the state by reading the staged bytes back: slower, never wrong."""
    if area_kind != "local":
        pytest.skip("S3 cannot read staged bytes back: there the saved state is required")
    monkeypatch.setattr(hashing, "_load", lambda: None)
    assert hashing.new_hash().export() is None
    c = crew(ctx)
    data = os.urandom(5 * MiB + 1)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "fallback.bin", len(data)).headers["Location"]
        assert tus_patch(http, c, url, 0, data[: 2 * MiB]).status_code == 204
        assert tus_patch(http, c, url, 2 * MiB, data[2 * MiB : 4 * MiB]).status_code == 204
        done = tus_patch(http, c, url, 4 * MiB, data[4 * MiB :])
        assert done.status_code == 204, done.text
        _check_stored(http, c, ctx, "fallback.bin", data, done)


def test_a_batch_cut_by_a_server_crash_neither_holds_quota_nor_blocks_sealing(
    server: Server, ctx: Context
) -> None:
    c = crew(ctx)
    files = {f"r{i:03d}.fq": os.urandom(4000) for i in range(300)}
    body = tar_of(files)
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        open_delivery(http, c)
        sent = [0]

        def stream() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server dies under it
                send_batch(http, c, "RUN42", _paced(body, 64 * 1024, 0.1, sent))  # type: ignore[arg-type]

        sender = threading.Thread(target=stream)
        sender.start()
        deadline = time.monotonic() + 30
        while quota(ctx, c.project).reserved_bytes == 0:  # the batch reserved its body: it is running
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.kill()
        sender.join(timeout=30)
    assert quota(ctx, c.project).reserved_bytes >= 4000  # held by the batch that died
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        sealed = http.post(f"/api/projects/{c.project}/deliveries/RUN42/seal", headers=c.headers())
        assert sealed.status_code == 200, sealed.text
    q = quota(ctx, c.project)
    with ctx.tx() as session:
        rows = session.execute(select(Upload.kind, Upload.state, Upload.reason)).all()
    assert [(k, s) for k, s, _ in rows] == [("batch", "expired")]
    assert (q.used_bytes, q.reserved_bytes) == (0, 0)
