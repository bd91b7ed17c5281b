"""What a real ``levere serve`` believes before it reads a request: JSON bodies are capped (413 in
levere's format, refused before they are read or while a chunked one is read, so memory stays
flat) while uploads are not; the client's address comes from X-Forwarded-For only when the peer is
a configured proxy. On SQLite, and on PostgreSQL when LEVERE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select as sql_select

from levere.config import Settings
from levere.context import Context
from levere.db.models import LoginAttempt
from tests.deliveries_support import MiB, Server, crew, open_delivery, send_batch, tar_of, tus_upload
from tests.helpers import PASSWORD, make_user

ANONYMOUS_CAP = 16 * 1024
SIGNED_IN_CAP = 1024 * 1024


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    srv = Server(settings, tmp_path)
    yield srv
    srv.stop()


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 answer with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"the connection closed before an answer: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return int(lines[0].split()[1]), headers, body


def request_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: levere.test", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_too_large(status: int, headers: dict[str, str], body: bytes, cap: int) -> None:
    assert status == 413
    answer = json.loads(body)
    assert answer["error"] == "body_too_large"
    assert answer["details"] == {"limit_bytes": cap}
    assert "too large" in answer["message"]
    assert headers.get("connection") == "close"


def test_a_declared_50_mb_sign_in_body_is_refused_before_it_is_read(service: Server) -> None:
    service.start()
    assert service.proc is not None
    before = rss(service.proc.pid)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request_head("/api/auth/login", Content_Length=str(50 * 1000 * 1000)) + b'{"email": "')
        status, headers, body = read_answer(sock)  # answered with 50 MB still unsent
    assert_too_large(status, headers, body, ANONYMOUS_CAP)
    assert rss(service.proc.pid) - before < 5 * MiB
    assert httpx.get(f"{service.url}/api/health").status_code == 200


def test_a_chunked_50_mb_body_is_cut_off_at_the_cap_and_memory_stays_flat(service: Server) -> None:
    service.start()
    assert service.proc is not None
    before = rss(service.proc.pid)
    chunk = b"x" * 64 * 1024
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request_head("/api/auth/login", Transfer_Encoding="chunked"))
        try:
            while sent < 50 * 1000 * 1000:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered
                sock.sendall(framed)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = read_answer(sock)
    assert_too_large(status, headers, body, ANONYMOUS_CAP)
    assert sent < 10 * 1000 * 1000  # refused long before the end of the body
    assert rss(service.proc.pid) - before < 10 * MiB


def test_signed_in_routes_take_more_and_the_caps_are_settings(service: Server, ctx: Context) -> None:
    c = crew(ctx)
    service.start(LEVERE_JSON_BODY_LIMIT_ANONYMOUS_BYTES="2048", LEVERE_JSON_BODY_LIMIT_BYTES="65536")
    small_login = {"email": "someone@levere.test", "password": "p" * 1000}
    big_login = {"email": "someone@levere.test", "password": "p" * 3000}
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.post("/api/auth/login", json=small_login).status_code == 401
        refused = http.post("/api/auth/login", json=big_login)
        assert_too_large(refused.status_code, dict(refused.headers), refused.content, 2048)
        # a signed-in route: 3 KB is read and judged (here: a role that does not exist) ...
        member = {"email": "x@uib.example.org", "role": "r" * 3000}
        judged = http.post(f"/api/projects/{c.project}/members", json=member, headers=c.headers("admin"))
        assert judged.status_code == 422, judged.text
        # ... 100 KB is not
        member["role"] = "r" * 100_000
        refused = http.post(f"/api/projects/{c.project}/members", json=member, headers=c.headers("admin"))
        assert_too_large(refused.status_code, dict(refused.headers), refused.content, 65536)


def test_upload_bodies_are_not_capped(service: Server, ctx: Context) -> None:
    c = crew(ctx)
    service.start(LEVERE_JSON_BODY_LIMIT_ANONYMOUS_BYTES="2048", LEVERE_JSON_BODY_LIMIT_BYTES="4096")
    with httpx.Client(base_url=service.url, timeout=60) as http:
        open_delivery(http, c)
        done = tus_upload(http, c, "RUN42", "reads.fastq.gz", os.urandom(3 * MiB))
        assert done.status_code == 204, done.text
        batch = send_batch(
            http, c, "RUN42", tar_of({f"small/{n}.txt": os.urandom(300_000) for n in range(8)})
        )
        assert batch.status_code == 200, batch.text


# --- the client's address -------------------------------------------------------------------------------


def failed_sign_in(http: httpx.Client, n: int, forwarded_for: str) -> int:
    answer = http.post(
        "/api/auth/login",
        json={"email": f"nobody{n}@levere.test", "password": "wrong"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return answer.status_code


def recorded_clients(ctx: Context) -> set[str]:
    with ctx.tx() as session:
        return set(session.execute(sql_select(LoginAttempt.client)).scalars())


def test_forwarded_for_from_an_untrusted_peer_is_ignored(service: Server, ctx: Context) -> None:
    make_user(ctx, "ola@levere.test")
    service.start(LEVERE_LOGIN_MAX_CLIENT_FAILURES="3")
    with httpx.Client(base_url=service.url, timeout=30) as http:
        # a new spoofed address each time: all of them count against the peer's own address
        assert [failed_sign_in(http, n, f"198.51.100.{n}") for n in range(3)] == [401] * 3
        assert failed_sign_in(http, 3, "198.51.100.99") == 429
        ok = http.post(
            "/api/auth/login",
            json={"email": "ola@levere.test", "password": PASSWORD},
            headers={"X-Forwarded-For": "203.0.113.5"},
        )
        assert ok.status_code == 429
    assert recorded_clients(ctx) == {"127.0.0.1"}


def test_forwarded_for_from_a_trusted_proxy_names_the_client(service: Server, ctx: Context) -> None:
    service.start(LEVERE_LOGIN_MAX_CLIENT_FAILURES="3", LEVERE_TRUSTED_PROXIES="10.0.0.0/8,127.0.0.1")
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert [failed_sign_in(http, n, "203.0.113.7") for n in range(3)] == [401] * 3
        assert failed_sign_in(http, 3, "203.0.113.7") == 429  # that client is held back ...
        assert failed_sign_in(http, 4, "198.51.100.9") == 401  # ... another one behind the proxy is not
        # a chain: the last address the trusted proxies did not add is the client
        assert failed_sign_in(http, 5, "192.0.2.1, 198.51.100.10, 10.1.2.3") == 401
    assert recorded_clients(ctx) == {"203.0.113.7", "198.51.100.9", "198.51.100.10"}


def test_trusted_proxies_are_read_as_a_list_or_comma_separated_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from levere.config import get_settings
    from levere.domain.errors import ConfigurationError

    monkeypatch.setenv("LEVERE_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert get_settings().trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    monkeypatch.setenv("LEVERE_TRUSTED_PROXIES", '["::1", "192.0.2.0/24"]')
    assert get_settings().trusted_proxies == ["::1", "192.0.2.0/24"]
    monkeypatch.delenv("LEVERE_TRUSTED_PROXIES")
    assert get_settings().trusted_proxies == []
    monkeypatch.setenv("LEVERE_TRUSTED_PROXIES", "nginx.internal")
    with pytest.raises(ConfigurationError, match=r"'nginx\.internal' is not an IP address or network"):
        get_settings()
