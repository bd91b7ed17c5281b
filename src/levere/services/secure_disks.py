"""Shared disks: the temporary disk between a facility's secure project and a users' one.

The helpdesk creates a disk; only the facility's side writes to it; both sides list and read it.
Before its end date both sides get notices; from the end date on it is read-only (checked at every
access, and recorded by the sweep); the sweep, or the helpdesk, destroys it later, dropping its
private key so that nothing encrypted to it can be opened again. The states and their moves are in
:mod:`levere.domain.secure`.

Design notes
------------
Uploading to a disk, Crypt4GH at rest and release come in the next step; :func:`authorize_write`
is the gate they go through (the facility's side only, the disk open and before its end date).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import SharedDisk, User, utcnow
from levere.domain.errors import NotFound, ValidationFailed
from levere.domain.roles import Action, Subject, UserKind, allowed, require
from levere.domain.secure import (
    DiskState,
    SecureKind,
    check_end_date,
    check_writable,
    disk_transition,
    effective_state,
    notice_due,
)
from levere.domain.units import format_size
from levere.services import accounts, audit, projects
from levere.services.counters import next_value
from levere.services.notify import notify
from levere.services.secure import get_secure, key_context, new_key_pair, subject_for_secure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskView:
    name: str
    state: str
    facility_project: str  # the facility's secure project
    users_project: str  # the users' secure project
    quota_bytes: int
    used_bytes: int
    ends_at: datetime
    public_key: str
    created_at: datetime
    released_at: datetime | None
    expired_at: datetime | None
    destroyed_at: datetime | None


def view(disk: SharedDisk, now: datetime) -> DiskView:
    return DiskView(
        name=disk.name,
        state=effective_state(DiskState(disk.state), disk.ends_at, now).value,
        facility_project=disk.facility_secure.identifier,
        users_project=disk.users_secure.identifier,
        quota_bytes=disk.quota_bytes,
        used_bytes=disk.used_bytes,
        ends_at=disk.ends_at,
        public_key=disk.public_key,
        created_at=disk.created_at,
        released_at=disk.released_at,
        expired_at=disk.expired_at,
        destroyed_at=disk.destroyed_at,
    )


def subject_for_disk(session: Session, disk: SharedDisk, user: User) -> Subject:
    """The facility's side is the staff of the facility whose secure project the disk links (only
    they are the "assigned facility" here); the users' side is who the users' secure project has."""
    users_side = subject_for_secure(session, disk.users_secure, user)
    facility_side = subject_for_secure(session, disk.facility_secure, user)
    return Subject(
        kind=UserKind(user.kind),
        project_role=users_side.project_role,
        facility_assigned=facility_side.facility_assigned,
    )


def get_disk(session: Session, name: str) -> SharedDisk:
    disk = session.execute(select(SharedDisk).where(SharedDisk.name == name.strip().lower())).scalar()
    if disk is None:
        raise NotFound(f"no shared disk {name.strip()[:40]}")
    return disk


def authorize_disk(session: Session, user: User, name: str, action: Action) -> SharedDisk:
    disk = get_disk(session, name)
    require(subject_for_disk(session, disk, user), action, f"on shared disk {disk.name}")
    return disk


def authorize_write(session: Session, user: User, name: str) -> SharedDisk:
    """The gate of every write to a disk: the facility's side, the disk open, before its end date."""
    disk = authorize_disk(session, user, name, Action.DISK_WRITE)
    check_writable(DiskState(disk.state), disk.ends_at, utcnow(), disk.name)
    return disk


def both_sides(session: Session, disk: SharedDisk) -> list[User | str]:
    """Who hears about a disk: the facility's staff and contact, the users' project admins."""
    people: list[User | str] = []
    facility = disk.facility_secure.facility
    if facility is not None:
        people += accounts.facility_staff(session, facility.id)
        people.append(facility.contact_email)
    research = disk.users_secure.project
    if research is not None:
        people += [m.user for m in projects.members(session, research) if m.role == "admin"]
    return people


