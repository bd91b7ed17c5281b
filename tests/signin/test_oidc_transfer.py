"""No token expires mid-delivery: an upload started with a valid token finishes with that token
after it expires; nothing else is widened (other uploads, new uploads, revoked tokens)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.db.models import ApiToken, utcnow
from levere.services import accounts
from tests.deliveries_support import TUS, crew, digests, open_delivery, tus_create, tus_patch
from tests.helpers import auth

LIFETIME = 2.0  # seconds: shorter than the transfer below


def short_lived_token(ctx: Context, email: str) -> str:
    with ctx.tx() as session:
        user = accounts.get_user_by_email(session, email)
        issued = accounts.issue_token(ctx, session, user, "short")
        issued.record.expires_at = utcnow() + timedelta(seconds=LIFETIME)
        return issued.token


def test_an_upload_outlives_the_token_it_started_with(ctx: Context, client: TestClient) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    c.tokens["short"] = short_lived_token(ctx, c.staff.email)
    data = os.urandom(3 * 1024 * 1024)
    md5, sha256 = digests(data)
    started = time.monotonic()
    created = tus_create(client, c, "RUN42", "lane1/big.fastq.gz", len(data), role="short")
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    half = len(data) // 2
    first = tus_patch(client, c, url, 0, data[:half], Authorization=f"Bearer {c.tokens['short']}")
    assert first.status_code == 204, first.text
    time.sleep(max(0.0, LIFETIME - (time.monotonic() - started)) + 0.5)
    assert client.get("/api/me", headers=c.headers("short")).status_code == 401  # the token expired
    offset = client.head(url, headers={**c.headers("short"), **TUS})
    assert offset.status_code == 200 and int(offset.headers["Upload-Offset"]) == half
    rest = tus_patch(client, c, url, half, data[half:], Authorization=f"Bearer {c.tokens['short']}")
    assert rest.status_code == 204, rest.text
    assert rest.headers["Levere-Checksum"] == f"md5={md5},sha256={sha256}"
    # the grant was for that upload only: the expired token starts nothing new
    again = tus_create(client, c, "RUN42", "lane1/next.fastq.gz", 10, role="short")
    assert again.status_code == 401 and "expired" in again.json()["message"]


def test_an_expired_token_cannot_continue_another_upload_nor_a_revoked_one_its_own(
    ctx: Context, client: TestClient
) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    other = tus_create(client, c, "RUN42", "a.fastq.gz", 100)  # the staff's long-lived token
    c.tokens["short"] = short_lived_token(ctx, c.staff.email)
    own = tus_create(client, c, "RUN42", "b.fastq.gz", 100, role="short")
    assert other.status_code == own.status_code == 201
    time.sleep(LIFETIME + 0.5)
    bearer = {"Authorization": f"Bearer {c.tokens['short']}"}
    refused = tus_patch(client, c, other.headers["Location"], 0, b"x" * 100, **bearer)
    assert refused.status_code == 401
    with ctx.tx() as session:
        record = session.execute(
            select(ApiToken).where(ApiToken.secret_hash == accounts.sha256(c.tokens["short"]))
        ).scalar_one()
        record.revoked_at = utcnow()
    revoked = tus_patch(client, c, own.headers["Location"], 0, b"x" * 100, **bearer)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]
    assert (
        client.head(other.headers["Location"], headers={**auth(c.tokens["staff"]), **TUS}).status_code == 200
    )
