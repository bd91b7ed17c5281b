"""``levere verify``: stored copies re-read on every tier, damage reported and repaired."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from levere.context import Context
from levere.db.models import AuditEvent
from levere.services import scrub, sync
from tests.conftest import LiveServer, Mailbox, body_of
from tests.helpers import auth, token_for
from tests.sync_support import (
    Setup,
    area_path,
    deliver,
    levere,
    longterm_path,
    mails_to,
    replica_states,
    replicas,
    runs,
    setup_project,
)


def synced(ctx: Context, files: dict[str, bytes]) -> Setup:
    s = setup_project(ctx)
    deliver(ctx, s, "RUN1", files)
    sync.request_sync(ctx, s.world.helpdesk, s.project)
    return s


def corrupt(path: object, at: int = 10) -> None:
    p = Path(str(path))
    p.chmod(0o644)  # long-term copies are read-only; rot does not ask
    with open(p, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))
    p.chmod(0o444)


def test_verify_finds_a_corrupted_longterm_copy_and_repairs_it(
    ctx: Context, client: TestClient, mailbox: Mailbox
) -> None:
    files = {"a.fastq": os.urandom(20_000), "b.fastq": os.urandom(9 * 1024 * 1024)}
    s = synced(ctx, files)
    bad = longterm_path(ctx, f"{s.project}/RUN1/b.fastq")
    corrupt(bad, at=5_000_000)
    helpdesk = auth(token_for(ctx, s.world.helpdesk))

    job = client.post("/api/verify", json={"project": s.project}, headers=helpdesk)
    assert job.status_code == 202, job.text
    shown = client.get(f"/api/projects/{s.project}/jobs/{job.json()['id']}", headers=helpdesk).json()
    report = shown["report"]
    assert shown["state"] == "done"
    assert (report["checked"], report["ok"], report["damaged_found"], report["repaired"]) == (4, 3, 1, 1)
    (damage,) = report["damaged"]
    assert damage["path"] == f"{s.project}/RUN1/b.fastq" and damage["tier"] == "longterm"
    assert damage["repaired"] is True
    # the repaired copy is the delivered bytes again, and write-once again
    assert Path(str(bad)).read_bytes() == files["b.fastq"]
    assert stat.S_IMODE(os.stat(bad).st_mode) & 0o222 == 0
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    with ctx.tx() as session:
        events = session.execute(
            select(AuditEvent.action, AuditEvent.after).where(AuditEvent.action.like("replica.%"))
        ).all()
    assert [a for a, _ in events] == ["replica.damaged", "replica.repaired"]
    assert "SHA-256" in events[0][1]["reason"]
    mail = [m for m in mails_to(mailbox, s.world.pi.email) if "damaged" in m["Subject"]]
    assert len(mail) == 1 and "repaired from the other copy" in body_of(mail[0])


def test_a_missing_area_copy_is_restored_from_longterm(ctx: Context) -> None:
    s = synced(ctx, {"a.fastq": b"A" * 1000, "b.fastq": b"B" * 1000})
    os.unlink(area_path(ctx, f"{s.project}/RUN1/a.fastq"))
    job = scrub.request_verify(ctx, s.world.helpdesk, s.project)
    (run,) = [r for r in runs(ctx, "verify") if r.id == job.id]
    assert run.state == "done"
    assert run.report["damaged"][0]["reason"] == "the stored copy is missing" and run.report["repaired"] == 1
    assert Path(area_path(ctx, f"{s.project}/RUN1/a.fastq")).read_bytes() == b"A" * 1000


def test_damage_with_no_intact_copy_is_reported_not_hidden(ctx: Context, live_server: LiveServer) -> None:
    s = synced(ctx, {"a.fastq": b"A" * 1000})
    corrupt(longterm_path(ctx, f"{s.project}/RUN1/a.fastq"))
    corrupt(area_path(ctx, f"{s.project}/RUN1/a.fastq"))
    token = token_for(ctx, s.world.helpdesk)
    out = levere(live_server, token, "verify", s.project)
    assert out.returncode == 5
    assert "2 damaged copies could not be repaired" in out.stdout
    assert "RUN1/a.fastq" in out.stdout and "no intact copy on long-term storage" in out.stdout
    assert "SHA-256 is" in out.stdout
    assert replica_states(ctx, s, "area") == {"a.fastq": "damaged"}
    assert replica_states(ctx, s, "longterm") == {"a.fastq": "damaged"}
    # and the project status shows it
    status = json.loads(levere(live_server, token, "--json", "status", s.project).stdout)
    assert {p["tier"] for p in status["deliveries"][0]["problems"]} == {"area", "longterm"}


def test_unreachable_storage_is_unreadable_not_damage(ctx: Context) -> None:
    s = synced(ctx, {"a.fastq": b"A" * 1000})
    root = Path(str(ctx.settings.data_dir / "storage" / "longterm"))
    root.rename(root.with_name("longterm-unmounted"))  # the share is gone for a while
    try:
        job = scrub.request_verify(ctx, s.world.helpdesk, s.project)
    finally:
        root.with_name("longterm-unmounted").rename(root)
    (run,) = [r for r in runs(ctx, "verify") if r.id == job.id]
    assert run.state == "failed" and "1 copy could not be read" in run.error
    assert run.report["unreadable"][0]["tier"] == "longterm"
    assert "not available" in run.report["unreadable"][0]["reason"]
    assert run.report["damaged_found"] == 0
    assert replica_states(ctx, s, "longterm") == {"a.fastq": "present"}


def test_verify_of_every_project_is_for_the_helpdesk(ctx: Context, client: TestClient) -> None:
    s = synced(ctx, {"a.fastq": b"A" * 1000})
    admin = auth(token_for(ctx, s.world.pi))
    assert client.post("/api/verify", json={}, headers=admin).status_code == 403
    assert client.post("/api/verify", json={"project": s.project}, headers=admin).status_code == 403
    helpdesk = auth(token_for(ctx, s.world.helpdesk))
    job = client.post("/api/verify", json={}, headers=helpdesk).json()
    assert job["project"] is None
    shown = client.get(f"/api/jobs/{job['id']}", headers=helpdesk).json()
    assert (shown["state"], shown["report"]["checked"]) == ("done", 2)
    assert client.get(f"/api/jobs/{job['id']}", headers=admin).status_code == 403
    assert [r.verified_at is not None for r in replicas(ctx, s, "longterm")] == [True]


def test_cli_verify_no_wait_then_follow(ctx: Context, live_server: LiveServer) -> None:
    s = synced(ctx, {"a.fastq": b"A" * 1000})
    token = token_for(ctx, s.world.helpdesk)
    out = levere(live_server, token, "verify", "--no-wait")
    assert out.returncode == 0 and "levere jobs show" in out.stdout
    job_id = out.stdout.split("started as job ")[1].split(";")[0]
    shown = levere(live_server, token, "jobs", "show", job_id, "--wait")
    assert shown.returncode == 0 and "checked 2 stored copies" in shown.stdout and "2 intact" in shown.stdout
