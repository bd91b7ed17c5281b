"""Deliveries end to end through the API: open, batches of small files, seal with a checksum file,
manifests, immutability, e-mails, audit events, and every kind of bad input refused cleanly."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.api.routes.deliveries import BatchOut
from levere.context import Context
from levere.db.models import AuditEvent, Upload
from levere.domain.tiers import Tier
from levere.services import audit
from tests.conftest import Mailbox, body_of
from tests.deliveries_support import (
    area_kind,
    crew,
    delivery_bucket,
    digests,
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


def _actions(ctx: Context) -> list[str]:
    with ctx.tx() as session:
        return list(session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def test_open_list_and_show(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    made = client.post(
        f"/api/projects/{c.project}/deliveries",
        json={"name": "RUN42", "metadata": {"samples": ["S1", "S2"]}},
        headers=c.headers(),
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["name"], body["project"], body["state"], body["file_count"], body["total_bytes"]) == (
        "RUN42", c.project, "open", 0, 0,
    )  # fmt: skip
    assert body["metadata"] == {"samples": ["S1", "S2"]}
    again = client.post(f"/api/projects/{c.project}/deliveries", json={"name": "RUN42"}, headers=c.headers())
    assert again.status_code == 409
    assert again.json()["details"]["state"] == "open"
    listed = client.get(f"/api/projects/{c.project}/deliveries", headers=c.headers("viewer")).json()
    assert [d["name"] for d in listed] == ["RUN42"] and "files" not in listed[0]
    shown = client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers("member")).json()
    assert shown["files"] == [] and shown["uploads"] == []
    assert "delivery.opened" in _actions(ctx)


@pytest.mark.parametrize("name", ["../evil", "a/b", "", "x\x00y", "tab\there", "n" * 256, "/abs"])
def test_bad_delivery_names_are_refused(client: TestClient, ctx: Context, name: str) -> None:
    c = crew(ctx)
    r = client.post(f"/api/projects/{c.project}/deliveries", json={"name": name}, headers=c.headers())
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_path"
    assert client.get(f"/api/projects/{c.project}/deliveries", headers=c.headers()).json() == []


def test_only_assigned_facility_staff_open_and_upload(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    for role in ("other_staff", "member", "admin", "viewer", "helpdesk", "outsider"):
        r = client.post(
            f"/api/projects/{c.project}/deliveries", json={"name": f"R-{role}"}, headers=c.headers(role)
        )
        assert r.status_code == 403, (role, r.text)
    open_delivery(client, c)
    for role in ("other_staff", "member", "viewer", "outsider"):
        r = tus_create(client, c, "RUN42", "a.txt", 10, role=role)
        assert r.status_code == 403, (role, r.text)
        assert send_batch(client, c, "RUN42", tar_of({"a.txt": b"x"}), role=role).status_code == 403
    assert quota(ctx, c.project).reserved_bytes == 0


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../escape.txt", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("a/../../b", "climbs out"),
        ("nul\x00byte", "control"),
        ("bell\x07", "control"),
        ("n" * 256 + ".fq", "255 bytes"),
        ("back\\slash", "backslash"),
        ("a//b", "empty"),
    ],
)
def test_bad_paths_are_refused_before_anything_is_stored(
    client: TestClient, ctx: Context, path: str, why: str
) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    r = tus_create(client, c, "RUN42", path, 10)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_path" and why in r.json()["message"]
    body = tar_of({path: b"0123456789", "good.txt": b"fine"})
    result = send_batch(client, c, "RUN42", body).json()
    assert [f["path"] for f in result["stored"]] == ["good.txt"]
    [failed] = result["failed"]
    assert failed["error"] == "invalid_path" and why in failed["message"]
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (4, 0)
    assert [o.key for o in ctx.backend(Tier.AREA).list(f"{c.project}/")] == [f"{c.project}/RUN42/good.txt"]


def test_duplicate_paths_in_one_delivery(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    assert tus_upload(client, c, "RUN42", "dup.txt", b"first").status_code == 204
    r = tus_create(client, c, "RUN42", "dup.txt", 6)
    assert r.status_code == 409 and r.json()["error"] == "already_exists"
    # a path that is being uploaded cannot be started twice either
    assert tus_create(client, c, "RUN42", "busy.txt", 6).status_code == 201
    assert tus_create(client, c, "RUN42", "busy.txt", 6).status_code == 409
    # in a batch: the same path twice, and paths already there (same bytes: stored; else refused)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            ("twice.txt", b"one"),
            ("twice.txt", b"two"),
            ("dup.txt", b"first"),
            ("busy.txt", b"zz"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = send_batch(client, c, "RUN42", out.getvalue()).json()
    assert sorted(f["path"] for f in result["stored"]) == ["dup.txt", "twice.txt"]
    assert sorted((f["path"], f["error"]) for f in result["failed"]) == [
        ("busy.txt", "already_exists"), ("twice.txt", "duplicate"),
    ]  # fmt: skip
    changed = send_batch(client, c, "RUN42", tar_of({"dup.txt": b"other bytes"})).json()
    assert changed["stored"] == [] and changed["failed"][0]["error"] == "already_exists"
    files = {
        f["path"]: f
        for f in client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()[
            "files"
        ]
    }
    assert files["twice.txt"]["md5"] == hashlib.md5(b"one").hexdigest()
    assert b"".join(ctx.backend(Tier.AREA).read(f"{c.project}/RUN42/dup.txt")) == b"first"


def test_a_batch_stores_verified_files_and_refuses_the_damaged(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    files = {f"lane{i % 3}/read_{i:04d}.fq": os.urandom(4096) for i in range(250)}
    files["empty.txt"] = b""
    files["damaged.fq"] = b"these bytes were changed on the way"
    wrong = {"damaged.fq": digests(b"the original bytes")}
    r = send_batch(client, c, "RUN42", tar_of(files, checksums=wrong))
    assert r.status_code == 200, r.text
    result = r.json()
    BatchOut.model_validate(result)  # the answer has the documented shape
    assert len(result["stored"]) == 251
    assert [(f["path"], f["error"]) for f in result["failed"]] == [("damaged.fq", "checksum_mismatch")]
    # a refused file says what arrived, so the client can put it in the checksum file's words
    assert (result["failed"][0]["md5"], result["failed"][0]["sha256"]) == digests(files["damaged.fq"])
    shown = client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()
    assert shown["file_count"] == 251 and shown["total_bytes"] == 250 * 4096
    stored = {f["path"]: f for f in shown["files"]}
    for path, data in files.items():
        if path == "damaged.fq":
            assert path not in stored
            continue
        assert (stored[path]["md5"], stored[path]["sha256"]) == digests(data)
        assert stored[path]["tiers"] == {"area": "present"}
    assert not ctx.backend(Tier.AREA).exists(f"{c.project}/RUN42/damaged.fq")
    sample = "lane1/read_0001.fq"
    assert b"".join(ctx.backend(Tier.AREA).read(f"{c.project}/RUN42/{sample}")) == files[sample]
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (250 * 4096, 0)
    with ctx.tx() as session:
        batch_rows = session.execute(select(Upload).where(Upload.kind == "batch")).scalars().all()
        assert [(u.state, u.length) for u in batch_rows] == [("complete", 0)]
    assert "delivery.files_stored" in _actions(ctx)


def test_a_batch_can_answer_with_the_stored_paths_alone(client: TestClient, ctx: Context) -> None:
    """``?stored=paths``: the same files stored and refused, named by path; a resent file counts as
    stored only if its bytes are both the stored ones and the ones its member names."""
    c = crew(ctx)
    open_delivery(client, c)
    files = {f"lane{i % 2}/r{i:03d}.fq": os.urandom(100 + i) for i in range(40)}
    files["damaged.fq"] = b"changed on the way"
    wrong = {"damaged.fq": digests(b"the original bytes")}
    url = f"/api/projects/{c.project}/deliveries/RUN42/batch?stored=paths"
    headers = {**c.headers(), "Content-Type": "application/x-tar"}
    r = client.post(url, content=tar_of(files, checksums=wrong), headers=headers)
    assert r.status_code == 200, r.text
    answer = BatchOut.model_validate(r.json())
    assert answer.stored == [] and sorted(answer.stored_paths) == sorted(
        p for p in files if p != "damaged.fq"
    )
    assert [(f.path, f.error) for f in answer.failed] == [("damaged.fq", "checksum_mismatch")]
    shown = client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()
    assert {f["path"]: (f["md5"], f["sha256"]) for f in shown["files"]} == {
        p: digests(d) for p, d in files.items() if p != "damaged.fq"
    }
    # sent again: the same bytes are stored; the same bytes under a member naming other ones are not
    again = {"lane0/r000.fq": files["lane0/r000.fq"], "lane1/r001.fq": files["lane1/r001.fq"]}
    claims = {"lane1/r001.fq": digests(b"what the sender read")}
    r = client.post(url, content=tar_of(again, checksums=claims), headers=headers)
    answer = BatchOut.model_validate(r.json())
    assert answer.stored_paths == ["lane0/r000.fq"]
    assert [(f.path, f.error) for f in answer.failed] == [("lane1/r001.fq", "checksum_mismatch")]
    # the default answer lists each file with its checksums, as before
    r = send_batch(client, c, "RUN42", tar_of({"more.fq": b"more"}))
    assert [(f["path"], f["sha256"]) for f in r.json()["stored"]] == [("more.fq", digests(b"more")[1])]
    assert r.json()["stored_paths"] == []


def test_a_batch_that_meets_a_storage_failure_keeps_and_records_the_files_before_it(
    client: TestClient, ctx: Context
) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    area = ctx.backend(Tier.AREA)
    if not hasattr(area, "root"):
        pytest.skip("needs the local backend: a stray file on the disk blocks a folder")
    # something outside levere left a file where the batch needs a folder
    (area.root / c.project / "RUN42").mkdir(parents=True, exist_ok=True)
    (area.root / c.project / "RUN42" / "blocked").write_bytes(b"stray")
    files = {"lane1/a.fq": b"a" * 3000, "blocked/b.fq": b"b" * 3000, "lane1/c.fq": b"c" * 3000}
    r = send_batch(client, c, "RUN42", tar_of(files))
    assert r.status_code == 409, r.text
    assert "blocked" in r.json()["message"]
    shown = client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()
    assert [f["path"] for f in shown["files"]] == ["lane1/a.fq"]  # stored before the failure: kept
    assert not area.exists(f"{c.project}/RUN42/lane1/c.fq")  # nothing after it was published
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (3000, 0)


def test_a_batch_refuses_links_devices_and_non_tar_bodies(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        link = tarfile.TarInfo("outside")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(link)
        folder = tarfile.TarInfo("sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        info = tarfile.TarInfo("sub/real.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"real"))
    result = send_batch(client, c, "RUN42", out.getvalue()).json()
    assert [f["path"] for f in result["stored"]] == ["sub/real.txt"]
    assert [(f["path"], f["error"]) for f in result["failed"]] == [("outside", "not_a_file")]
    r = client.post(
        f"/api/projects/{c.project}/deliveries/RUN42/batch",
        content=b"not a tar",
        headers={**c.headers(), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    garbage = send_batch(client, c, "RUN42", b"\x01" * 2048).json()
    assert garbage["stored"] == [] and garbage["failed"][0]["error"] == "invalid_archive"
    assert quota(ctx, c.project).reserved_bytes == 0


def _checksum_file(files: dict[str, bytes]) -> bytes:
    return "".join(f"{digests(d)[0]}  ./{p}\n" for p, d in files.items()).encode()


def test_seal_verifies_against_the_runs_checksum_file(
    client: TestClient, ctx: Context, mailbox: Mailbox
) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    files = {"S1_R1.fastq.gz": os.urandom(5000), "S1_R2.fastq.gz": os.urandom(7000), "sub/S2.bam": b"bam"}
    files["md5sum.txt"] = _checksum_file(files)
    assert len(send_batch(client, c, "RUN42", tar_of(files)).json()["stored"]) == 4
    r = client.post(
        f"/api/projects/{c.project}/deliveries/RUN42/seal",
        json={"checksum_file": "md5sum.txt"},
        headers=c.headers(),
    )
    assert r.status_code == 200, r.text
    sealed = r.json()
    assert sealed["state"] == "sealed" and sealed["sealed_at"] and sealed["file_count"] == 4
    manifest = client.get(
        f"/api/projects/{c.project}/deliveries/RUN42/manifest", headers=c.headers("viewer")
    ).text
    assert manifest == "".join(f"{digests(files[p])[0]}  {p}\n" for p in sorted(files))
    assert hashlib.sha256(manifest.encode()).hexdigest() == sealed["manifest_sha256"]
    as_json = client.get(
        f"/api/projects/{c.project}/deliveries/RUN42/manifest", params={"format": "json"}, headers=c.headers()
    ).json()
    assert {f["path"]: (f["size"], f["md5"], f["sha256"]) for f in as_json["files"]} == {
        p: (len(d), *digests(d)) for p, d in files.items()
    }
    sha = client.get(
        f"/api/projects/{c.project}/deliveries/RUN42/manifest",
        params={"format": "sha256sum"},
        headers=c.headers(),
    ).text
    assert f"{digests(files['sub/S2.bam'])[1]}  sub/S2.bam\n" in sha
    for member in ("pi@uib.example.org", "member@uib.example.org", "viewer@uib.example.org"):
        message = mailbox.wait_for(member, "RUN42")
        assert sealed["manifest_sha256"] in body_of(message)
    actions = _actions(ctx)
    assert actions.index("delivery.opened") < actions.index("delivery.sealed")
    with ctx.tx() as session:
        assert audit.verify_chain(session).ok


def test_a_sealed_delivery_is_immutable(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    assert tus_upload(client, c, "RUN42", "a.txt", b"aaa").status_code == 204
    assert (
        client.post(f"/api/projects/{c.project}/deliveries/RUN42/seal", headers=c.headers()).status_code
        == 200
    )
    r = tus_create(client, c, "RUN42", "b.txt", 3)
    assert r.status_code == 409 and "sealed" in r.json()["message"]
    r = send_batch(client, c, "RUN42", tar_of({"b.txt": b"bbb"}))
    assert r.status_code == 409
    again = client.post(f"/api/projects/{c.project}/deliveries/RUN42/seal", headers=c.headers())
    assert again.status_code == 409
    assert quota(ctx, c.project).reserved_bytes == 0
    assert [
        f["path"]
        for f in client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()[
            "files"
        ]
    ] == ["a.txt"]


def test_a_mismatch_with_the_checksum_file_fails_the_delivery(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    files = {"good.fq": b"good", "bad.fq": b"stored bytes"}
    listed = {**files, "bad.fq": b"what the facility had", "missing.fq": b"never sent"}
    files["md5sum.txt"] = _checksum_file(listed)
    send_batch(client, c, "RUN42", tar_of(files))
    r = client.post(
        f"/api/projects/{c.project}/deliveries/RUN42/seal",
        json={"checksum_file": "md5sum.txt"},
        headers=c.headers(),
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "checksum_mismatch"
    assert "bad.fq" in r.json()["message"] and "missing.fq" in r.json()["message"]
    shown = client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()
    assert shown["state"] == "failed"
    assert "bad.fq" in shown["failure_reason"] and "missing.fq" in shown["failure_reason"]
    assert "good.fq" not in shown["failure_reason"]
    assert "delivery.failed" in _actions(ctx)
    assert tus_create(client, c, "RUN42", "more.fq", 3).status_code == 409


def test_sealing_waits_for_uploads_in_progress(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    url = tus_create(client, c, "RUN42", "slow.bin", 10).headers["Location"]
    r = client.post(f"/api/projects/{c.project}/deliveries/RUN42/seal", headers=c.headers())
    assert r.status_code == 409 and "in progress" in r.json()["message"]
    assert tus_patch(client, c, url, 0, b"0123456789").status_code == 204
    assert (
        client.post(f"/api/projects/{c.project}/deliveries/RUN42/seal", headers=c.headers()).status_code
        == 200
    )


def test_seal_needs_the_checksum_file_to_be_in_the_delivery(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    r = client.post(
        f"/api/projects/{c.project}/deliveries/RUN42/seal",
        json={"checksum_file": "md5sum.txt"},
        headers=c.headers(),
    )
    assert r.status_code == 422 and "md5sum.txt" in r.json()["message"]
    assert (
        client.get(f"/api/projects/{c.project}/deliveries/RUN42", headers=c.headers()).json()["state"]
        == "open"
    )


def test_uploading_to_a_project_the_user_is_not_assigned_to(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    other = crew_other_project(ctx)
    open_delivery(client, c)
    r = tus_create(client, c, "RUN42", "x.txt", 3, project=other)
    assert r.status_code == 403
    r = client.post(f"/api/projects/{other}/deliveries", json={"name": "RUN1"}, headers=c.headers())
    assert r.status_code == 403


def crew_other_project(ctx: Context) -> str:
    """A project of another facility, which the crew's staff is not assigned to."""
    from levere.services import applications
    from tests.helpers import complete_form, make_user

    pi = make_user(ctx, "pi2@uio.example.org", password=None)
    with ctx.tx() as session:
        from levere.db.models import User

        staff = session.execute(select(User).where(User.email == "staff@other-seq.example.org")).scalar_one()
        helpdesk = session.execute(select(User).where(User.email == "helpdesk@levere.test")).scalar_one()
    application = applications.create(ctx, staff, complete_form("other-seq", pi.email, members=[]))
    applications.submit(ctx, pi, str(application.number))
    _, project = applications.approve(ctx, helpdesk, str(application.number))
    return project.identifier