def create(
    ctx: Context,
    actor: User,
    *,
    facility_project: str,
    users_project: str,
    ends_at: datetime,
    quota_bytes: int | None = None,
) -> DiskView:
    now = utcnow()
    ends_at = check_end_date(ends_at, now)
    quota = quota_bytes if quota_bytes is not None else ctx.settings.secure.disk_quota_bytes
    if quota <= 0:
        raise ValidationFailed({"quota_bytes": "must be larger than zero"})
    with ctx.tx() as session:
        require(accounts.subject_of(actor), Action.DISK_CREATE)
        facility_side = get_secure(session, facility_project)
        users_side = get_secure(session, users_project)
        if facility_side.kind != SecureKind.FACILITY:
            raise ValidationFailed(
                {"facility_project": f"{facility_side.identifier} is not a facility's secure project"}
            )
        if users_side.kind != SecureKind.USERS:
            raise ValidationFailed(
                {"users_project": f"{users_side.identifier} is not a users' secure project"}
            )
        disk = SharedDisk(
            name=f"disk-{next_value(session, 'shared_disk')}",
            facility_secure_id=facility_side.id,
            users_secure_id=users_side.id,
            quota_bytes=quota,
            ends_at=ends_at,
            state=DiskState.OPEN.value,
            public_key="",
            notices_sent=[],
            created_by_id=actor.id,
        )
        session.add(disk)
        session.flush()
        keys = new_key_pair(ctx, key_context("shared-disk", disk.id))
        disk.public_key = keys.public_key
        disk.wrapped_private_key = keys.wrapped_private_key
        disk.master_key_id = keys.master_key_id
        session.flush()
        session.refresh(disk)
        audit.record(
            session, actor, "disk.created", "shared_disk", disk.id,
            after={"name": disk.name, "facility_project": facility_side.identifier,
                   "users_project": users_side.identifier, "quota_bytes": quota,
                   "ends_at": ends_at.isoformat(), "master_key_id": keys.master_key_id},
        )  # fmt: skip
        notify(
            ctx, session, both_sides(session, disk),
            f"[levere] Shared disk {disk.name} is open",
            f"Shared disk {disk.name} links secure projects {facility_side.identifier} (facility) and "
            f"{users_side.identifier} (users) until {ends_at:%Y-%m-%d %H:%M} UTC, with "
            f"{format_size(quota)} of space. Only the facility writes to it; both sides can read it.\n",
        )  # fmt: skip
        return view(disk, now)


def show(ctx: Context, actor: User, name: str) -> DiskView:
    with ctx.tx() as session:
        disk = authorize_disk(session, actor, name, Action.DISK_READ)
        audit.record(session, actor, "disk.read", "shared_disk", disk.id)
        return view(disk, utcnow())


def public_key(ctx: Context, actor: User, name: str) -> str:
    """The disk's Crypt4GH public key in the form ``crypt4gh encrypt --recipient_pk`` reads."""
    with ctx.tx() as session:
        disk = authorize_disk(session, actor, name, Action.DISK_READ)
        if DiskState(disk.state) is DiskState.DESTROYED:
            raise ValidationFailed(
                {"disk": f"shared disk {disk.name} is destroyed: encrypt to nothing on it"}
            )
        audit.record(session, actor, "disk.public_key_read", "shared_disk", disk.id)
        return f"-----BEGIN CRYPT4GH PUBLIC KEY-----\n{disk.public_key}\n-----END CRYPT4GH PUBLIC KEY-----\n"


def visible(ctx: Context, actor: User) -> list[DiskView]:
    now = utcnow()
    with ctx.tx() as session:
        rows = session.execute(select(SharedDisk).order_by(SharedDisk.created_at)).scalars()
        found = [d for d in rows if allowed(subject_for_disk(session, d, actor), Action.DISK_READ)]
        audit.record(session, actor, "disk.listed", "shared_disk", "*", after={"count": len(found)})
        return [view(d, now) for d in found]


