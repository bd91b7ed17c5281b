"""The secure zone's model: shared disks' states, secure projects made on approval or registered,
their keys, the facility-only write gate, notices/expiry/destruction, and zone members' end dates."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from levere.context import Context
from levere.crypt4gh import MasterKeys, PublicKey
from levere.db.models import (
    Application,
    AuditEvent,
    Notification,
    SecureMember,
    SecureProject,
    SharedDisk,
    utcnow,
)
from levere.domain.errors import (
    AccessDenied,
    AlreadyExists,
    ConfigurationError,
    Conflict,
    DiskReadOnly,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from levere.domain.roles import ProjectRole, UserKind
from levere.domain.secure import DiskState, check_writable, disk_transition, effective_state, notice_due
from levere.services import applications, projects, secure, secure_disks
from levere.services.secure import key_context
from tests.conftest import Mailbox
from tests.helpers import World, basic_world, complete_form, make_facility, make_user, provisioned_project

NOW = datetime(2027, 1, 10, 12, 0, tzinfo=utcnow().tzinfo)

# --- the state machine ----------------------------------------------------------------------------

#: written out here rather than read from the table, so that a change to the table fails a test
ALLOWED = {
    (DiskState.OPEN, DiskState.RELEASED),
    (DiskState.OPEN, DiskState.EXPIRED),
    (DiskState.OPEN, DiskState.DESTROYED),
    (DiskState.RELEASED, DiskState.DESTROYED),
    (DiskState.EXPIRED, DiskState.DESTROYED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(DiskState, DiskState)))
def test_every_disk_transition_is_allowed_or_refused_as_listed(current: DiskState, target: DiskState) -> None:
    if (current, target) in ALLOWED:
        assert disk_transition(current, target, "disk-1") is target
        return
    with pytest.raises(InvalidTransition) as refused:
        disk_transition(current, target, "disk-1")
    assert "disk-1" in refused.value.message and refused.value.http_status == 409
    assert refused.value.details == {"current": current.value, "target": target.value}


def test_a_disk_is_read_only_from_its_end_date_whether_the_sweep_ran_or_not() -> None:
    ends = NOW + timedelta(hours=1)
    check_writable(DiskState.OPEN, ends, NOW, "disk-1")  # open, before the end date: writable
    assert effective_state(DiskState.OPEN, ends, NOW) is DiskState.OPEN
    for at in (ends, ends + timedelta(seconds=1)):
        assert effective_state(DiskState.OPEN, ends, at) is DiskState.EXPIRED
        with pytest.raises(DiskReadOnly, match="past its end date"):
            check_writable(DiskState.OPEN, ends, at, "disk-1")
    for state in (DiskState.RELEASED, DiskState.EXPIRED, DiskState.DESTROYED):
        with pytest.raises(DiskReadOnly) as refused:
            check_writable(state, ends, NOW, "disk-1")
        assert refused.value.code == "disk_read_only" and refused.value.details == {"state": state.value}


def test_notices_go_out_once_each_and_only_the_nearest_when_several_are_due() -> None:
    ends = NOW + timedelta(days=10)
    days = [7, 1]
    assert notice_due(ends, NOW, days, []) is None  # 10 days left
    assert notice_due(ends, ends - timedelta(days=7), days, []) == 7
    assert notice_due(ends, ends - timedelta(days=6), days, [7]) is None
    assert notice_due(ends, ends - timedelta(hours=20), days, [7]) == 1
    assert notice_due(ends, ends - timedelta(hours=20), days, [7, 1]) is None
    # made 3 days before its end: the 7-day notice is not sent late once the 1-day one went out
    assert notice_due(ends, ends - timedelta(hours=3), days, []) == 1
    assert notice_due(ends, ends - timedelta(hours=2), days, [1]) is None
    assert notice_due(ends, ends, days, []) is None  # at the end date: expiry, not a notice


# --- secure projects and their keys ---------------------------------------------------------------


def _keys(ctx: Context) -> MasterKeys:
    return MasterKeys.from_setting(ctx.settings.secure.master_key_file)


def _check_key_pair(ctx: Context, row_kind: str, row_id: str, public: str, wrapped: str | None) -> None:
    """The stored public key is the wrapped private key's; the wrap is bound to its row."""
    assert wrapped is not None and wrapped.startswith("c4gh-wrap-v1:test-1:")
    private = _keys(ctx).unwrap(wrapped, key_context(row_kind, row_id))
    assert private.public_key == PublicKey.from_pem(public)
    assert private.secret_bytes().hex() not in repr(private)


