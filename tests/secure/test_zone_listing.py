"""One listing of the secure zone's files for every reader: the facility's view of a shared disk, the
download side's listing of a delivery on it, the users' secure project's after release, over the
service, the API and the portal; released deliveries listed as released, without files."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from levere.context import Context
from levere.db.models import ApiToken, AuditEvent, User
from levere.services import accounts, zone_access, zone_files, zone_release
from tests.helpers import auth, token_for
from tests.secure.zone_support import USERS, make_zone

FILES = {"a/s1_R1.fastq": b"@r\nACGT\n+\nIIII\n" * 50, "b.txt": b"notes\n"}


def _zone_token(ctx: Context, user: User) -> dict[str, str]:
    token = token_for(ctx, user)
    with ctx.tx() as session:  # as a sign-in with a one-time code issues it
        session.execute(update(ApiToken).where(ApiToken.user_id == user.id).values(second_factor=True))
    return auth(token)


def test_the_facility_and_the_download_side_list_the_same_files(ctx: Context, client: TestClient) -> None:
    zone = make_zone(ctx, FILES)
    staff = zone.world.staff
    facility_side = zone_files.disk_contents(ctx, staff, zone.disk, zone.delivery)
    download_side = zone_files.disk_contents(ctx, zone.world.pi, zone.disk, zone.delivery, to_read=True)
    assert facility_side.files == download_side.files
    (first, second) = facility_side.files
    assert (first.delivery, first.path, first.full_path) == ("RUN1", "a/s1_R1.fastq", "RUN1/a/s1_R1.fastq")
    assert first.size == len(FILES["a/s1_R1.fastq"]) and first.body_size and not first.released
    assert second.path == "b.txt"

    # the API: the disk's listing names files within their delivery, the download side DELIVERY/PATH
    headers = _zone_token(ctx, staff)
    disk = client.get(f"/api/secure/disks/{zone.disk}/files", headers=headers).json()
    listed = client.get(f"/api/secure/disks/{zone.disk}/deliveries/RUN1/files", headers=headers).json()
    assert [(f["delivery"], f["path"]) for f in disk["files"]] == [
        ("RUN1", "a/s1_R1.fastq"),
        ("RUN1", "b.txt"),
    ]
    assert [f["path"] for f in listed] == ["RUN1/a/s1_R1.fastq", "RUN1/b.txt"]
    assert [f["sha256"] for f in listed] == [f["sha256"] for f in disk["files"]]

    # the helpdesk sees what is on the disk, but not the listing a download starts from
    desk = _zone_token(ctx, zone.world.helpdesk)
    assert client.get(f"/api/secure/disks/{zone.disk}/files", headers=desk).status_code == 200
    refused = client.get(f"/api/secure/disks/{zone.disk}/deliveries/RUN1/files", headers=desk)
    assert refused.status_code == 403 and refused.json()["error"] == "access_denied"
    with ctx.tx() as session:  # every listing is one kind of audit event
        listings = session.execute(
            select(AuditEvent.after).where(AuditEvent.action == "disk.listed")
        ).scalars()
        assert [a["files"] for a in listings] == [2, 2, 2, 2, 2]


def test_after_release_one_listing_says_released_and_the_users_project_lists_the_files(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, FILES)
    staff = zone.world.staff
    zone_release.release(ctx, staff, zone.disk, zone.delivery)
    headers = _zone_token(ctx, staff)
    disk = client.get(f"/api/secure/disks/{zone.disk}/files", headers=headers).json()
    assert [(d["name"], d["state"]) for d in disk["deliveries"]] == [("RUN1", "released")]
    assert disk["files"] == []
    for url in (
        f"/api/secure/disks/{zone.disk}/deliveries/RUN1/files",
        f"/api/secure/disks/{zone.disk}/files?delivery=RUN1",
    ):
        refused = client.get(url, headers=headers)
        assert refused.status_code == 403 and refused.json()["error"] == "released_no_access", url
        assert refused.json()["message"].startswith("released: no access")

    listed = zone_access.secure_files(ctx, zone.world.pi, USERS)
    assert [(f.delivery, f.path, f.released) for f in listed] == [
        ("RUN1", "a/s1_R1.fastq", True),
        ("RUN1", "b.txt", True),
    ]
    over_api = client.get(
        f"/api/secure/projects/{USERS}/files", headers=_zone_token(ctx, zone.world.pi)
    ).json()
    assert [f["path"] for f in over_api] == ["RUN1/a/s1_R1.fastq", "RUN1/b.txt"]
    assert all(f["released"] for f in over_api)


def test_the_portal_lists_the_disk_and_the_users_project_from_the_same_view(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, FILES)
    with ctx.tx() as session:
        issued = accounts.issue_token(ctx, session, session.merge(zone.world.pi), "portal session")
        issued.record.second_factor = True
    client.cookies.set("levere_session", issued.token, path="/portal")
    page = client.get(f"/portal/zone/disks/{zone.disk}").text
    assert "<td>a/s1_R1.fastq</td>" in page and "<td>b.txt</td>" in page
    zone_release.release(ctx, zone.world.staff, zone.disk, zone.delivery)
    page = client.get(f"/portal/zone/projects/{USERS}").text
    assert ">RUN1/a/s1_R1.fastq<" in page and 'value="RUN1/b.txt"' in page
