"""Hard quotas: concurrent uploads racing for space never overshoot it, the refused ones hear the
numbers, abandoned uploads give their reservation back, and usage stays exact."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import func, select, update

from levere.context import Context
from levere.db.models import StoredFile, Upload
from levere.domain.tiers import Tier
from levere.services import upload_endings
from tests.conftest import LiveServer
from tests.deliveries_support import (
    TUS,
    MiB,
    area_kind,
    crew,
    delivery_bucket,
    open_delivery,
    quota,
    send_batch,
    settings,
    tar_of,
    tus_create,
    tus_patch,
    tus_upload,
)

__all__ = ["area_kind", "delivery_bucket", "settings"]

RACERS = 20


def _stored_bytes(ctx: Context) -> int:
    with ctx.tx() as session:
        return int(session.execute(select(func.coalesce(func.sum(StoredFile.size), 0))).scalar_one())


def _on_disk(ctx: Context, project: str) -> int:
    return sum(o.size for o in ctx.backend(Tier.AREA).list(f"{project}/"))


def test_twenty_uploads_race_for_a_quota_that_fits_seven(live_server: LiveServer, ctx: Context) -> None:
    limit = 7 * MiB + MiB // 2
    c = crew(ctx, area_quota=limit)
    data = os.urandom(MiB)
    start = threading.Barrier(RACERS)

    def racer(i: int) -> tuple[int, dict[str, Any], int]:
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            start.wait()
            created = tus_create(http, c, "RUN42", f"sample_{i:02d}.fq", len(data))
            if created.status_code != 201:
                return created.status_code, created.json(), 0
            done = tus_patch(http, c, created.headers["Location"], 0, data)
            return created.status_code, {}, done.status_code

    with httpx.Client(base_url=live_server.url) as http:
        open_delivery(http, c)
    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(racer, range(RACERS)))
    accepted = [r for r in results if r[0] == 201]
    refused = [r for r in results if r[0] != 201]
    assert len(accepted) == 7, results
    assert all(done == 204 for _, _, done in accepted)
    for status, body, _ in refused:
        assert status == 507, body
        assert body["error"] == "quota_exceeded"
        details = body["details"]
        assert details["needed"] == MiB and details["limit"] == limit
        assert details["available"] < MiB
        assert details["used"] + details["reserved"] + details["available"] == limit
        assert "MiB" in body["message"]
    assert _stored_bytes(ctx) == 7 * MiB <= limit
    assert _on_disk(ctx, c.project) == 7 * MiB
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (7 * MiB, 0)


def test_batches_racing_for_the_quota_never_overshoot(live_server: LiveServer, ctx: Context) -> None:
    limit = 5 * MiB
    c = crew(ctx, area_quota=limit)
    start = threading.Barrier(RACERS)

    def racer(i: int) -> dict[str, Any]:
        files = {f"b{i:02d}/part{j}.fq": os.urandom(256 * 1024) for j in range(2)}
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            start.wait()
            r = send_batch(http, c, "RUN42", tar_of(files))
            assert r.status_code in (200, 507), r.text
            return dict(r.json())

    with httpx.Client(base_url=live_server.url) as http:
        open_delivery(http, c)
    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(racer, range(RACERS)))
    stored = sum(len(r.get("stored", [])) for r in results)
    refused = [f for r in results for f in r.get("failed", [])]
    refused += [r for r in results if "error" in r for _ in range(2)]  # a whole batch refused (507)
    # 5 MiB holds 20 of the 40 files. A batch reserves its whole body (a little more than its files)
    # while it runs, so one racing near the limit may be refused a file that would have fitted
    # once the others gave their surplus back; it is never allowed more than fits.
    assert 18 <= stored <= 20
    assert len(refused) == 40 - stored
    assert all(f["error"] == "quota_exceeded" for f in refused)
    assert _stored_bytes(ctx) == stored * 256 * 1024 == _on_disk(ctx, c.project) <= limit
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (stored * 256 * 1024, 0)


def test_a_file_larger_than_what_is_left(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx, area_quota=MiB)
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        assert tus_upload(http, c, "RUN42", "a.bin", b"x" * (MiB // 2)).status_code == 204
        r = tus_create(http, c, "RUN42", "b.bin", MiB)
        assert r.status_code == 507
        assert r.json()["details"] == {
            "tier": "area", "needed": MiB, "available": MiB // 2, "limit": MiB, "used": MiB // 2, "reserved": 0,
        }  # fmt: skip
        r = send_batch(http, c, "RUN42", tar_of({"c.bin": b"y" * (MiB // 2 + 1)}))
        assert r.status_code == 507 and r.json()["details"]["needed"] == MiB // 2 + 1
        fits = send_batch(http, c, "RUN42", tar_of({"d.bin": b"z" * 1000, "e.bin": b"z" * MiB}))
        assert [f["path"] for f in fits.json()["stored"]] == ["d.bin"]
        assert fits.json()["failed"][0]["error"] == "quota_exceeded"
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (MiB // 2 + 1000, 0)


def test_abandoned_uploads_expire_and_give_their_reservation_back(
    live_server: LiveServer, ctx: Context
) -> None:
    c = crew(ctx, area_quota=10 * MiB)
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        kept = tus_create(http, c, "RUN42", "kept.bin", 1000).headers["Location"]
        abandoned = [
            tus_create(http, c, "RUN42", f"gone{i}.bin", 2 * MiB).headers["Location"] for i in range(3)
        ]
        for url in abandoned[:2]:
            assert tus_patch(http, c, url, 0, b"x" * 1000).status_code == 204
        assert quota(ctx, c.project).reserved_bytes == 6 * MiB + 1000
        # nobody touches the three for longer than upload_expiry_hours
        ids = [url.rsplit("/", 1)[1] for url in abandoned]
        with ctx.tx() as session:
            session.execute(update(Upload).where(Upload.id.in_(ids)).values(expires_at=Upload.created_at))
        ctx.jobs.enqueue("expire_uploads")  # the periodic job (immediate in tests)
        q = quota(ctx, c.project)
        assert (q.used_bytes, q.reserved_bytes) == (0, 1000)
        for url in abandoned:
            assert http.head(url, headers=TUS).status_code == 404
        assert tus_patch(http, c, kept, 0, b"k" * 1000).status_code == 204
        assert upload_endings.expire_abandoned(ctx) == 0
    with ctx.tx() as session:
        states = dict(session.execute(select(Upload.path, Upload.state)).all())
    assert states == {
        "kept.bin": "complete",
        "gone0.bin": "expired",
        "gone1.bin": "expired",
        "gone2.bin": "expired",
    }
    assert [o.key for o in ctx.backend(Tier.AREA).list(f"{c.project}/")] == [f"{c.project}/RUN42/kept.bin"]
    if ctx.settings.tiers.area is None:  # local: the staged bytes are gone too
        staging = ctx.settings.tier_spec("area").root / ".levere-staging"  # type: ignore[union-attr]
        assert not any(staging.glob("*.part"))
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (1000, 0)


def test_usage_is_exact_after_every_kind_of_ending(live_server: LiveServer, ctx: Context) -> None:
    c = crew(ctx, area_quota=20 * MiB)
    with httpx.Client(base_url=live_server.url, headers=c.headers()) as http:
        open_delivery(http, c)
        assert tus_upload(http, c, "RUN42", "ok.bin", b"o" * 3000).status_code == 204
        assert tus_upload(http, c, "RUN42", "bad.bin", b"b" * 3000, md5="0" * 32).status_code == 460
        cancelled = tus_create(http, c, "RUN42", "cancel.bin", 5000).headers["Location"]
        tus_patch(http, c, cancelled, 0, b"c" * 10)
        http.delete(cancelled, headers=TUS)
        send_batch(
            http,
            c,
            "RUN42",
            tar_of({"s1": b"1" * 100, "s2": b"2" * 200}, checksums={"s2": ("0" * 32, "0" * 64)}),
        )
        tus_upload(http, c, "RUN42", "empty", b"")
    q = quota(ctx, c.project)
    assert q.reserved_bytes == 0
    assert q.used_bytes == _stored_bytes(ctx) == 3100 == _on_disk(ctx, c.project)
