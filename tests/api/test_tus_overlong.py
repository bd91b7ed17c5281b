"""A tus PATCH whose body runs past Upload-Length (sent chunked, so that no Content-Length gives it
away first) is refused with 422 and leaves nothing of itself: the offset stays where the request
began and nothing is published, on the local backend and on S3."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

from levere.context import Context
from tests.conftest import LiveServer
from tests.deliveries_support import (
    TUS,
    Crew,
    area_kind,
    crew,
    delivery_bucket,
    digests,
    open_delivery,
    settings,
    tus_create,
    tus_patch,
)

__all__ = ["area_kind", "delivery_bucket", "settings"]


def chunked_patch(
    base_url: str, path: str, token: str, offset: int, chunks: list[bytes]
) -> tuple[int, dict[str, str]]:
    """A PATCH written by hand on a socket: ``Transfer-Encoding: chunked``, no Content-Length, each
    of ``chunks`` as one HTTP chunk. Returns the status and the headers of the answer."""
    where = urlsplit(base_url)
    assert where.hostname is not None and where.port is not None
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {where.hostname}:{where.port}\r\n"
        f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    status_line, _, rest = answer.partition(b"\r\n")
    headers: dict[str, str] = {}
    for line in rest.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def _token(c: Crew) -> str:
    return c.tokens["staff"]


def _upload(http: httpx.Client, c: Crew, path: str, length: int) -> str:
    created = tus_create(http, c, "RUN42", path, length)
    assert created.status_code == 201, created.text
    return str(created.headers["Location"])


def _offset(http: httpx.Client, c: Crew, url: str) -> int:
    head = http.head(url, headers={**c.headers(), **TUS})
    assert head.status_code == 200, head.text
    return int(head.headers["Upload-Offset"])


def _stored_paths(http: httpx.Client, c: Crew) -> list[str]:
    delivery = http.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()
    return [f["path"] for f in delivery["files"]]


def test_a_chunked_body_past_the_end_leaves_nothing(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx)
    with httpx.Client(base_url=live_server.url) as http:
        open_delivery(http, c)
        url = _upload(http, c, "ten.bin", 10)
        # 16 bytes for a 10-byte upload, in one chunk: the case
        status, headers = chunked_patch(live_server.url, url, _token(c), 0, [b"0123456789ABCDEF"])
        assert status == 422
        assert headers["upload-offset"] == "0"
        assert _offset(http, c, url) == 0  # and the next HEAD publishes nothing
        assert _stored_paths(http, c) == []
        # the upload's exact 10 bytes over two chunks, then 6 more in a third: the last byte
        # arrives exactly at the end, and the body still goes on
        status, headers = chunked_patch(live_server.url, url, _token(c), 0, [b"01234", b"56789", b"ABCDEF"])
        assert status == 422
        assert _offset(http, c, url) == 0
        assert _stored_paths(http, c) == []


def test_a_body_past_the_end_of_a_resumed_upload_keeps_the_earlier_bytes(
    live_server: LiveServer, ctx: Context
) -> None:
    c = crew(ctx)
    data = b"0123456789"
    with httpx.Client(base_url=live_server.url) as http:
        open_delivery(http, c)
        url = _upload(http, c, "resumed.bin", len(data))
        first = tus_patch(http, c, url, 0, data[:4])
        assert first.status_code == 204, first.text
        status, headers = chunked_patch(live_server.url, url, _token(c), 4, [data[4:8], data[8:] + b"XYZ"])
        assert status == 422
        assert headers["upload-offset"] == "4"
        assert _offset(http, c, url) == 4
        assert _stored_paths(http, c) == []
        # the upload goes on from where it was, and its checksums are the file's own
        status, headers = chunked_patch(live_server.url, url, _token(c), 4, [data[4:]])
        assert status == 204
        md5, sha256 = digests(data)
        assert headers["levere-checksum"] == f"md5={md5},sha256={sha256}"
        assert _stored_paths(http, c) == ["resumed.bin"]