def _destroy(session: Session, actor: User | None, disk: SharedDisk, now: datetime) -> None:
    before = DiskState(disk.state)
    disk.state = disk_transition(before, DiskState.DESTROYED, disk.name).value
    # dropping the wrapped private key is the destruction: without it nothing encrypted to the
    # disk opens again, whatever bytes are left anywhere
    disk.wrapped_private_key = None
    disk.master_key_id = None
    disk.destroyed_at = now
    audit.record(
        session, actor, "disk.destroyed", "shared_disk", disk.id,
        before={"state": before.value}, after={"state": disk.state, "keys": "dropped"},
    )  # fmt: skip


def destroy(ctx: Context, actor: User, name: str) -> DiskView:
    now = utcnow()
    with ctx.tx() as session:
        disk = authorize_disk(session, actor, name, Action.DISK_DESTROY)
        if (
            DiskState(disk.state) is DiskState.OPEN
            and effective_state(DiskState.OPEN, disk.ends_at, now) is DiskState.EXPIRED
        ):
            _expire(session, disk, now)
        _destroy(session, actor, disk, now)
        notify(
            ctx, session, both_sides(session, disk),
            f"[levere] Shared disk {disk.name} was destroyed",
            f"Shared disk {disk.name} was destroyed with its keys; nothing on it can be read any more.\n",
        )  # fmt: skip
        return view(disk, now)


def _expire(session: Session, disk: SharedDisk, now: datetime) -> None:
    disk.state = disk_transition(DiskState(disk.state), DiskState.EXPIRED, disk.name).value
    disk.expired_at = now
    audit.record(
        session, None, "disk.expired", "shared_disk", disk.id,
        before={"state": DiskState.OPEN.value}, after={"state": disk.state, "ends_at": disk.ends_at.isoformat()},
    )  # fmt: skip


@dataclass(frozen=True)
class Sweep:
    noticed: int
    expired: int
    destroyed: int


def sweep(ctx: Context) -> Sweep:
    """The periodic job: notices before end dates, expiry at the end date, destruction
    ``disk_destroy_after_days`` after it."""
    now = utcnow()
    settings = ctx.settings.secure
    noticed = expired = destroyed = 0
    with ctx.tx() as session:
        live = list(
            session.execute(
                select(SharedDisk).where(
                    or_(SharedDisk.state == DiskState.OPEN.value, SharedDisk.state == DiskState.EXPIRED.value)
                )
            ).scalars()
        )
        for disk in live:
            state = DiskState(disk.state)
            if state is DiskState.OPEN:
                days = notice_due(disk.ends_at, now, settings.disk_notice_days, list(disk.notices_sent))
                if days is not None:
                    disk.notices_sent = [*disk.notices_sent, days]
                    notify(
                        ctx, session, both_sides(session, disk),
                        f"[levere] Shared disk {disk.name} closes in {days} day{'s' if days != 1 else ''}",
                        f"Shared disk {disk.name} becomes read-only on {disk.ends_at:%Y-%m-%d %H:%M} UTC and "
                        f"is destroyed with its keys {settings.disk_destroy_after_days} days later. Release what "
                        "the users' project should keep before then.\n",
                    )  # fmt: skip
                    audit.record(
                        session, None, "disk.notice_sent", "shared_disk", disk.id, after={"days_before": days}
                    )
                    noticed += 1
                if now >= disk.ends_at:
                    _expire(session, disk, now)
                    expired += 1
                    state = DiskState.EXPIRED
            if state is DiskState.EXPIRED and now >= disk.ends_at + timedelta(
                days=settings.disk_destroy_after_days
            ):
                _destroy(session, None, disk, now)
                destroyed += 1
    if noticed or expired or destroyed:
        log.info("shared disks: %d notices, %d expired, %d destroyed", noticed, expired, destroyed)
    return Sweep(noticed, expired, destroyed)
