"""Sync to long-term storage, status, freeing and restoring: through the API, the CLI and the services."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.db.models import AuditEvent
from levere.domain.errors import AlreadyExists, Conflict
from levere.domain.tiers import Tier
from levere.services import accounts, projects, sync
from tests.conftest import LiveServer, Mailbox, body_of
from tests.helpers import auth, token_for
from tests.sync_support import (
    area_path,
    deliver,
    levere,
    longterm_path,
    mails_to,
    quota,
    random_files,
    replica_states,
    replicas,
    runs,
    setup_project,
)

MiB = 1024 * 1024


def sha256_of(path: Any) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def audit_actions(ctx: Context) -> list[str]:
    with ctx.tx() as session:
        return list(session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def test_sealing_in_an_auto_project_copies_verifies_and_tells_people_once(
    ctx: Context, client: TestClient, mailbox: Mailbox
) -> None:
    s = setup_project(ctx, sync_mode="auto")
    files = random_files(4, 5000) | {"big/run.bam": os.urandom(9 * MiB), "empty.txt": b""}
    deliver(ctx, s, "RUN1", files)

    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    for path, data in files.items():
        stored = longterm_path(ctx, f"{s.project}/RUN1/{path}")
        assert Path(stored).read_bytes() == data
        assert stat.S_IMODE(os.stat(stored).st_mode) & 0o222 == 0  # write-once: read-only
    total = sum(len(d) for d in files.values())
    used = quota(ctx, s, "longterm")
    assert (used.used_bytes, used.reserved_bytes) == (total, 0)
    (run,) = runs(ctx, "sync")
    assert (run.state, run.files_done, run.bytes_done, run.files_failed) == ("done", 6, total, 0)
    assert all(r.verified_at is not None and r.attempts == 1 for r in replicas(ctx, s, "longterm"))

    # the File JSON of the deliveries API shows both tiers
    token = token_for(ctx, s.world.pi)
    shown = client.get(f"/api/projects/{s.project}/deliveries/RUN1", headers=auth(token)).json()
    assert {f["path"]: f["tiers"] for f in shown["files"]}["big/run.bam"] == {
        "area": "present",
        "longterm": "present",
    }
    # the project admin (the PI) and the helpdesk hear about it, once each
    for who in (s.world.pi.email, s.world.helpdesk.email):
        mails = [m for m in mails_to(mailbox, who) if "safely on long-term storage" in m["Subject"]]
        assert len(mails) == 1, [m["Subject"] for m in mailbox.to(who)]
        assert "6 files" in body_of(mails[0]) and f"levere free {s.project} RUN1" in body_of(mails[0])
    assert not [m for m in mailbox.to("member@uib.example.org") if "long-term" in m["Subject"]]
    assert "delivery.synced" in audit_actions(ctx)


def test_manual_project_waits_for_the_helpdesk(ctx: Context, client: TestClient, mailbox: Mailbox) -> None:
    s = setup_project(ctx, sync_mode="manual")
    deliver(ctx, s, "RUN1", random_files(3, 1000))
    assert set(replica_states(ctx, s, "longterm").values()) == {"pending"}
    assert runs(ctx) == []

    status = client.get(f"/api/projects/{s.project}/sync-status", headers=auth(token_for(ctx, s.world.pi)))
    assert status.status_code == 200
    (d,) = status.json()["deliveries"]
    assert (d["name"], d["files"], d["area"], d["longterm"]) == ("RUN1", 3, "present", "pending")
    assert d["tiers"]["longterm"]["pending"]["files"] == 3

    # only the helpdesk syncs
    denied = client.post(f"/api/projects/{s.project}/sync", json={}, headers=auth(token_for(ctx, s.world.pi)))
    assert denied.status_code == 403
    job = client.post(
        f"/api/projects/{s.project}/sync",
        json={"delivery": "RUN1"},
        headers=auth(token_for(ctx, s.world.helpdesk)),
    )
    assert job.status_code == 202, job.text
    assert (job.json()["kind"], job.json()["delivery"]) == ("sync", "RUN1")
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    shown = client.get(
        f"/api/projects/{s.project}/jobs/{job.json()['id']}", headers=auth(token_for(ctx, s.world.pi))
    ).json()
    assert (shown["state"], shown["files_done"], shown["created_by"]) == ("done", 3, s.world.helpdesk.email)
    assert shown["report"]["states"] == {"present": {"files": 3, "bytes": 3000}}

    unknown = client.post(
        f"/api/projects/{s.project}/sync",
        json={"delivery": "NOPE"},
        headers=auth(token_for(ctx, s.world.helpdesk)),
    )
    assert unknown.status_code == 404 and "NOPE" in unknown.json()["message"]


def test_running_sync_twice_copies_nothing_twice(ctx: Context) -> None:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", random_files(5, 2000))
    sync.request_sync(ctx, s.world.helpdesk, s.project)
    keys = [r.key for r in replicas(ctx, s, "longterm")]
    before = {k: os.stat(longterm_path(ctx, k)) for k in keys}
    used = quota(ctx, s, "longterm").used_bytes

    again = sync.request_sync(ctx, s.world.helpdesk, s.project)
    (second,) = [r for r in runs(ctx, "sync") if r.id == again.id]
    assert (second.state, second.files_total, second.files_done) == ("done", 0, 0)
    after = {k: os.stat(longterm_path(ctx, k)) for k in keys}
    assert {k: (v.st_ino, v.st_mtime_ns) for k, v in before.items()} == {
        k: (v.st_ino, v.st_mtime_ns) for k, v in after.items()
    }
    assert [r.attempts for r in replicas(ctx, s, "longterm")] == [1] * 5
    assert quota(ctx, s, "longterm").used_bytes == used


def test_longterm_copies_are_write_once(ctx: Context) -> None:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", {"a.fastq": b"ACGT" * 100})
    sync.request_sync(ctx, s.world.helpdesk, s.project)
    key = f"{s.project}/RUN1/a.fastq"
    longterm = ctx.backend(Tier.LONGTERM)
    with longterm.open_writer(key, write_once=True) as writer:
        writer.write(b"something else")
        with pytest.raises(AlreadyExists):
            writer.commit()
    with longterm.open_writer(key) as writer:
        writer.write(b"something else")
        with pytest.raises(AlreadyExists):
            writer.commit()
    with pytest.raises(Conflict, match="write-once"):
        longterm.delete(key)
    assert Path(longterm_path(ctx, key)).read_bytes() == b"ACGT" * 100


def test_longterm_quota_is_enforced_with_the_numbers(
    ctx: Context, client: TestClient, mailbox: Mailbox
) -> None:
    s = setup_project(ctx, quota_longterm_bytes=25_000)
    files = {f"f{i}.fastq": os.urandom(10_000) for i in range(3)}
    deliver(ctx, s, "RUN1", files)
    helpdesk = auth(token_for(ctx, s.world.helpdesk))
    job = client.post(f"/api/projects/{s.project}/sync", json={}, headers=helpdesk).json()

    shown = client.get(f"/api/projects/{s.project}/jobs/{job['id']}", headers=helpdesk).json()
    assert (shown["state"], shown["files_done"], shown["files_failed"]) == ("failed", 2, 1)
    (failure,) = shown["report"]["failures"]
    assert failure["path"] == "RUN1/f2.fastq"
    assert "needs 9.8 KiB but only 4.9 KiB" in failure["reason"] and "24.4 KiB" in failure["reason"]
    limit = quota(ctx, s, "longterm")
    assert (limit.used_bytes, limit.reserved_bytes) == (20_000, 0)
    status = client.get(f"/api/projects/{s.project}/sync-status", headers=helpdesk).json()
    (d,) = status["deliveries"]
    assert d["longterm"] == "failed"
    assert d["problems"][0]["path"] == "f2.fastq" and "needs" in d["problems"][0]["reason"]
    failed_mail = mailbox.wait_for(s.world.pi.email, "to long-term storage failed")
    assert "f2.fastq" in body_of(failed_mail) and "needs" in body_of(failed_mail)

    # more quota, sync again: the rest goes, the good news follows, the failure is not repeated
    projects.set_quota(ctx, s.world.helpdesk, s.project, "longterm", 30_000)
    client.post(f"/api/projects/{s.project}/sync", json={}, headers=helpdesk)
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    assert (quota(ctx, s, "longterm").used_bytes, quota(ctx, s, "longterm").reserved_bytes) == (30_000, 0)
    mailbox.wait_for(s.world.pi.email, "safely on long-term storage")
    subjects = [m["Subject"] for m in mails_to(mailbox, s.world.pi.email)]
    assert sum("failed" in x for x in subjects) == 1 and sum("safely" in x for x in subjects) == 1


def test_a_damaged_area_copy_is_never_published_to_longterm(ctx: Context) -> None:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", {"good.fastq": b"G" * 3000, "bad.fastq": b"B" * 3000})
    with open(area_path(ctx, f"{s.project}/RUN1/bad.fastq"), "r+b") as fh:
        fh.seek(1000)
        fh.write(b"X")  # one byte flipped on disk after sealing
    sync.request_sync(ctx, s.world.helpdesk, s.project)

    assert replica_states(ctx, s, "longterm") == {"good.fastq": "present", "bad.fastq": "failed"}
    assert replica_states(ctx, s, "area") == {"good.fastq": "present", "bad.fastq": "damaged"}
    bad = next(r for r in replicas(ctx, s, "longterm") if r.key.endswith("bad.fastq"))
    assert "RUN1/bad.fastq" in bad.reason and "does not match its manifest" in bad.reason
    assert not Path(longterm_path(ctx, bad.key)).exists()
    assert quota(ctx, s, "longterm").reserved_bytes == 0


def test_free_is_refused_until_synced_then_frees_and_restore_brings_back_verified(
    ctx: Context, client: TestClient
) -> None:
    s = setup_project(ctx)
    files = random_files(3, 4000, "lane1") | random_files(2, 4000, "lane2")
    deliver(ctx, s, "RUN1", files)
    admin = auth(token_for(ctx, s.world.pi))
    with ctx.tx() as session:
        member_user = accounts.get_user_by_email(session, "member@uib.example.org")
    member = auth(token_for(ctx, member_user))
    area_used = quota(ctx, s, "area").used_bytes

    refused = client.post(f"/api/projects/{s.project}/free", json={"paths": ["RUN1"]}, headers=admin)
    assert refused.status_code == 409
    assert refused.json()["error"] == "not_synced"
    assert f"5 of 5 files in {s.project} are not safely on long-term storage yet" in refused.json()["message"]
    # the service says what happened; which command helps is the CLI's word (tests/cli/test_cli_words.py)
    assert "levere sync" not in refused.json()["message"]
    assert refused.json()["details"]["project"] == s.project
    assert set(replica_states(ctx, s, "area").values()) == {"present"}

    sync.request_sync(ctx, s.world.helpdesk, s.project)
    assert (
        client.post(f"/api/projects/{s.project}/free", json={"paths": ["RUN1"]}, headers=member).status_code
        == 403
    )
    freed = client.post(f"/api/projects/{s.project}/free", json={"paths": ["RUN1/lane1"]}, headers=admin)
    assert freed.status_code == 200, freed.text
    assert (freed.json()["freed_files"], freed.json()["freed_bytes"]) == (3, 12_000)
    assert freed.json()["area_used_bytes"] == area_used - 12_000 == quota(ctx, s, "area").used_bytes
    for path in files:
        assert Path(area_path(ctx, f"{s.project}/RUN1/{path}")).exists() == path.startswith("lane2")
    assert replica_states(ctx, s, "area")["lane1/sample_0000.fastq"] == "freed"
    # a freed file is still readable: from long-term storage
    got = client.get(f"/api/projects/{s.project}/data/RUN1/lane1/sample_0001.fastq", headers=admin)
    assert got.status_code == 200 and got.content == files["lane1/sample_0001.fastq"]
    # freeing again is harmless
    again = client.post(
        f"/api/projects/{s.project}/free", json={"paths": ["RUN1/lane1/"]}, headers=admin
    ).json()
    assert (again["freed_files"], again["already_freed"]) == (0, 3)

    job = client.post(f"/api/projects/{s.project}/restore", json={"paths": ["RUN1"]}, headers=admin)
    assert job.status_code == 202, job.text
    shown = client.get(f"/api/projects/{s.project}/jobs/{job.json()['id']}", headers=admin).json()
    assert (shown["kind"], shown["state"], shown["files_done"]) == ("restore", "done", 3)
    for path, data in files.items():
        assert Path(area_path(ctx, f"{s.project}/RUN1/{path}")).read_bytes() == data
    assert set(replica_states(ctx, s, "area").values()) == {"present"}
    assert (quota(ctx, s, "area").used_bytes, quota(ctx, s, "area").reserved_bytes) == (area_used, 0)
    actions = audit_actions(ctx)
    for action in ("data.freed", "data.restore_requested", "data.restored"):
        assert action in actions

    missing = client.post(f"/api/projects/{s.project}/free", json={"paths": ["RUN1/nope"]}, headers=admin)
    assert missing.status_code == 404 and "RUN1/nope" in missing.json()["message"]


def test_restore_is_refused_when_the_area_quota_does_not_fit(ctx: Context, client: TestClient) -> None:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", {"a.bin": os.urandom(6000)})
    sync.request_sync(ctx, s.world.helpdesk, s.project)
    sync.free(ctx, s.world.pi, s.project, ["RUN1"])
    projects.set_quota(ctx, s.world.helpdesk, s.project, "area", 5000)
    r = client.post(
        f"/api/projects/{s.project}/restore",
        json={"paths": ["RUN1"]},
        headers=auth(token_for(ctx, s.world.pi)),
    )
    assert r.status_code == 507
    assert r.json()["details"]["needed"] == 6000 and r.json()["details"]["available"] == 5000
    assert replica_states(ctx, s, "area") == {"a.bin": "freed"}


def test_restore_verifies_the_longterm_copy(ctx: Context) -> None:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", {"a.bin": b"A" * 5000})
    sync.request_sync(ctx, s.world.helpdesk, s.project)
    sync.free(ctx, s.world.pi, s.project, ["RUN1"])
    stored = Path(longterm_path(ctx, f"{s.project}/RUN1/a.bin"))
    stored.chmod(0o644)
    stored.write_bytes(b"A" * 4999 + b"Z")  # bit rot on the long-term copy
    job = sync.request_restore(ctx, s.world.pi, s.project, ["RUN1/a.bin"])

    (run,) = [r for r in runs(ctx, "restore") if r.id == job.id]
    assert run.state == "failed" and "does not match its manifest" in run.report["failures"][0]["reason"]
    assert replica_states(ctx, s, "area") == {"a.bin": "failed"}
    assert replica_states(ctx, s, "longterm") == {"a.bin": "damaged"}
    assert not Path(area_path(ctx, f"{s.project}/RUN1/a.bin")).exists()
    assert quota(ctx, s, "area").reserved_bytes == 0


# --- the command line ---------------------------------------------------------------------------


def test_cli_sync_status_free_restore(ctx: Context, live_server: LiveServer) -> None:
    s = setup_project(ctx)
    files = random_files(3, 3000)
    deliver(ctx, s, "RUN1", files)
    helpdesk, admin = token_for(ctx, s.world.helpdesk), token_for(ctx, s.world.pi)

    out = levere(live_server, helpdesk, "status", s.project)
    assert out.returncode == 0 and "RUN1" in out.stdout and "pending" in out.stdout

    refused = levere(live_server, admin, "free", s.project, "RUN1")
    assert refused.returncode != 0
    assert (
        "not safely on long-term storage yet" in refused.stderr
        and len(refused.stderr.strip().splitlines()) == 1
    )

    denied = levere(live_server, admin, "sync", s.project)
    assert denied.returncode == 3 and "not allowed" in denied.stderr

    synced = levere(live_server, helpdesk, "sync", s.project, "RUN1")
    assert synced.returncode == 0, synced.stderr
    assert "3 files," in synced.stdout and "copied to long-term and verified" in synced.stdout

    data = json.loads(levere(live_server, admin, "--json", "status", s.project).stdout)
    assert data["deliveries"][0]["longterm"] == "synced"
    per_file = json.loads(levere(live_server, admin, "--json", "status", s.project, "--files").stdout)
    assert {f["tiers"]["longterm"]["state"] for f in per_file} == {"present"}

    freed = levere(
        live_server, admin, "free", s.project, "RUN1/reads/sample_0000.fastq", "RUN1/reads/sample_0001.fastq"
    )
    assert freed.returncode == 0, freed.stderr
    assert "freed 2 files," in freed.stdout
    assert replica_states(ctx, s, "area")["reads/sample_0001.fastq"] == "freed"

    restored = levere(live_server, admin, "restore", s.project, "RUN1")
    assert restored.returncode == 0, restored.stderr
    assert "restore of" in restored.stdout and "2 files," in restored.stdout
    assert set(replica_states(ctx, s, "area").values()) == {"present"}

    started = levere(live_server, helpdesk, "sync", s.project, "--no-wait")
    assert started.returncode == 0 and "levere jobs show" in started.stdout
    listed = json.loads(levere(live_server, admin, "--json", "jobs", "list", s.project).stdout)
    assert [j["kind"] for j in listed] == ["sync", "restore", "sync"]
    shown = levere(live_server, admin, "jobs", "show", listed[1]["id"], "--project", s.project)
    assert shown.returncode == 0 and "restore of" in shown.stdout


def test_longterm_quota_error_reaches_the_cli(ctx: Context, live_server: LiveServer) -> None:
    s = setup_project(ctx, quota_longterm_bytes=1000)
    deliver(ctx, s, "RUN1", {"a.bin": os.urandom(3000)})
    out = levere(live_server, token_for(ctx, s.world.helpdesk), "sync", s.project)
    assert out.returncode == 1
    assert "failed" in out.stdout and "RUN1/a.bin" in out.stdout and "needs 2.9 KiB" in out.stdout


def test_many_small_files_go_through_copy_processes_which_may_die(ctx: Context) -> None:
    """Over a hundred small local files are copied by child processes; one killed between two
    syncs is replaced, and nothing is lost or copied unverified."""
    import signal

    from levere.config import SyncSettings
    from levere.dataplane import copy_processes, process_pools
    from levere.jobs.queue import build_queue

    s = setup_project(ctx)
    first, second = random_files(300, 2000, "a"), random_files(300, 2000, "b")
    deliver(ctx, s, "RUN1", first)
    deliver(ctx, s, "RUN2", second)
    worker = Context.build(
        ctx.settings.model_copy(update={"sync": SyncSettings(processes=2, batch_files=200)})
    )
    build_queue(worker, immediate=True)
    try:
        sync.request_sync(worker, s.world.helpdesk, s.project, "RUN1")
        children = process_pools.workers.idle_pids(copy_processes.PURPOSE)
        assert len(children) == 2 and os.getpid() not in children
        os.kill(children[0], signal.SIGKILL)

        sync.request_sync(worker, s.world.helpdesk, s.project, "RUN2")
    finally:
        worker.close()
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    for name, files in (("RUN1", first), ("RUN2", second)):
        for path, data in files.items():
            assert Path(longterm_path(ctx, f"{s.project}/{name}/{path}")).read_bytes() == data
    assert [r.attempts for r in replicas(ctx, s, "longterm")] == [1] * 600
    assert (quota(ctx, s, "longterm").used_bytes, quota(ctx, s, "longterm").reserved_bytes) == (1_200_000, 0)
