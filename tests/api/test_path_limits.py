"""Paths too long for the storage that will hold them are refused when they are named (tus creation,
batch members) with a 400 that says the limit, computed for that storage: the local root plus the
key within PATH_MAX, each name within NAME_MAX, an S3 key within 1,024 bytes (its prefix included;
radosgw completes multipart uploads only while bucket name and key take at most 1,012 bytes).
A path exactly at the limit is stored and published; one byte more is refused, nothing is reserved,
and the delivery can still be sealed."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest

from levere.config import Settings, TierSettings
from levere.context import Context
from levere.domain.errors import InvalidPath
from levere.domain.paths import KeyLimits, check_key_fits
from levere.storage import LocalBackend, S3Backend, S3Spec
from tests.conftest import LiveServer
from tests.deliveries_support import (
    Crew,
    area_kind,
    crew,
    delivery_bucket,
    open_delivery,
    quota,
    s3_params,
    send_batch,
    settings,
    tar_of,
    tus_create,
    tus_patch,
)

__all__ = ["area_kind", "delivery_bucket", "settings"]


def long_path(total: int, name: int = 200) -> str:
    """A relative path of exactly ``total`` bytes, in names of at most ``name`` bytes."""
    parts: list[str] = []
    left = total
    while left > name + 1:
        parts.append("d" * name)
        left -= name + 1
    parts.append("f" * left)
    path = "/".join(parts)
    assert len(path) == total
    return path


def expected_key_bytes(ctx: Context) -> int:
    """What both the area and long-term storage (where the file is copied under the same key) can
    hold, worked out here from what the kernel and S3 allow."""

    def one(tier: str) -> int:
        spec = ctx.settings.tier_spec(tier)  # type: ignore[arg-type]
        if isinstance(spec, S3Spec):
            # S3's 1,024 bytes, and radosgw's bucket name and key within 1,012 for multipart uploads
            return min(1024, 1012 - len(spec.bucket)) - len(spec.prefix.encode())
        root = os.fsencode(str(spec.root))
        return 4096 - 1 - len(root) - 1  # PATH_MAX with its NUL, the root, the slash after it

    return min(one("area"), one("longterm"))


def _prefix(c: Crew, delivery: str = "RUN42") -> int:
    return len(f"{c.project}/{delivery}/")


def test_backends_describe_their_limits(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path, "area").key_limits()
    assert local.key_bytes == 4096 - 1 - len(os.fsencode(str(tmp_path))) - 1
    assert local.name_bytes == 255
    s3 = S3Backend("http://127.0.0.1:9", "bucket", "a", "b", prefix="levere/area").key_limits()
    assert (s3.key_bytes, s3.name_bytes) == (1012 - len("bucket") - len("levere/area/"), 1024)


def test_the_tighter_of_two_limits_names_its_storage() -> None:
    area = KeyLimits(4000, 255, "the project area")
    longterm = KeyLimits(1000, 1024, "long-term storage")
    both = area.tighter(longterm)
    assert (both.key_bytes, both.name_bytes) == (1000, 255)
    with pytest.raises(InvalidPath) as refused:
        check_key_fits("x", "k" * 1001, both)
    assert refused.value.message.endswith("long-term storage holds paths of at most 1000 bytes")
    assert refused.value.details == {"limit_bytes": 1000, "size_bytes": 1001}
    with pytest.raises(InvalidPath) as refused:
        check_key_fits("n" * 256, "p/" + "n" * 256, both)
    assert refused.value.message.endswith("the project area holds names of at most 255 bytes")


def test_tus_refuses_a_path_too_long_for_the_area_at_creation(
    live_server: LiveServer, ctx: Context, area_kind: str
) -> None:
    c = crew(ctx)
    limit = expected_key_bytes(ctx)
    fits = long_path(limit - _prefix(c))
    too_long = long_path(limit - _prefix(c) + 1)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        refused = tus_create(http, c, "RUN42", too_long, 10)
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["error"] == "invalid_path"
        assert f"at most {limit} bytes" in body["message"]
        assert body["details"] == {"limit_bytes": limit, "size_bytes": limit + 1}
        assert quota(ctx, c.project).reserved_bytes == 0

        # exactly at the limit: stored and published like any other file
        created = tus_create(http, c, "RUN42", fits, 10)
        assert created.status_code == 201, created.text
        done = tus_patch(http, c, created.headers["Location"], 0, b"0123456789")
        assert done.status_code == 204, done.text

        # nothing is left in progress: the delivery seals
        sealed = http.post(f"/api/projects/{c.project}/deliveries/RUN42/seal", json={}, headers=c.headers())
        assert sealed.status_code == 200, sealed.text
        assert sealed.json()["state"] == "sealed"
        delivery = http.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()
        assert [f["path"] for f in delivery["files"]] == [fits]


def test_a_batch_refuses_a_member_too_long_and_stores_the_rest(
    live_server: LiveServer, ctx: Context, area_kind: str
) -> None:
    c = crew(ctx)
    limit = expected_key_bytes(ctx)
    too_long = long_path(limit - _prefix(c) + 1)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        open_delivery(http, c)
        answer = send_batch(http, c, "RUN42", tar_of({"short.txt": b"hello", too_long: b"world"}))
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert [f["path"] for f in result["stored"]] == ["short.txt"]
        (failed,) = result["failed"]
        assert failed["path"] == too_long and failed["error"] == "invalid_path"
        assert f"at most {limit} bytes" in failed["message"]


@pytest.fixture
def longterm_on_s3(settings: Settings, delivery_bucket: str) -> Settings:
    params = s3_params()
    assert params is not None
    spec = S3Spec(
        type="s3",
        backend_id="longterm-s3",
        bucket=delivery_bucket,
        prefix=f"lt-{uuid.uuid4().hex[:12]}/",
        endpoint_url=params["endpoint_url"],
        access_key=params["access_key"],  # type: ignore[arg-type]
        secret_key=params["secret_key"],  # type: ignore[arg-type]
    )
    return settings.model_copy(update={"tiers": TierSettings(area=settings.tiers.area, longterm=spec)})


def test_a_path_the_area_holds_but_long_term_s3_cannot_is_refused(
    settings: Settings, longterm_on_s3: Settings, area_kind: str
) -> None:
    if area_kind != "local":
        pytest.skip("the area on S3 is the tighter limit already (the test above)")
    ctx = Context.build(longterm_on_s3)
    try:
        c = crew(ctx)
        spec = longterm_on_s3.tiers.longterm
        assert isinstance(spec, S3Spec)
        limit = min(1024, 1012 - len(spec.bucket)) - len(spec.prefix)
        from fastapi.testclient import TestClient

        from levere.api.app import create_app

        with TestClient(create_app(ctx, start_worker=False)) as http:
            open_delivery(http, c)
            refused = tus_create(http, c, "RUN42", long_path(limit - _prefix(c) + 1), 10)
            assert refused.status_code == 400, refused.text
            assert "long-term storage (S3 storage)" in refused.json()["message"]
            assert refused.json()["details"]["limit_bytes"] == limit
    finally:
        ctx.close()
