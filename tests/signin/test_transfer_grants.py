"""Transfer grants through the API: once its token has expired, a grant carries exactly the requests
of the one transfer it was issued for (a delivery, a download, a job), until that transfer ends;
nothing else, and never for another token. Issuing and ending are audit events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.db.models import ApiToken, AuditEvent, JobRun, TransferGrant, User, utcnow
from levere.services import accounts, sync
from levere.transfer.wire import GRANT_HEADER
from tests.deliveries_support import (
    TUS,
    Crew,
    crew,
    open_delivery,
    send_batch,
    tar_of,
    tus_create,
    tus_patch,
)
from tests.helpers import auth


def grant(client: TestClient, c: Crew, role: str, kind: str, target: str, token: str | None = None) -> Any:
    base = f"/api/projects/{c.project}"
    headers = auth(token) if token else c.headers(role)
    if kind == "download":
        return client.post(f"{base}/download-grants", json={"target": target}, headers=headers)
    what = "deliveries" if kind == "delivery" else "jobs"
    return client.post(f"{base}/{what}/{target}/transfer-grant", headers=headers)


def expire(ctx: Context, token: str) -> None:
    with ctx.tx() as session:
        record = session.execute(
            select(ApiToken).where(ApiToken.secret_hash == accounts.sha256(token))
        ).scalar_one()
        record.expires_at = utcnow() - timedelta(seconds=1)


def granted(c: Crew, role: str, grant_id: str) -> dict[str, str]:
    return {**c.headers(role), GRANT_HEADER: grant_id}


def events(ctx: Context, action: str, grant_id: str) -> list[AuditEvent]:
    with ctx.tx() as session:
        return list(
            session.execute(
                select(AuditEvent).where(AuditEvent.action == action, AuditEvent.object_id == grant_id)
            ).scalars()
        )


def stored(c: Crew, client: TestClient, delivery: str) -> list[str]:
    page = client.get(f"/api/projects/{c.project}/deliveries/{delivery}/files", headers=c.headers("admin"))
    return [f["path"] for f in page.json()["files"]]


def test_a_delivery_grant_carries_that_delivery_alone_until_it_is_sealed(
    ctx: Context, client: TestClient
) -> None:
    c = crew(ctx)
    open_delivery(client, c, "RUN42")
    open_delivery(client, c, "RUN43")
    made = grant(client, c, "staff", "delivery", "RUN42")
    assert made.status_code == 201, made.text
    grant_id = made.json()["id"]
    assert [e.actor_id for e in events(ctx, "transfer_grant.issued", grant_id)] == [c.staff.id]
    expire(ctx, c.tokens["staff"])
    headers = granted(c, "staff", grant_id)
    base = f"/api/projects/{c.project}/deliveries"
    # without the grant the expired token does nothing
    refused = send_batch(client, c, "RUN42", tar_of({"a.txt": b"a"}))
    assert refused.status_code == 401 and "expired" in refused.json()["message"]
    # with it: the delivery's batches, tus uploads, file pages and seal
    body = tar_of({"a.txt": b"a"})
    batch = client.post(
        f"{base}/RUN42/batch", content=body, headers={**headers, "Content-Type": "application/x-tar"}
    )
    assert batch.status_code == 200, batch.text
    created = tus_create(client, c, "RUN42", "b.fastq", 3, extra=None)  # the valid token is not this one
    assert created.status_code == 401
    created = client.post(
        "/api/tus/",
        headers={**headers, **TUS, "Upload-Length": "3", "Upload-Metadata": _meta(c, "RUN42", "b.fastq")},
    )
    assert created.status_code == 201, created.text
    patched = tus_patch(client, c, created.headers["Location"], 0, b"bbb", **headers)
    assert patched.status_code == 204, patched.text
    assert client.get(f"{base}/RUN42/files", headers=headers).json()["delivery"]["file_count"] == 2
    # ... and nothing else: another delivery, a new upload elsewhere, a new delivery, the account,
    # the project, a download
    other = client.post(
        f"{base}/RUN43/batch", content=body, headers={**headers, "Content-Type": "application/x-tar"}
    )
    assert other.status_code == 401 and "not part of that transfer" in other.json()["message"]
    elsewhere = client.post(
        "/api/tus/",
        headers={**headers, **TUS, "Upload-Length": "3", "Upload-Metadata": _meta(c, "RUN43", "c.fastq")},
    )
    assert elsewhere.status_code == 401
    assert client.post(base, json={"name": "RUN44"}, headers=headers).status_code == 401
    assert client.get("/api/me", headers=headers).status_code == 401
    assert client.get(f"/api/projects/{c.project}", headers=headers).status_code == 401
    assert client.get(f"/api/projects/{c.project}/data/RUN42/a.txt", headers=headers).status_code == 401
    assert client.post(f"{base}/RUN43/seal", json={}, headers=headers).status_code == 401
    assert stored(c, client, "RUN43") == []
    # the seal ends the transfer: the grant carries nothing afterwards, and says so once, audited
    sealed = client.post(f"{base}/RUN42/seal", json={}, headers=headers)
    assert sealed.status_code == 200 and sealed.json()["state"] == "sealed", sealed.text
    # (the request that finds the delivery sealed is the last: the client reads the end it waited for)
    assert client.get(f"{base}/RUN42/files", headers=headers).json()["delivery"]["state"] == "sealed"
    after = client.get(f"{base}/RUN42/files", headers=headers)
    assert after.status_code == 401 and "has ended" in after.json()["message"]
    ended = events(ctx, "transfer_grant.ended", grant_id)
    assert len(ended) == 1 and ended[0].after["reason"] == "delivery_ended"


def _meta(c: Crew, delivery: str, path: str) -> str:
    from levere.transfer.wire import encode_metadata

    return encode_metadata({"project": c.project, "delivery": delivery, "path": path})


def test_a_grant_is_for_its_own_token_and_ends_with_revocation_or_its_end(
    ctx: Context, client: TestClient
) -> None:
    c = crew(ctx)
    open_delivery(client, c, "RUN42")
    grant_id = grant(client, c, "staff", "delivery", "RUN42").json()["id"]
    body = tar_of({"a.txt": b"a"})
    url = f"/api/projects/{c.project}/deliveries/RUN42/batch"
    tar = {"Content-Type": "application/x-tar"}
    # another expired token, even of someone allowed the same delivery, cannot borrow it
    with ctx.tx() as session:
        second = accounts.issue_token(ctx, session, session.merge(c.staff), "second").token
    expire(ctx, second)
    expire(ctx, c.tokens["staff"])
    assert (
        client.post(url, content=body, headers={**auth(second), GRANT_HEADER: grant_id, **tar}).status_code
        == 401
    )
    # an unknown grant id is no grant
    unknown = {**c.headers("staff"), GRANT_HEADER: "0" * 36, **tar}
    assert client.post(url, content=body, headers=unknown).status_code == 401
    # the client ends it (with the expired token): it is over, audited
    assert client.delete(f"/api/transfer-grants/{grant_id}", headers=c.headers("staff")).status_code == 204
    assert client.post(url, content=body, headers={**granted(c, "staff", grant_id), **tar}).status_code == 401
    assert events(ctx, "transfer_grant.ended", grant_id)[0].after["reason"] == "finished"
    # a revoked token's grant carries nothing, whatever its transfer
    with ctx.tx() as session:
        third = accounts.issue_token(ctx, session, session.merge(c.staff), "third")
        third_token = third.token
    # an expired token gets no new grant
    assert grant(client, c, "staff", "delivery", "RUN42").status_code == 401
    made = grant(client, c, "staff", "delivery", "RUN42", token=third_token)
    assert made.status_code == 201
    with ctx.tx() as session:
        session.get(ApiToken, third.record.id).revoked_at = utcnow()  # type: ignore[union-attr]
    revoked = client.post(
        url, content=body, headers={**auth(third_token), GRANT_HEADER: made.json()["id"], **tar}
    )
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]
    assert stored(c, client, "RUN42") == []


def test_only_who_may_do_the_transfer_gets_a_grant_for_it(ctx: Context, client: TestClient) -> None:
    c = crew(ctx)
    open_delivery(client, c, "RUN42")
    assert grant(client, c, "viewer", "delivery", "RUN42").status_code == 403
    assert grant(client, c, "other_staff", "delivery", "RUN42").status_code in (403, 404)
    assert grant(client, c, "outsider", "download", "RUN42").status_code in (403, 404)
    assert grant(client, c, "staff", "delivery", "NOPE").status_code == 404
    assert grant(client, c, "staff", "job", "no-such-job").status_code == 404
    client.post(f"/api/projects/{c.project}/deliveries/RUN42/seal", json={}, headers=c.headers("staff"))
    assert grant(client, c, "staff", "delivery", "RUN42").status_code == 409  # sealed: nothing to send
    with ctx.tx() as session:
        count = len(list(session.execute(select(TransferGrant)).scalars()))
    assert count == 0


def _sealed_with(client: TestClient, c: Crew, name: str, files: dict[str, bytes]) -> None:
    open_delivery(client, c, name)
    assert (
        client.post(
            f"/api/projects/{c.project}/deliveries/{name}/batch",
            content=tar_of(files),
            headers={**c.headers("staff"), "Content-Type": "application/x-tar"},
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/api/projects/{c.project}/deliveries/{name}/seal", json={}, headers=c.headers("staff")
        ).status_code
        == 200
    )


def test_a_download_grant_carries_the_bytes_of_its_file_or_delivery_only(
    ctx: Context, client: TestClient
) -> None:
    c = crew(ctx)
    _sealed_with(client, c, "RUN42", {"a/x.fq": b"x" * 10, "a/y.fq": b"y" * 10})
    _sealed_with(client, c, "RUN43", {"z.fq": b"z" * 10})
    one = grant(client, c, "member", "download", "RUN42/a/x.fq").json()["id"]
    whole = grant(client, c, "member", "download", "RUN42").json()["id"]
    expire(ctx, c.tokens["member"])
    data = f"/api/projects/{c.project}/data"
    assert client.get(f"{data}/RUN42/a/x.fq", headers=c.headers("member")).status_code == 401
    got = client.get(f"{data}/RUN42/a/x.fq", headers={**granted(c, "member", one), "Range": "bytes=2-"})
    assert got.status_code == 206 and got.content == b"x" * 8
    assert client.get(f"{data}/RUN42/a/y.fq", headers=granted(c, "member", one)).status_code == 401
    assert client.get(f"{data}/RUN42/a/y.fq", headers=granted(c, "member", whole)).content == b"y" * 10
    assert client.get(f"{data}/RUN43/z.fq", headers=granted(c, "member", whole)).status_code == 401
    files = f"/api/projects/{c.project}/files"
    listed = client.get(files, params={"prefix": "RUN42"}, headers=granted(c, "member", whole))
    assert sorted(f["path"] for f in listed.json()) == ["RUN42/a/x.fq", "RUN42/a/y.fq"]
    assert client.get(files, headers=granted(c, "member", whole)).status_code == 401
    # a download grant writes nothing
    assert (
        client.post(
            f"/api/projects/{c.project}/deliveries",
            json={"name": "RUN44"},
            headers=granted(c, "member", whole),
        ).status_code
        == 401
    )
    assert (
        client.get(
            f"/api/projects/{c.project}/deliveries/RUN42", headers=granted(c, "member", whole)
        ).status_code
        == 401
    )


def test_a_job_grant_reads_its_job_to_the_end_once(ctx: Context, client: TestClient) -> None:
    c = crew(ctx)
    _sealed_with(client, c, "RUN42", {"x.fq": b"x" * 10})
    _sealed_with(client, c, "RUN43", {"y.fq": b"y" * 10})
    with ctx.tx() as session:
        helpdesk = session.execute(
            select(ApiToken.user_id).where(ApiToken.secret_hash == accounts.sha256(c.tokens["helpdesk"]))
        ).scalar_one()
    with ctx.tx() as session:
        operator = session.get(User, helpdesk)
        session.expunge(operator)
    assert operator is not None
    first = sync.request_sync(ctx, operator, c.project, "RUN42")
    second = sync.request_sync(ctx, operator, c.project, "RUN43")
    with ctx.tx() as session:  # the test's queue runs jobs at once: these two are still going
        for run_id in (first.id, second.id):
            session.get(JobRun, run_id).state = "running"  # type: ignore[union-attr]
    made = grant(client, c, "helpdesk", "job", first.id)
    assert made.status_code == 201, made.text
    grant_id = made.json()["id"]
    expire(ctx, c.tokens["helpdesk"])
    headers = granted(c, "helpdesk", grant_id)
    jobs = f"/api/projects/{c.project}/jobs"
    assert client.get(f"{jobs}/{first.id}", headers=headers).json()["state"] == "running"
    assert client.get(f"/api/jobs/{first.id}", headers=headers).status_code == 200
    assert client.get(f"{jobs}/{second.id}", headers=headers).status_code == 401
    assert client.get(jobs, headers=headers).status_code == 401
    assert client.post(f"/api/projects/{c.project}/sync", json={}, headers=headers).status_code == 401
    with ctx.tx() as session:
        run = session.get(JobRun, first.id)
        assert run is not None
        run.state = "done"
    # the read that sees the end is the last one the grant carries
    assert client.get(f"{jobs}/{first.id}", headers=headers).json()["state"] == "done"
    assert client.get(f"{jobs}/{first.id}", headers=headers).status_code == 401
    ended = events(ctx, "transfer_grant.ended", grant_id)
    assert len(ended) == 1 and ended[0].after["reason"] == "job_ended"


def test_a_delivery_grant_resumes_an_upload_an_earlier_token_started(
    ctx: Context, client: TestClient
) -> None:
    c = crew(ctx)
    open_delivery(client, c, "RUN42")
    open_delivery(client, c, "RUN43")
    earlier = tus_create(client, c, "RUN42", "big.fastq", 6)  # an earlier run, another token
    elsewhere = tus_create(client, c, "RUN43", "big.fastq", 6)
    assert earlier.status_code == elsewhere.status_code == 201
    with ctx.tx() as session:
        later = accounts.issue_token(ctx, session, session.merge(c.staff), "later").token
    made = grant(client, c, "staff", "delivery", "RUN42", token=later)
    assert made.status_code == 201
    expire(ctx, later)
    headers = {**auth(later), GRANT_HEADER: made.json()["id"]}
    assert tus_patch(client, c, earlier.headers["Location"], 0, b"abc", **auth(later)).status_code == 401
    resumed = tus_patch(client, c, earlier.headers["Location"], 0, b"abcdef", **headers)
    assert resumed.status_code == 204, resumed.text
    assert tus_patch(client, c, elsewhere.headers["Location"], 0, b"abcdef", **headers).status_code == 401
