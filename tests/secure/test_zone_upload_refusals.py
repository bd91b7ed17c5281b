"""Uploads into the secure zone refused with nothing stored or changed: no second factor, a disk
that is released, expired or destroyed, a disk named for a project that is not sensitive or none
named for one that is, a file over the disk's quota, a caller who is not the disk's facility side."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from levere.context import Context
from levere.db.models import Delivery, Facility, ProjectFacility, StoredFile, Upload, User, utcnow
from levere.domain.roles import UserKind
from levere.services import projects
from tests.helpers import auth, make_facility, make_user, provisioned_project, token_for
from tests.secure.upload_support import Zone, make_zone, stepped_up, stored_bytes


def _nothing_changed(zone: Zone, deliveries: int = 0, used: int = 0) -> None:
    with zone.ctx.tx() as session:
        assert session.execute(select(func.count(Delivery.id))).scalar_one() == deliveries
        assert session.execute(select(func.count(Upload.id))).scalar_one() == 0
        assert session.execute(select(func.count(StoredFile.id))).scalar_one() == 0
    assert zone.disk_row().used_bytes == used
    assert stored_bytes(zone.ctx) == []


def _open(zone: Zone, client: TestClient) -> None:
    assert zone.open_delivery(client).status_code == 201


def test_a_sign_in_without_a_second_factor_opens_no_delivery_on_a_disk_and_starts_no_upload(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx)
    refused = client.post(
        f"/api/projects/{zone.project}/deliveries",
        json={"name": "RUN1", "disk": zone.disk},
        headers=zone.plain,
    )
    assert refused.status_code == 403 and refused.json()["details"]["reason"] == "second_factor_required"
    _nothing_changed(zone)
    _open(zone, client)
    refused = zone.create(client, "RUN1", "a.fastq", 10, headers=zone.plain)
    assert refused.status_code == 403 and refused.json()["details"]["reason"] == "second_factor_required"
    _nothing_changed(zone, deliveries=1)


@pytest.mark.parametrize("state", ["released", "expired", "destroyed", "past its end date"])
def test_a_disk_that_is_not_open_takes_no_delivery_and_no_upload(
    ctx: Context, client: TestClient, state: str
) -> None:
    zone = make_zone(ctx)
    _open(zone, client)
    if state == "past its end date":
        zone.set_disk(ends_at=utcnow() - timedelta(minutes=1))
    else:
        zone.set_disk(state=state)
    refused = zone.create(client, "RUN1", "a.fastq", 10)
    assert refused.status_code == 409 and refused.json()["error"] == "disk_read_only", refused.text
    refused = zone.open_delivery(client, name="RUN2")
    assert refused.status_code == 409 and refused.json()["error"] == "disk_read_only"
    _nothing_changed(zone, deliveries=1)


def test_a_disk_named_for_a_project_that_is_not_sensitive_or_none_for_one_that_is_is_refused(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx)
    ordinary = provisioned_project(ctx, zone.world)
    refused = client.post(
        f"/api/projects/{ordinary}/deliveries", json={"name": "RUN1", "disk": zone.disk}, headers=zone.staff
    )
    assert refused.status_code == 409 and refused.json()["error"] == "no_placement", refused.text
    assert "sensitive projects only" in refused.json()["message"]
    refused = client.post(
        f"/api/projects/{zone.project}/deliveries", json={"name": "RUN1"}, headers=zone.staff
    )
    assert refused.status_code == 409 and refused.json()["error"] == "sensitive_not_offered"
    assert "shared disk" in refused.json()["message"]
    _nothing_changed(zone)
    # another sensitive project's delivery cannot name this disk either
    other = provisioned_project(ctx, zone.world, sensitive=True, secure_project_id="p4321")
    refused = client.post(
        f"/api/projects/{other}/deliveries", json={"name": "RUN1", "disk": zone.disk}, headers=zone.staff
    )
    assert refused.status_code == 409 and "is not" in refused.json()["message"], refused.text
    _nothing_changed(zone)


def test_an_upload_over_the_disks_quota_is_refused_before_any_byte_moves(
    ctx: Context, client: TestClient
) -> None:
    zone = make_zone(ctx, quota=1000)
    _open(zone, client)
    refused = zone.create(client, "RUN1", "a.fastq", 1001)
    assert refused.status_code == 507, refused.text
    assert refused.json()["error"] == "quota_exceeded" and refused.json()["details"]["disk"] == zone.disk
    _nothing_changed(zone, deliveries=1)
    # what fits is taken; what is left then is the limit
    first = zone.create(client, "RUN1", "a.fastq", 600)
    assert first.status_code == 201
    assert zone.create(client, "RUN1", "b.fastq", 401).json()["error"] == "quota_exceeded"
    assert zone.disk_row().used_bytes == 600
    client.delete(first.headers["Location"], headers={**zone.staff, "Tus-Resumable": "1.0.0"})
    assert zone.disk_row().used_bytes == 0


def _other_facility_staff(ctx: Context, zone: Zone) -> dict[str, str]:
    """Staff of another facility, assigned to the research project too (not the disk's side)."""
    other: Facility = make_facility(ctx, "other-lab")
    person: User = make_user(ctx, "tech@other.example.org", UserKind.FACILITY, other, password=None)
    with ctx.tx() as session:
        project = projects.get_project(session, zone.project)
        session.add(ProjectFacility(project_id=project.id, facility_id=other.id))
    return auth(stepped_up(ctx, token_for(ctx, person)))


def test_only_the_disks_facility_side_delivers_to_it(ctx: Context, client: TestClient) -> None:
    zone = make_zone(ctx)
    pi = auth(stepped_up(ctx, token_for(ctx, zone.world.pi)))
    helpdesk = auth(stepped_up(ctx, token_for(ctx, zone.world.helpdesk)))
    for headers in (_other_facility_staff(ctx, zone), pi, helpdesk):
        refused = client.post(
            f"/api/projects/{zone.project}/deliveries",
            json={"name": "RUN1", "disk": zone.disk},
            headers=headers,
        )
        assert refused.status_code in (403, 404), refused.text
    _nothing_changed(zone)
    _open(zone, client)
    for headers in (_other_facility_staff_again(ctx), pi):
        refused = zone.create(client, "RUN1", "a.fastq", 10, headers=headers)
        assert refused.status_code in (403, 404), refused.text
    _nothing_changed(zone, deliveries=1)


def _other_facility_staff_again(ctx: Context) -> dict[str, str]:
    with ctx.tx() as session:
        person = session.execute(select(User).where(User.email == "tech@other.example.org")).scalar_one()
    return auth(stepped_up(ctx, token_for(ctx, person)))