def test_approving_a_sensitive_application_makes_the_users_secure_project_with_a_wrapped_key(
    ctx: Context, mailbox: Mailbox
) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world, sensitive=True)
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        zone = session.execute(
            select(SecureProject).where(SecureProject.project_id == project.id)
        ).scalar_one()
        assert (
            zone.kind == "users"
            and zone.identifier.startswith("p5")
            and project.secure_project_id == zone.identifier
        )
        _check_key_pair(ctx, "secure-project", zone.id, zone.public_key, zone.wrapped_private_key)
        private = _keys(ctx).unwrap(zone.wrapped_private_key, key_context("secure-project", zone.id))
        secret_hex = private.secret_bytes().hex()
        events = (
            session.execute(select(AuditEvent).where(AuditEvent.action == "secure.registered"))
            .scalars()
            .all()
        )
        assert len(events) == 1 and events[0].object_id == zone.id
        # the private key is in no audit event and no notification, in any form
        for row in session.execute(select(AuditEvent)).scalars():
            assert secret_hex not in str(row.after) and zone.wrapped_private_key not in str(row.after)
        for note in session.execute(select(Notification)).scalars():
            assert zone.wrapped_private_key not in note.body
    assert zone.identifier in secure.show(ctx, world.helpdesk, zone.identifier).identifier
    assert "wrapped" not in repr(zone) and zone.public_key not in repr(zone)


def test_a_wrapped_key_copied_onto_another_row_does_not_open(ctx: Context) -> None:
    world = basic_world(ctx)
    first = provisioned_project(ctx, world, sensitive=True)
    second = provisioned_project(ctx, world, sensitive=True, title="Another")
    with ctx.tx() as session:
        rows = {
            p: session.execute(
                select(SecureProject).where(SecureProject.project_id == projects.get_project(session, p).id)
            ).scalar_one()
            for p in (first, second)
        }
    with pytest.raises(ConfigurationError, match="does not open"):
        _keys(ctx).unwrap(rows[first].wrapped_private_key, key_context("secure-project", rows[second].id))


def test_an_application_naming_a_secure_project_links_that_one(ctx: Context) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world, sensitive=True, secure_project_id="p1234")
    shown = secure.show(ctx, world.helpdesk, "p1234")
    assert shown.kind == "users" and shown.project == identifier
    # the same id named again for another project: refused, and the application stays undecided
    application = applications.create(
        ctx, world.staff,
        complete_form(world.facility.name, world.pi.email, sensitive=True, secure_project_id="p1234", title="B"),
    )  # fmt: skip
    applications.submit(ctx, world.pi, str(application.number))
    with pytest.raises(Conflict, match="another research project"):
        applications.approve(ctx, world.helpdesk, str(application.number))
    with ctx.tx() as session:
        again = session.get(Application, application.id)
        assert again is not None and again.state == "submitted" and again.project_id is None


def test_an_application_naming_a_facilitys_secure_project_is_refused(ctx: Context) -> None:
    world = basic_world(ctx)
    secure.register(ctx, world.helpdesk, "p77", facility=world.facility.name)
    application = applications.create(
        ctx,
        world.staff,
        complete_form(world.facility.name, world.pi.email, sensitive=True, secure_project_id="p77"),
    )
    applications.submit(ctx, world.pi, str(application.number))
    with pytest.raises(ValidationFailed, match="facility's secure project"):
        applications.approve(ctx, world.helpdesk, str(application.number))


