"""The placement policy: which tier holds a project's data for each purpose, the copy paths around
it, and the refusal of sensitive projects (no tier may hold their data yet) with nothing stored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from levere.config import TierName
from levere.context import Context
from levere.db.models import Delivery, Project, Quota, Replica, StoredFile, Upload
from levere.domain.errors import NoPlacement, SensitiveNotOffered
from levere.domain.tiers import (
    TIER_PROPERTIES,
    CopyPath,
    ProjectKind,
    Purpose,
    Tier,
    place,
    placed_tiers,
    placement_on,
    placements,
    restore_path,
    sync_path,
    tiers_for,
    working_purpose,
)
from levere.services import projects
from tests.cli_live import Env, levere, make_env, make_run, one_line_error
from tests.conftest import Mailbox, body_of
from tests.deliveries_support import (
    Crew,
    area_kind,
    crew,
    delivery_bucket,
    open_delivery,
    send_batch,
    settings,
    tar_of,
    tus_create,
)
from tests.helpers import basic_world, provisioned_project

__all__ = ["area_kind", "delivery_bucket", "settings"]

NON, SENSITIVE = ProjectKind.NON_SENSITIVE, ProjectKind.SENSITIVE

# --- the policy, without I/O ------------------------------------------------------------------------------


def test_tiers_are_the_configurations_tier_names_and_compare_equal_to_stored_words() -> None:
    assert {t.value for t in Tier} == set(get_args(TierName))
    assert Tier.AREA == "area" and Tier.LONGTERM == "longterm" and Tier("secure") is Tier.SECURE


def test_only_long_term_storage_is_write_once_and_no_tier_may_hold_sensitive_plaintext() -> None:
    assert {t for t in Tier if TIER_PROPERTIES[t].write_once} == {Tier.LONGTERM}
    assert not any(TIER_PROPERTIES[t].sensitive_plaintext for t in Tier)


def test_a_project_kind_follows_its_sensitive_flag() -> None:
    assert ProjectKind.of(True) is SENSITIVE and ProjectKind.of(False) is NON


@pytest.mark.parametrize(
    ("purpose", "tier", "source", "repairs_from", "write_once"),
    [
        (Purpose.LANDING, Tier.AREA, Tier.LONGTERM, (Tier.LONGTERM,), False),
        (Purpose.LONGTERM, Tier.LONGTERM, Tier.AREA, (Tier.AREA,), True),
    ],
)
def test_a_non_sensitive_project_lands_on_the_area_and_keeps_write_once_copies_on_long_term(
    purpose: Purpose, tier: Tier, source: Tier, repairs_from: tuple[Tier, ...], write_once: bool
) -> None:
    placed = place(NON, purpose)
    assert (placed.kind, placed.purpose, placed.tier, placed.source) == (NON, purpose, tier, source)
    assert placed.repairs_from == repairs_from and placed.write_once is write_once
    assert placed.reads == (Tier.AREA, Tier.LONGTERM)  # the working copy first, then long-term


@pytest.mark.parametrize("purpose", [Purpose.SECURE_ZONE, Purpose.SHARED_DISK])
def test_the_secure_zone_and_shared_disks_are_not_for_non_sensitive_projects(purpose: Purpose) -> None:
    with pytest.raises(NoPlacement) as refused:
        place(NON, purpose)
    assert type(refused.value) is NoPlacement and refused.value.code == "no_placement"
    assert "sensitive projects only" in refused.value.message
    assert refused.value.details == {"kind": "non-sensitive", "purpose": purpose.value}


@pytest.mark.parametrize("purpose", [Purpose.LANDING])
def test_a_sensitive_project_has_no_plaintext_placement(purpose: Purpose) -> None:
    """Nothing in plaintext: no working area; a delivery lands on the project's shared disk
    (tests/secure/test_zone_upload*.py) or nowhere."""
    with pytest.raises(SensitiveNotOffered) as refused:
        place(SENSITIVE, purpose)
    error = refused.value
    assert error.code == "sensitive_not_offered" and error.http_status == 409
    assert "secure zone" in error.message and "shared disk" in error.message
    # no command named: that is each front end's word
    assert not re.search(r"levere (deliver|secure|projects?|apply|sync)\b", error.message)
    assert error.details == {"kind": "sensitive", "purpose": purpose.value}


def test_a_shared_disks_data_stays_on_the_secure_tier() -> None:
    placed = place(SENSITIVE, Purpose.SHARED_DISK)
    assert placed.tier is Tier.SECURE and placed.reads == (Tier.SECURE,)
    # until release the data is the facility's: never copied off the secure tier, nor repaired from one
    assert placed.source is None and placed.repairs_from == () and not placed.write_once


def test_a_sensitive_projects_released_data_has_write_once_long_term_copies_of_its_bodies() -> None:
    zone, longterm = place(SENSITIVE, Purpose.SECURE_ZONE), place(SENSITIVE, Purpose.LONGTERM)
    assert (zone.tier, zone.source, zone.repairs_from) == (Tier.SECURE, Tier.LONGTERM, (Tier.LONGTERM,))
    assert (longterm.tier, longterm.source, longterm.repairs_from) == (
        Tier.LONGTERM,
        Tier.SECURE,
        (Tier.SECURE,),
    )
    assert longterm.write_once and not zone.write_once
    assert zone.reads == longterm.reads == (Tier.SECURE, Tier.LONGTERM)


def test_copy_paths_follow_the_placements() -> None:
    assert sync_path(NON) == CopyPath(Tier.AREA, Tier.LONGTERM) and sync_path(NON).write_once
    assert restore_path(NON) == CopyPath(Tier.LONGTERM, Tier.AREA) and not restore_path(NON).write_once
    assert sync_path(SENSITIVE) == CopyPath(Tier.SECURE, Tier.LONGTERM) and sync_path(SENSITIVE).write_once
    assert restore_path(SENSITIVE) == CopyPath(Tier.LONGTERM, Tier.SECURE)
    assert working_purpose(NON) is Purpose.LANDING and working_purpose(SENSITIVE) is Purpose.SECURE_ZONE


def test_placements_by_kind_and_tier() -> None:
    assert [p.purpose for p in placements(NON)] == [Purpose.LANDING, Purpose.LONGTERM]
    assert [p.purpose for p in placements(SENSITIVE)] == [
        Purpose.LONGTERM,
        Purpose.SECURE_ZONE,
        Purpose.SHARED_DISK,
    ]
    assert {p.tier for p in placements(SENSITIVE)} == {Tier.SECURE, Tier.LONGTERM}
    assert placement_on(SENSITIVE, "secure").purpose is Purpose.SECURE_ZONE
    assert placement_on(SENSITIVE, "longterm").purpose is Purpose.LONGTERM
    assert placement_on(NON, "longterm").purpose is Purpose.LONGTERM
    with pytest.raises(NoPlacement, match="keeps no data on the secure zone"):
        placement_on(NON, "secure")
    with pytest.raises(NoPlacement):
        placement_on(SENSITIVE, "area")
    assert placed_tiers() == (Tier.AREA, Tier.LONGTERM, Tier.SECURE)
    assert tiers_for(Purpose.LANDING) == (Tier.AREA,) and tiers_for(Purpose.SECURE_ZONE) == (Tier.SECURE,)
    assert tiers_for(Purpose.LONGTERM) == (Tier.LONGTERM,)


# --- provisioning and deliveries of a sensitive project ---------------------------------------------------


def _sensitive_crew(ctx: Context) -> Crew:
    return crew(ctx, sensitive=True, secure_project_id="p1234")


def _nothing_stored(ctx: Context, identifier: str) -> None:
    """No delivery, upload, file or replica row, no quota used or reserved, no bytes on any tier."""
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        for model in (Delivery, Upload, StoredFile):
            where = model.project_id == project.id  # type: ignore[attr-defined]
            assert session.execute(select(func.count()).select_from(model).where(where)).scalar() == 0
        assert session.execute(select(func.count()).select_from(Replica)).scalar() == 0
        for row in session.execute(select(Quota).where(Quota.project_id == project.id)).scalars():
            assert (row.used_bytes, row.reserved_bytes) == (0, 0), row.tier
    for tier in Tier:
        assert list(ctx.backend(tier).list(identifier)) == []
    # a local area holds nothing at all under its folder, staged bytes included
    area = ctx.settings.data_dir / "storage" / "area"
    if area.exists():
        assert [p for p in area.rglob("*") if p.is_file()] == []


def test_provisioning_a_sensitive_project_makes_no_working_area(ctx: Context, mailbox: Mailbox) -> None:
    world = basic_world(ctx)
    plain = provisioned_project(ctx, world)
    sensitive = provisioned_project(ctx, world, sensitive=True, secure_project_id="p1234")
    area = ctx.settings.data_dir / "storage" / "area"
    if ctx.settings.tiers.area is None:  # the local default: the area folder is made at provisioning
        assert (area / plain).is_dir()
        assert not (area / sensitive).exists()
    with ctx.tx() as session:
        project = projects.get_project(session, sensitive)
        assert project.sensitive and project.secure_project_id == "p1234"
        # no area quota (it has no area, though the form asked for one); long-term is granted
        assert {
            q.tier for q in session.execute(select(Quota).where(Quota.project_id == project.id)).scalars()
        } == {"longterm"}
    _nothing_stored(ctx, sensitive)
    # the facility hears that the project is assigned to it, not that an area is ready for deliveries
    told = body_of(mailbox.wait_for(world.staff.email, f"{sensitive} is assigned to"))
    assert "secure zone" in told and "levere deliver" not in told
    ready = body_of(mailbox.wait_for(world.staff.email, f"{plain} is ready for deliveries"))
    assert "levere deliver" in ready


def test_a_sensitive_projects_delivery_is_refused_and_nothing_is_stored(
    ctx: Context, client: TestClient
) -> None:
    c = _sensitive_crew(ctx)
    opened = client.post(f"/api/projects/{c.project}/deliveries", json={"name": "RUN1"}, headers=c.headers())
    assert opened.status_code == 409, opened.text
    body = opened.json()
    assert body["error"] == "sensitive_not_offered" and "secure zone" in body["message"]

    created = tus_create(client, c, "RUN1", "a.fastq", 1000)
    assert created.status_code == 409 and created.json()["error"] == "sensitive_not_offered"
    sent = send_batch(client, c, "RUN1", tar_of({"a.fastq": b"ACGT" * 100}))
    assert sent.status_code == 409 and sent.json()["error"] == "sensitive_not_offered"
    _nothing_stored(ctx, c.project)


def test_uploads_into_a_delivery_of_a_project_now_sensitive_are_refused_before_any_byte(
    ctx: Context, client: TestClient
) -> None:
    # a delivery opened while the project was not sensitive: files may no longer land in it
    c = crew(ctx)
    open_delivery(client, c, "RUN1")
    with ctx.tx() as session:
        session.execute(update(Project).where(Project.identifier == c.project).values(sensitive=True))
    created = tus_create(client, c, "RUN1", "a.fastq", 1000)
    assert created.status_code == 409 and created.json()["error"] == "sensitive_not_offered"
    body = tar_of({"a.fastq": b"ACGT" * 100, "b/c.txt": b"x" * 10})
    sent = send_batch(client, c, "RUN1", body)
    assert sent.status_code == 409 and sent.json()["error"] == "sensitive_not_offered"
    with ctx.tx() as session:
        project = projects.get_project(session, c.project)
        assert session.execute(select(func.count()).select_from(Upload)).scalar() == 0
        assert session.execute(select(func.count()).select_from(StoredFile)).scalar() == 0
        for row in session.execute(select(Quota).where(Quota.project_id == project.id)).scalars():
            assert (row.used_bytes, row.reserved_bytes) == (0, 0), row.tier
    assert list(ctx.backend(Tier.AREA).list(c.project)) == []


@pytest.fixture
def sensitive_env(ctx: Context, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(ctx, tmp_path, sensitive=True, secure_project_id="p1234")


def test_levere_deliver_into_a_sensitive_project_is_refused_before_sending(
    sensitive_env: Env, tmp_path: Path
) -> None:
    env = sensitive_env
    run = make_run(tmp_path / "RUN7", {"S1.fastq": 200_000}, tiny=20)
    failed = levere(env.staff, "deliver", env.project, str(run))
    message = one_line_error(failed)
    assert "secure zone" in message and "shared disk" in message
    assert env.traffic.calls("POST", "/api/tus") == 0 and env.traffic.calls("POST", "/batch") == 0
    _nothing_stored(env.ctx, env.project)


def test_a_copy_job_of_a_project_that_became_sensitive_copies_none_of_its_area_files(ctx: Context) -> None:
    """Its long-term copies now come from the secure tier only (Crypt4GH bodies), so plaintext left on
    the area is never copied to long-term: the run fails the files for want of a secure-zone copy."""
    from levere.dataplane import replication
    from levere.db.models import JobRun
    from tests.sync_support import deliver, longterm_path, replica_states, setup_project

    s = setup_project(ctx)  # sync by hand: sealing leaves the long-term copy pending
    deliver(ctx, s, "RUN1", {"a.fastq": b"ACGT" * 1000})
    assert replica_states(ctx, s, "longterm") == {"a.fastq": "pending"}
    with ctx.tx() as session:
        project = projects.get_project(session, s.project)
        run = JobRun(kind="sync", project_id=project.id, state="queued")
        session.add(run)
        session.flush()
        run_id = run.id
        project.sensitive = True
    replication.run_lane(ctx, run_id)
    with ctx.tx() as session:
        closed = session.get(JobRun, run_id)
        assert closed is not None and closed.state == "failed"
        assert "no intact copy on the secure zone" in closed.report["failures"][0]["reason"]
    assert replica_states(ctx, s, "longterm") == {"a.fastq": "failed"}
    assert not Path(longterm_path(ctx, f"{s.project}/RUN1/a.fastq")).exists()
