"""The secure zone's uploads from the command line: ``levere deliver --disk`` sends a run folder onto
a shared disk (encrypted at rest), sealed against the run's checksum file, and
``levere secure ls`` lists the disk's deliveries and files for both sides."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update

from levere.db.models import ApiToken, AuditEvent, Delivery, Project, Quota, SharedDisk
from levere.domain.roles import UserKind
from levere.services import zone_files, zone_release
from levere.storage.encrypting import STEP
from tests.cli_live import Cli
from tests.conftest import LiveServer
from tests.helpers import PASSWORD, make_user, token_for
from tests.secure.upload_support import has_window, make_zone, sign_in_with_totp, stored_bytes


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(url=live_server.url, home=tmp_path / "cli")


def _run_folder(folder: Path) -> dict[str, bytes]:
    files = {
        "s1_R1.fastq": b"@r1\n" + os.urandom(150_000).hex().encode() + b"\n",
        "sub/s1_R2.fastq": os.urandom(3000),
    }
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    (folder / "md5sum.txt").write_text(
        "".join(f"{hashlib.md5(data).hexdigest()}  {path}\n" for path, data in files.items())
    )
    return files


def test_levere_deliver_with_a_disk_delivers_a_run_encrypted_and_both_sides_list_it(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    zone = make_zone(ctx)
    staff = make_user(ctx, "tech@norseq.example.org", UserKind.FACILITY, zone.world.facility)
    run = tmp_path / "RUN7"
    files = _run_folder(run)
    # without a second factor the disk takes nothing
    cli.ok("tech", "login", "--email", staff.email, password=PASSWORD)
    assert "second factor" in cli.fails("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    sign_in_with_totp(ctx, cli, "tech", staff)
    cli.ok("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    with ctx.tx() as session:
        delivery = session.execute(select(Delivery).where(Delivery.name == "RUN7")).scalar_one()
        assert delivery.state == "sealed" and delivery.checksum_coverage is not None
    listed = cli.json("tech", "secure", "ls", zone.disk)
    assert [d["name"] for d in listed["deliveries"]] == ["RUN7"]
    assert {f["path"]: f["size"] for f in listed["files"]} == {
        "md5sum.txt": (run / "md5sum.txt").stat().st_size,
        **{p: len(d) for p, d in files.items()},
    }
    assert "s1_R1.fastq" in cli.ok("tech", "secure", "ls", zone.disk)
    # the users' side lists the same; each listing is an audit event
    shown = zone_files.disk_contents(ctx, zone.world.pi, zone.disk, "RUN7")
    assert sorted(f.path for f in shown.files) == sorted([*files, "md5sum.txt"])
    with ctx.tx() as session:
        assert len(session.execute(select(AuditEvent).where(AuditEvent.action == "disk.listed")).all()) == 3
        read = session.execute(select(AuditEvent).where(AuditEvent.action == "zone.file_read")).scalar_one()
        assert read.after["path"] == "md5sum.txt"
    everything = b"".join(content for _, content in stored_bytes(ctx))
    for data in files.values():
        assert not has_window(everything, data)
    # after release, the users' secure project lists the run; the disk lists it as released only
    zone_release.release(ctx, staff, zone.disk, "RUN7")
    token = token_for(ctx, zone.world.pi)
    with ctx.tx() as session:  # as a sign-in with a one-time code issues it
        session.execute(
            update(ApiToken).where(ApiToken.user_id == zone.world.pi.id).values(second_factor=True)
        )
    released = cli.json("pi", "secure", "ls", "p1234", env={"LEVERE_TOKEN": token})
    assert sorted(f["path"] for f in released) == sorted(f"RUN7/{p}" for p in [*files, "md5sum.txt"])
    assert "RUN7/s1_R1.fastq" in cli.ok("pi", "secure", "ls", "p1234", env={"LEVERE_TOKEN": token})
    assert cli.json("tech", "secure", "ls", zone.disk)["files"] == []
    assert "released: no access" in cli.fails("tech", "secure", "ls", zone.disk, "--delivery", "RUN7")


def test_levere_deliver_checks_the_disks_quota_not_the_project_areas(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    ctx = live_server.ctx
    zone = make_zone(ctx)
    staff = make_user(ctx, "tech@norseq.example.org", UserKind.FACILITY, zone.world.facility)
    run = tmp_path / "RUN8"
    _run_folder(run)
    sign_in_with_totp(ctx, cli, "tech", staff)
    with ctx.tx() as session:  # an area quota the run would not fit in: it does not apply here
        project = session.execute(select(Project).where(Project.identifier == zone.project)).scalar_one()
        session.execute(update(Quota).where(Quota.project_id == project.id).values(limit_bytes=10))
        session.execute(update(SharedDisk).where(SharedDisk.name == zone.disk).values(quota_bytes=1000))
    line = cli.fails("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    assert f"of shared disk {zone.disk} is free" in line and "nothing was sent" in line
    with ctx.tx() as session:
        session.execute(update(SharedDisk).where(SharedDisk.name == zone.disk).values(quota_bytes=1 << 30))
    cli.ok("tech", "deliver", zone.project, str(run), "--disk", zone.disk)


def test_levere_deliver_sends_a_file_of_whole_steps_whose_last_patch_would_end_mid_step(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    """The client's PATCHes end one piece before the file does; the disk keeps whole steps only, so
    the client sends the rest in its final PATCH instead of sending the same piece again forever."""
    ctx = live_server.ctx
    zone = make_zone(ctx)
    staff = make_user(ctx, "tech@norseq.example.org", UserKind.FACILITY, zone.world.facility)
    run = tmp_path / "RUN9"
    run.mkdir()
    data = os.urandom(2 * STEP)
    (run / "whole.fastq").write_bytes(data)
    (run / "md5sum.txt").write_text(f"{hashlib.md5(data).hexdigest()}  whole.fastq\n")
    sign_in_with_totp(ctx, cli, "tech", staff)
    cli.ok("tech", "deliver", zone.project, str(run), "--disk", zone.disk)
    listed = zone_files.disk_contents(ctx, staff, zone.disk, "RUN9")
    assert {f.path: f.sha256 for f in listed.files}["whole.fastq"] == hashlib.sha256(data).hexdigest()