def test_only_the_helpdesk_registers_secure_projects_and_bad_ids_are_refused(ctx: Context) -> None:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    with pytest.raises(AccessDenied, match="only the helpdesk"):
        secure.register(ctx, world.staff, "p900", facility=world.facility.name)
    with pytest.raises(AccessDenied):
        secure.register(ctx, world.pi, "p900", project=identifier)
    for bad in ("1234", "p", "P12x", "p1234567", "p-1"):
        with pytest.raises(ValidationFailed, match="must look like p1234"):
            secure.register(ctx, world.helpdesk, bad, facility=world.facility.name)
    with pytest.raises(ValidationFailed, match="not both"):
        secure.register(ctx, world.helpdesk, "p900", facility=world.facility.name, project=identifier)
    with pytest.raises(ValidationFailed, match="not both"):
        secure.register(ctx, world.helpdesk, "p900")
    made = secure.register(ctx, world.helpdesk, "P900", project=identifier)
    assert made.identifier == "p900" and made.project == identifier
    with pytest.raises(AlreadyExists):
        secure.register(ctx, world.helpdesk, "p900", facility=world.facility.name)
    with pytest.raises(Conflict, match="already has secure project p900"):
        secure.register(ctx, world.helpdesk, "p901", project=identifier)
    secure.register(ctx, world.helpdesk, "p902", facility=world.facility.name)
    with pytest.raises(Conflict, match="already has secure project p902"):
        secure.register(ctx, world.helpdesk, "p903", facility=world.facility.name)
    with ctx.tx() as session:
        assert sorted(session.execute(select(SecureProject.identifier)).scalars()) == ["p900", "p902"]


# --- shared disks ---------------------------------------------------------------------------------


class Zone:
    """A sensitive project with its users' secure project, the facility's secure project, a disk."""

    def __init__(self, ctx: Context, world: World) -> None:
        self.world = world
        self.project = provisioned_project(ctx, world, sensitive=True, secure_project_id="p1234")
        secure.register(ctx, world.helpdesk, "p11", facility=world.facility.name)
        self.disk = secure_disks.create(
            ctx,
            world.helpdesk,
            facility_project="p11",
            users_project="p1234",
            ends_at=utcnow() + timedelta(days=30),
        ).name


def _set_disk(ctx: Context, name: str, **values: object) -> None:
    with ctx.tx() as session:
        disk = session.execute(select(SharedDisk).where(SharedDisk.name == name)).scalar_one()
        for key, value in values.items():
            setattr(disk, key, value)


def _disk_row(ctx: Context, name: str) -> SharedDisk:
    with ctx.tx() as session:
        return session.execute(select(SharedDisk).where(SharedDisk.name == name)).scalar_one()


def _write(ctx: Context, user: object, name: str) -> None:
    with ctx.tx() as session:
        secure_disks.authorize_write(session, session.merge(user), name)


def test_the_helpdesk_creates_a_disk_with_the_default_quota_and_its_own_keys(
    ctx: Context, mailbox: Mailbox
) -> None:
    zone = Zone(ctx, basic_world(ctx))
    shown = secure_disks.show(ctx, zone.world.helpdesk, zone.disk)
    assert shown.state == "open" and shown.quota_bytes == 1 << 40 and shown.used_bytes == 0
    assert (shown.facility_project, shown.users_project) == ("p11", "p1234")
    row = _disk_row(ctx, zone.disk)
    _check_key_pair(ctx, "shared-disk", row.id, row.public_key, row.wrapped_private_key)
    with ctx.tx() as session:
        users_key = session.execute(
            select(SecureProject.public_key).where(SecureProject.identifier == "p1234")
        ).scalar()
    assert row.public_key != users_key  # a key pair of its own
    # both sides hear of it: the facility's staff and the users' project admin (the PI)
    mailbox.wait_for(zone.world.staff.email, f"Shared disk {zone.disk} is open")
    mailbox.wait_for(zone.world.pi.email, f"Shared disk {zone.disk} is open")


