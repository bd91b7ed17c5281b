"""HTTP semantics the API keeps whatever the client: conditional downloads compare entity tags as
RFC 9110 says, and a method a path does not serve gets 405 with the full ``Allow`` header and
levere's error format."""

from __future__ import annotations

import hashlib
import os

import pytest
from fastapi.testclient import TestClient

from levere.context import Context
from levere.transfer.conditional import none_match, strong_match
from tests.deliveries_support import crew, open_delivery, tus_upload

DATA = os.urandom(10_000)
ETAG = f'"{hashlib.sha256(DATA).hexdigest()}"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (ETAG, True),
        (f"W/{ETAG}", True),  # weak comparison: the W/ prefix is ignored
        (f'"elsewhere", {ETAG}', True),
        (f'W/"a",W/{ETAG} , "b"', True),
        ("*", True),
        (' "elsewhere" ', False),
        ('"a, b", "c"', False),  # a comma inside a tag does not split it
        (ETAG.strip('"'), False),  # unquoted: malformed, matches nothing
        (f"{ETAG} trailing", False),
        ("", False),
    ],
)
def test_if_none_match_uses_the_weak_comparison_over_a_list(header: str, matches: bool) -> None:
    assert none_match(header, ETAG) is matches


def test_if_range_uses_the_strong_comparison() -> None:
    assert strong_match(ETAG, ETAG)
    assert not strong_match(f"W/{ETAG}", ETAG)
    assert not strong_match(f'"other", {ETAG}', ETAG)
    assert not strong_match("Sun, 06 Dec 2026 00:00:00 GMT", ETAG)


def test_conditional_downloads_answer_304_for_any_matching_tag(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    assert tus_upload(client, c, "RUN42", "lane1/S1.fastq.gz", DATA).status_code == 204
    url = f"/api/projects/{c.project}/data/RUN42/lane1/S1.fastq.gz"
    h = c.headers("viewer")
    for header in (ETAG, f"W/{ETAG}", f'"old", {ETAG}', f'W/"old", W/{ETAG}', "*"):
        for method in ("GET", "HEAD"):
            r = client.request(method, url, headers={**h, "If-None-Match": header})
            assert r.status_code == 304, (method, header)
            assert r.content == b"" and r.headers["ETag"] == ETAG
    changed = client.get(url, headers={**h, "If-None-Match": '"old", W/"older"'})
    assert changed.status_code == 200 and changed.content == DATA
    # If-Range stays strong: a weak validator gets the whole file, never a splice
    weak = client.get(url, headers={**h, "Range": "bytes=5-", "If-Range": f"W/{ETAG}"})
    assert weak.status_code == 200 and weak.content == DATA
    strong = client.get(url, headers={**h, "Range": "bytes=5-", "If-Range": ETAG})
    assert strong.status_code == 206 and strong.content == DATA[5:]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/projects/p-1", "GET, PATCH"),
        ("PUT", "/api/projects", "GET"),
        ("TRACE", "/api/health", "GET"),
        ("GET", "/api/tus/", "POST, OPTIONS"),
        ("GET", "/api/tus/abc", "HEAD, PATCH, DELETE"),
        ("POST", "/api/projects/p-1/data/RUN/a/b.txt", "GET, HEAD"),
        ("DELETE", "/api/me/tokens", "GET, POST"),
    ],
)
def test_a_method_the_path_does_not_serve_is_405_with_every_allowed_method(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["Allow"] == allowed
    assert r.json() == {
        "error": "method_not_allowed",
        "message": f"this path does not serve the {method} method",
        "details": {"allowed": allowed.split(", ")},
    }


def test_an_unknown_path_is_404_in_levere_format(client: TestClient) -> None:
    r = client.get("/api/no-such-thing")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "message": "there is no such API path", "details": {}}


def test_a_body_that_cannot_be_read_is_refused_in_levere_format(client: TestClient) -> None:
    json_type = {"Content-Type": "application/json"}
    unreadable = client.post("/api/auth/login", content=b"\xff\xfe\x00", headers=json_type)
    assert unreadable.status_code == 400
    assert unreadable.json() == {
        "error": "malformed_body",
        "message": "the request body could not be read as JSON",
        "details": {},
    }
    broken = client.post("/api/auth/login", content=b"{not json", headers=json_type)
    assert broken.status_code == 422 and broken.json()["error"] == "validation_failed"
