"""Release: each file's header moves from the shared disk to the users' secure project, the bodies
untouched; once or never, by the facility's side only, crash-safe; the disk is released with its key
dropped once nothing is left on it; the facility is refused afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from levere.context import Context
from levere.db.models import AuditEvent, Delivery, FileHeader, Replica, SecureProject, SharedDisk, StoredFile
from levere.domain.errors import AccessDenied, AlreadyReleased, Conflict, NotFound, ReleasedNoAccess
from levere.domain.roles import UserKind
from levere.domain.secure import HeaderHolder
from levere.domain.tiers import Tier
from levere.services import zone_access, zone_files, zone_release
from levere.services.zone_files import open_plaintext
from tests.helpers import make_facility, make_user
from tests.secure.zone_support import USERS, Zone, add_delivery, make_zone, store_files

FILES = {
    "a/sample1.fastq": b"@r1\nACGTACGTAC\n+\nIIIIIIIIII\n" * 5000,
    "a/sample2.fastq": b"@r2\nTTTTGGGGCC\n+\nJJJJJJJJJJ\n" * 3000,
    "empty.txt": b"",
}


def _disk(ctx: Context, zone: Zone) -> SharedDisk:
    with ctx.tx() as session:
        return session.execute(select(SharedDisk).where(SharedDisk.name == zone.disk)).scalar_one()


def _headers(ctx: Context) -> dict[str, set[tuple[str, str]]]:
    """Each file's path -> the holders (kind, id) it has a header for."""
    found: dict[str, set[tuple[str, str]]] = {}
    with ctx.tx() as session:
        for path in session.execute(select(StoredFile.path)).scalars():
            found[path] = set()
        rows = session.execute(
            select(StoredFile.path, FileHeader.holder_kind, FileHeader.holder_id).join(
                FileHeader, FileHeader.file_id == StoredFile.id
            )
        ).all()
    for path, kind, holder in rows:
        found[path].add((kind, holder))
    return found


def _bodies(ctx: Context) -> dict[str, bytes]:
    backend = ctx.backend(Tier.SECURE)
    with ctx.tx() as session:
        keys = session.execute(select(Replica.key)).scalars().all()
    return {key: b"".join(backend.read(key)) for key in keys}


def _actions(ctx: Context, action: str) -> int:
    with ctx.tx() as session:
        return session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        ).scalar_one()


def _users_plaintext(ctx: Context) -> dict[str, bytes]:
    with ctx.tx() as session:
        users = session.execute(select(SecureProject).where(SecureProject.identifier == USERS)).scalar_one()
        return {
            f.path: open_plaintext(ctx, session, f, users).read()
            for f in session.execute(select(StoredFile)).scalars()
        }


def test_release_moves_every_header_to_the_users_project_and_leaves_the_bodies_as_they_were(
    ctx: Context,
) -> None:
    zone = make_zone(ctx, FILES)
    disk = _disk(ctx, zone)
    assert all(holders == {(HeaderHolder.DISK, disk.id)} for holders in _headers(ctx).values())
    bodies = _bodies(ctx)
    done = zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    assert (done.files, done.moved, done.users_project, done.disk_state) == (3, 3, USERS, "released")
    with ctx.tx() as session:
        users_id = session.execute(
            select(SecureProject.id).where(SecureProject.identifier == USERS)
        ).scalar_one()
        delivery = session.execute(select(Delivery)).scalar_one()
        assert delivery.released_at == done.released_at
    assert all(holders == {(HeaderHolder.SECURE, users_id)} for holders in _headers(ctx).values())
    assert _bodies(ctx) == bodies  # not a byte of a body was rewritten
    assert _users_plaintext(ctx) == FILES  # the users' key opens every file
    after = _disk(ctx, zone)
    assert after.state == "released" and after.wrapped_private_key is None and after.released_at is not None
    assert _actions(ctx, "file.released") == 3
    assert _actions(ctx, "delivery.released") == 1 and _actions(ctx, "disk.released") == 1
    with pytest.raises(AlreadyReleased) as again:
        zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    assert again.value.code == "already_released" and "released once" in again.value.message
    assert _actions(ctx, "delivery.release_started") == 1  # the refusal started nothing