def test_files_listing_with_prefix_and_tiers(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c, "RUN1")
    open_delivery(client, c, "RUN2")
    send_batch(client, c, "RUN1", tar_of({"a/x.fq": b"1", "a/y.fq": b"22", "b/z.fq": b"333"}))
    send_batch(client, c, "RUN2", tar_of({"a/x.fq": b"4444"}))
    base = f"/api/projects/{c.project}/files"
    every = client.get(base, headers=c.headers("viewer")).json()
    assert [f["path"] for f in every] == ["RUN1/a/x.fq", "RUN1/a/y.fq", "RUN1/b/z.fq", "RUN2/a/x.fq"]
    assert all(f["tiers"] == {"area": "present"} for f in every)
    narrowed = client.get(base, params={"prefix": "RUN1/a/"}, headers=c.headers("member")).json()
    assert [f["path"] for f in narrowed] == ["RUN1/a/x.fq", "RUN1/a/y.fq"]
    assert [f["size"] for f in client.get(base, params={"prefix": "RUN2/"}, headers=c.headers()).json()] == [
        4
    ]
    assert client.get(base, params={"prefix": "RUN%"}, headers=c.headers()).json() == []
    assert client.get(base, headers=c.headers("outsider")).status_code == 403


def test_a_name_cannot_be_both_a_file_and_a_folder(client: TestClient, ctx: Context) -> None:
    c = crew(ctx)
    open_delivery(client, c)
    assert tus_upload(client, c, "RUN42", "reads", b"a file").status_code == 204
    assert tus_upload(client, c, "RUN42", "lane1/x.fq", b"x").status_code == 204
    r = tus_create(client, c, "RUN42", "reads/inside.fq", 3)
    assert r.status_code == 409 and "both a file and a folder" in r.json()["message"]
    assert tus_create(client, c, "RUN42", "lane1", 3).status_code == 409
    result = send_batch(
        client, c, "RUN42", tar_of({"reads/deeper.fq": b"1", "lane1": b"2", "new/a": b"3", "new/a/b": b"4"})
    ).json()
    assert [f["path"] for f in result["stored"]] == ["new/a"]
    assert sorted((f["path"], f["error"]) for f in result["failed"]) == [
        ("lane1", "path_conflict"), ("new/a/b", "path_conflict"), ("reads/deeper.fq", "path_conflict"),
    ]  # fmt: skip
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (8, 0)