def test_disk_creation_refuses_bad_input_and_anyone_but_the_helpdesk(ctx: Context) -> None:
    zone = Zone(ctx, basic_world(ctx))
    w = zone.world
    ends = utcnow() + timedelta(days=5)
    for who in (w.staff, w.pi):
        with pytest.raises(AccessDenied, match="only the helpdesk"):
            secure_disks.create(ctx, who, facility_project="p11", users_project="p1234", ends_at=ends)
    with pytest.raises(ValidationFailed, match="not a facility's secure project"):
        secure_disks.create(ctx, w.helpdesk, facility_project="p1234", users_project="p1234", ends_at=ends)
    with pytest.raises(ValidationFailed, match="not a users' secure project"):
        secure_disks.create(ctx, w.helpdesk, facility_project="p11", users_project="p11", ends_at=ends)
    with pytest.raises(NotFound):
        secure_disks.create(ctx, w.helpdesk, facility_project="p11", users_project="p999", ends_at=ends)
    with pytest.raises(ValidationFailed, match="in the future"):
        secure_disks.create(ctx, w.helpdesk, facility_project="p11", users_project="p1234", ends_at=utcnow())
    with pytest.raises(ValidationFailed, match="time zone"):
        secure_disks.create(
            ctx, w.helpdesk, facility_project="p11", users_project="p1234", ends_at=datetime(2030, 1, 1)
        )
    with pytest.raises(ValidationFailed, match="larger than zero"):
        secure_disks.create(
            ctx, w.helpdesk, facility_project="p11", users_project="p1234", ends_at=ends, quota_bytes=0
        )
    assert [d.name for d in secure_disks.visible(ctx, w.helpdesk)] == [zone.disk]


def test_only_the_facilitys_side_writes_and_both_sides_read(ctx: Context) -> None:
    zone = Zone(ctx, basic_world(ctx))
    w = zone.world
    other_facility = make_facility(ctx, "seq-other")
    outsider_staff = make_user(
        ctx, "staff@seq-other.example.org", UserKind.FACILITY, other_facility, password=None
    )
    member = make_user(ctx, "researcher@uib.example.org", password=None)
    projects.add_member(ctx, w.pi, zone.project, member.email, ProjectRole.MEMBER)
    _write(ctx, w.staff, zone.disk)  # the facility's staff: allowed
    for who in (w.helpdesk, w.pi, member, outsider_staff):
        with pytest.raises(AccessDenied, match="only the facility's side"):
            _write(ctx, who, zone.disk)
    # both sides (and the helpdesk) read; staff of another facility does not
    for who in (w.staff, w.pi, member, w.helpdesk):
        assert secure_disks.show(ctx, who, zone.disk).name == zone.disk
        assert [d.name for d in secure_disks.visible(ctx, who)] == [zone.disk]
    with pytest.raises(AccessDenied):
        secure_disks.show(ctx, outsider_staff, zone.disk)
    assert secure_disks.visible(ctx, outsider_staff) == []
    with ctx.tx() as session:
        reads = session.execute(select(AuditEvent).where(AuditEvent.action == "disk.read")).scalars().all()
    assert len(reads) == 4  # every read is an audit event


@pytest.mark.parametrize("state", ["released", "expired", "destroyed", "past end date"])
def test_writes_to_a_disk_that_is_not_open_are_refused(ctx: Context, state: str) -> None:
    zone = Zone(ctx, basic_world(ctx))
    if state == "past end date":  # the sweep has not run: the end date alone makes it read-only
        _set_disk(ctx, zone.disk, ends_at=utcnow() - timedelta(seconds=1))
    else:
        _set_disk(ctx, zone.disk, state=state)
    before = _disk_row(ctx, zone.disk)
    with pytest.raises(DiskReadOnly, match="takes no more data"):
        _write(ctx, zone.world.staff, zone.disk)
    after = _disk_row(ctx, zone.disk)
    assert (after.state, after.used_bytes) == (before.state, before.used_bytes)