def test_only_the_disks_facility_side_releases_and_only_sealed_deliveries(ctx: Context) -> None:
    zone = make_zone(ctx, FILES)
    other = make_user(
        ctx, "staff@other.example.org", UserKind.FACILITY, make_facility(ctx, "seq-b"), password=None
    )
    for who in (zone.world.helpdesk, zone.world.pi, other):
        with pytest.raises((AccessDenied, NotFound)):
            zone_release.release(ctx, who, zone.disk, zone.delivery)
    add_delivery(ctx, zone, "RUN2", {"x.fq": b"@x\nA\n+\nI\n"}, sealed=False)
    with pytest.raises(Conflict, match="only a sealed delivery"):
        zone_release.release(ctx, zone.world.staff, zone.disk, "RUN2")
    with pytest.raises(NotFound):
        zone_release.release(ctx, zone.world.staff, zone.disk, "RUN9")
    assert all(len(h) == 1 and next(iter(h))[0] == HeaderHolder.DISK for h in _headers(ctx).values())
    assert _actions(ctx, "delivery.release_started") == 0


def test_the_disk_stays_open_while_something_on_it_is_unreleased(ctx: Context) -> None:
    zone = make_zone(ctx, FILES)
    add_delivery(ctx, zone, "RUN2", {"b/c.fq": b"@c\nGGCC\n+\nIIII\n" * 100})
    first = zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    assert first.disk_state == "open" and _disk(ctx, zone).wrapped_private_key is not None
    # RUN2 is still read through the disk's header, by both sides
    listed = zone_files.disk_contents(ctx, zone.world.staff, zone.disk, "RUN2", to_read=True)
    assert [f.full_path for f in listed.files] == ["RUN2/b/c.fq"]
    second = zone_release.release(ctx, zone.world.staff, zone.disk, "RUN2")
    assert second.disk_state == "released" and _disk(ctx, zone).wrapped_private_key is None
    assert _users_plaintext(ctx) == {p.split("/", 1)[1]: d for p, d in zone.files.items()}


def test_after_release_the_facility_gets_released_no_access_on_listing_and_download(ctx: Context) -> None:
    zone = make_zone(ctx, FILES)
    key = _recipient()
    staff = zone.world.staff
    before = zone_access.disk_download(ctx, staff, zone.disk, zone.delivery, "a/sample1.fastq", key)
    assert before.size == len(before.header) + before.body_size
    zone_release.release(ctx, staff, zone.disk, zone.delivery)
    for attempt in (
        lambda: zone_files.disk_contents(ctx, staff, zone.disk, zone.delivery, to_read=True),
        lambda: zone_files.disk_contents(ctx, staff, zone.disk, zone.delivery),
        lambda: zone_access.disk_download(ctx, staff, zone.disk, zone.delivery, "a/sample1.fastq", key),
        lambda: zone_access.disk_download(ctx, staff, zone.disk, zone.delivery, "empty.txt", key),
    ):
        with pytest.raises(ReleasedNoAccess) as refused:
            attempt()
        assert refused.value.code == "released_no_access" and refused.value.http_status == 403
        assert refused.value.message.startswith("released: no access") and USERS in refused.value.message
    # nor through the users' secure project, which the facility is not in
    with pytest.raises(AccessDenied):
        zone_access.secure_files(ctx, staff, USERS)
    listed = zone_access.secure_files(ctx, zone.world.pi, USERS)
    assert sorted(f.full_path for f in listed) == sorted(zone.files) and all(f.released for f in listed)
    # the disk still lists the delivery, as released and without its files
    on_disk = zone_files.disk_contents(ctx, staff, zone.disk)
    assert [(d.name, d.state) for d in on_disk.deliveries] == [(zone.delivery, "released")]
    assert on_disk.files == ()


def _recipient() -> str:
    from levere.crypt4gh import PrivateKey

    return PrivateKey.generate().public_key.to_pem()


# --- killed half-way --------------------------------------------------------------------------------