def test_the_sweep_sends_notices_then_expires_then_destroys_with_the_keys(
    ctx: Context, mailbox: Mailbox
) -> None:
    zone = Zone(ctx, basic_world(ctx))
    staff, pi = zone.world.staff.email, zone.world.pi.email
    assert secure_disks.sweep(ctx) == secure_disks.Sweep(0, 0, 0)  # 30 days left
    _set_disk(ctx, zone.disk, ends_at=utcnow() + timedelta(days=6, hours=23))
    assert secure_disks.sweep(ctx).noticed == 1
    mailbox.wait_for(staff, f"Shared disk {zone.disk} closes in 7 days")
    mailbox.wait_for(pi, f"Shared disk {zone.disk} closes in 7 days")
    assert secure_disks.sweep(ctx).noticed == 0  # once
    _set_disk(ctx, zone.disk, ends_at=utcnow() + timedelta(hours=5))
    assert secure_disks.sweep(ctx).noticed == 1
    mailbox.wait_for(staff, f"Shared disk {zone.disk} closes in 1 day")
    assert _disk_row(ctx, zone.disk).notices_sent == [7, 1]
    _set_disk(ctx, zone.disk, ends_at=utcnow() - timedelta(minutes=1))
    assert secure_disks.sweep(ctx) == secure_disks.Sweep(0, 1, 0)
    row = _disk_row(ctx, zone.disk)
    assert row.state == "expired" and row.expired_at is not None and row.wrapped_private_key is not None
    assert secure_disks.sweep(ctx) == secure_disks.Sweep(0, 0, 0)  # kept for disk_destroy_after_days
    _set_disk(ctx, zone.disk, ends_at=utcnow() - timedelta(days=30, minutes=1))
    assert secure_disks.sweep(ctx) == secure_disks.Sweep(0, 0, 1)
    row = _disk_row(ctx, zone.disk)
    assert row.state == "destroyed" and row.wrapped_private_key is None and row.master_key_id is None
    assert secure_disks.show(ctx, zone.world.staff, zone.disk).state == "destroyed"
    with ctx.tx() as session:
        actions = (
            session.execute(
                select(AuditEvent.action).where(AuditEvent.object_id == row.id).order_by(AuditEvent.seq)
            )
            .scalars()
            .all()
        )
    assert [a for a in actions if a != "disk.read"] == [
        "disk.created",
        "disk.notice_sent",
        "disk.notice_sent",
        "disk.expired",
        "disk.destroyed",
    ]


def test_the_helpdesk_destroys_a_disk_once_and_nobody_else_can(ctx: Context, mailbox: Mailbox) -> None:
    zone = Zone(ctx, basic_world(ctx))
    for who in (zone.world.staff, zone.world.pi):
        with pytest.raises(AccessDenied):
            secure_disks.destroy(ctx, who, zone.disk)
    assert _disk_row(ctx, zone.disk).wrapped_private_key is not None
    gone = secure_disks.destroy(ctx, zone.world.helpdesk, zone.disk)
    assert gone.state == "destroyed" and _disk_row(ctx, zone.disk).wrapped_private_key is None
    mailbox.wait_for(zone.world.staff.email, f"Shared disk {zone.disk} was destroyed")
    with pytest.raises(InvalidTransition, match="destroyed"):
        secure_disks.destroy(ctx, zone.world.helpdesk, zone.disk)
    with pytest.raises(ValidationFailed, match="destroyed"):
        secure_disks.public_key(ctx, zone.world.staff, zone.disk)
    with pytest.raises(DiskReadOnly):
        _write(ctx, zone.world.staff, zone.disk)


def test_destroying_a_disk_past_its_end_date_records_the_expiry_first(ctx: Context) -> None:
    zone = Zone(ctx, basic_world(ctx))
    _set_disk(ctx, zone.disk, ends_at=utcnow() - timedelta(hours=1))
    secure_disks.destroy(ctx, zone.world.helpdesk, zone.disk)
    row = _disk_row(ctx, zone.disk)
    assert row.expired_at is not None and row.destroyed_at is not None


# --- zone members ---------------------------------------------------------------------------------