CHILD = """
import sys, time
from levere.config import Settings
from levere.context import Context
from levere.db.models import User
from levere.services import zone_release

settings = Settings.model_validate_json(sys.stdin.read())
ctx = Context.build(settings)
with ctx.tx() as session:
    actor = session.get(User, sys.argv[1])
    session.expunge(actor)

def slow(moved, total):
    print(f"moved {moved} of {total}", flush=True)
    time.sleep(0.3)

zone_release.release(ctx, actor, sys.argv[2], sys.argv[3], batch_size=2, progress=slow)
print("done", flush=True)
"""


def test_a_release_killed_half_way_leaves_every_file_readable_by_one_side_and_completes_when_run_again(
    ctx: Context, tmp_path: Path
) -> None:
    files = {f"f{n:02}.fq": f"@read{n}\nACGT\n+\nIIII\n".encode() * (n + 1) for n in range(12)}
    zone = make_zone(ctx, files)
    bodies = _bodies(ctx)
    disk_id = _disk(ctx, zone).id
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, zone.world.staff.id, zone.disk, zone.delivery],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(ctx.settings.model_dump_json())
    child.stdin.close()
    seen = [child.stdout.readline() for _ in range(2)]
    assert seen == ["moved 2 of 12\n", "moved 4 of 12\n"], seen
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    time.sleep(0.1)
    holders = _headers(ctx)
    # every file has exactly one header: the disk's or the users', never both, never none
    assert all(len(h) == 1 for h in holders.values()), holders
    moved = [p for p, h in holders.items() if next(iter(h))[0] == HeaderHolder.SECURE]
    assert 4 <= len(moved) < 12
    with ctx.tx() as session:
        assert session.execute(select(Delivery.released_at)).scalar_one() is None
    # run again: it goes on with the files left on the disk and completes
    done = zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    assert done.moved == 12 - len(moved) and done.disk_state == "released"
    assert all(len(h) == 1 and next(iter(h))[0] == HeaderHolder.SECURE for h in _headers(ctx).values())
    assert _users_plaintext(ctx) == files and _bodies(ctx) == bodies
    with ctx.tx() as session:
        assert session.get(SharedDisk, disk_id).wrapped_private_key is None  # type: ignore[union-attr]


def test_time_grows_with_files_not_bytes(ctx: Context) -> None:
    """A large body costs a release no more than an empty one: only headers are touched."""
    zone = make_zone(ctx, {"big.bin": os.urandom(8 * 1024 * 1024), "small.bin": b"x"})
    with ctx.tx() as session:  # a backend that cannot be read proves the bodies are not read
        session.execute(update(Replica).values(key="missing/"))
    done = zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    assert done.moved == 2


def test_after_release_the_facility_sees_none_of_the_delivery_on_the_ordinary_pages(ctx: Context) -> None:
    from levere.services import deliveries

    zone = make_zone(ctx, FILES)
    staff, pi = zone.world.staff, zone.world.pi
    assert len(deliveries.file_page(ctx, staff, zone.project, zone.delivery).files) == 3  # before release
    zone_release.release(ctx, staff, zone.disk, zone.delivery)
    for attempt in (
        lambda: deliveries.file_page(ctx, staff, zone.project, zone.delivery),
        lambda: deliveries.show_delivery(ctx, staff, zone.project, zone.delivery),
        lambda: deliveries.manifest(ctx, staff, zone.project, zone.delivery),
    ):
        with pytest.raises(ReleasedNoAccess):
            attempt()
    assert deliveries.list_files(ctx, staff, zone.project) == []
    # the users' side and the helpdesk (metadata only, as for every project) still see it
    assert len(deliveries.list_files(ctx, pi, zone.project)) == 3
    assert len(deliveries.file_page(ctx, zone.world.helpdesk, zone.project, zone.delivery).files) == 3


def test_a_file_stored_with_the_delivery_while_it_is_released_moves_with_it(ctx: Context) -> None:
    """An analysis report stored after the last batch, before the delivery is marked released."""
    zone = make_zone(ctx, FILES)
    late = {"levere-qc/report.json": b'{"reads": 5000}'}

    def store_late(moved: int, total: int) -> None:
        if moved == total:
            add_delivery(ctx, zone, "LATE", {})  # another delivery keeps the disk open meanwhile
            store_files(ctx, zone, zone.delivery, late)

    done = zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery, progress=store_late)
    assert done.moved == 4 and done.disk_state == "open"
    assert _users_plaintext(ctx) == FILES | late