def test_an_admin_lets_staff_in_until_an_end_date_and_access_ends_by_itself(
    ctx: Context, mailbox: Mailbox
) -> None:
    zone = Zone(ctx, basic_world(ctx))
    w = zone.world
    helper = make_user(ctx, "helper@levere.test", UserKind.HELPDESK, password=None)
    with pytest.raises(AccessDenied):  # a helpdesk operator reads no zone data by office
        _reads_data(ctx, helper)
    made = secure.invite_member(ctx, w.pi, "p1234", helper.email, utcnow() + timedelta(days=3))
    assert made.active and made.email == helper.email
    mailbox.wait_for(helper.email, "You have access to secure project p1234")
    _reads_data(ctx, helper)
    assert secure_disks.show(ctx, helper, zone.disk).name == zone.disk  # the users' side reads the disk
    with pytest.raises(AccessDenied):  # but is not the facility's side
        _write(ctx, helper, zone.disk)
    # the end date passes: access ends at once, before the sweep records it
    with ctx.tx() as session:
        row = session.get(SecureMember, (_zone_id(session, "p1234"), helper.id))
        assert row is not None
        row.ends_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(AccessDenied):
        _reads_data(ctx, helper)
    assert secure.record_ended_memberships(ctx) == 1
    assert secure.record_ended_memberships(ctx) == 0  # recorded once
    listed = secure.list_members(ctx, w.pi, "p1234")
    assert [(m.email, m.active) for m in listed] == [(helper.email, False)]
    # let in again with a new end date
    secure.invite_member(ctx, w.pi, "p1234", helper.email, utcnow() + timedelta(days=1))
    _reads_data(ctx, helper)


def _reads_data(ctx: Context, user: object) -> None:
    with ctx.tx() as session:
        assert secure.authorize_data(session, session.merge(user), "p1234").identifier == "p1234"


def _zone_id(session: object, identifier: str) -> str:
    return session.execute(
        select(SecureProject.id).where(SecureProject.identifier == identifier)
    ).scalar_one()  # type: ignore[attr-defined]


def test_removal_ends_access_now_and_only_admins_manage_members(ctx: Context) -> None:
    zone = Zone(ctx, basic_world(ctx))
    w = zone.world
    other_staff = make_user(ctx, "analyst@norseq.example.org", UserKind.FACILITY, w.facility, password=None)
    until = utcnow() + timedelta(days=3)
    for who in (w.helpdesk, w.staff, other_staff):
        with pytest.raises(AccessDenied, match="project admins can"):
            secure.invite_member(ctx, who, "p1234", other_staff.email, until)
    with pytest.raises(AccessDenied):  # the assigned facility's staff see the project, not its data
        _reads_data(ctx, other_staff)
    secure.invite_member(ctx, w.pi, "p1234", other_staff.email, until)
    _reads_data(ctx, other_staff)
    removed = secure.remove_member(ctx, w.pi, "p1234", other_staff.email)
    assert not removed.active and removed.removed_at is not None
    with pytest.raises(AccessDenied):
        _reads_data(ctx, other_staff)
    with pytest.raises(NotFound):
        secure.remove_member(ctx, w.pi, "p1234", other_staff.email)


def test_bad_member_invitations_are_refused_and_change_nothing(ctx: Context) -> None:
    zone = Zone(ctx, basic_world(ctx))
    w = zone.world
    researcher = make_user(ctx, "someone@uib.example.org", password=None)
    until = utcnow() + timedelta(days=3)
    with pytest.raises(ValidationFailed, match="only helpdesk operators and facility staff"):
        secure.invite_member(ctx, w.pi, "p1234", researcher.email, until)
    with pytest.raises(ValidationFailed, match="in the future"):
        secure.invite_member(ctx, w.pi, "p1234", w.staff.email, utcnow() - timedelta(days=1))
    with pytest.raises(ValidationFailed, match="within"):
        secure.invite_member(ctx, w.pi, "p1234", w.staff.email, utcnow() + timedelta(days=5000))
    with pytest.raises(NotFound):
        secure.invite_member(ctx, w.pi, "p1234", "nobody@example.org", until)
    with pytest.raises(NotFound):
        secure.invite_member(ctx, w.pi, "p4321", w.staff.email, until)
    with pytest.raises(AccessDenied):  # a facility's secure project has no admin to let people in
        secure.invite_member(ctx, w.pi, "p11", w.staff.email, until)
    assert secure.list_members(ctx, w.pi, "p1234") == []
