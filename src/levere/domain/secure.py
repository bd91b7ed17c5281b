"""The secure zone's rules: secure projects, shared disks and their lifecycle, zone members.

Design notes
------------
* A shared disk's state moves only along :data:`DISK_TRANSITIONS` (the table, as ``dds_web``'s
  project statuses): ``open`` -> ``released`` (the facility handed everything to the users' project)
  or ``expired`` (its end date passed); any of those -> ``destroyed`` (its key pair dropped).
  Nothing leaves ``destroyed``.
* The end date is also checked at access time (:func:`effective_state`): an open disk past its end
  date is treated as expired before the sweep job has recorded it, so it is read-only at once.
* A zone member's access ends at their end date, checked at access time (:func:`membership_active`);
  the sweep only records that it ended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from levere.domain.errors import DiskReadOnly, InvalidTransition, ValidationFailed

#: a secure project's identifier, as the national secure service names them (``p1234``)
SECURE_PROJECT = re.compile(r"^p\d{1,6}$")
#: a shared disk's name, made by levere from a counter
DISK_NAME = re.compile(r"^disk-\d{1,9}$")
#: how far ahead a shared disk's end date or a zone member's end date may lie
MAX_LIFETIME = timedelta(days=3 * 366)


class SecureKind(StrEnum):
    USERS = "users"  # the secure project of a research project's users
    FACILITY = "facility"  # a facility's own secure project


class DiskState(StrEnum):
    OPEN = "open"
    RELEASED = "released"
    EXPIRED = "expired"
    DESTROYED = "destroyed"


#: every allowed move of a shared disk; any other is refused
DISK_TRANSITIONS: dict[DiskState, frozenset[DiskState]] = {
    DiskState.OPEN: frozenset({DiskState.RELEASED, DiskState.EXPIRED, DiskState.DESTROYED}),
    DiskState.RELEASED: frozenset({DiskState.DESTROYED}),
    DiskState.EXPIRED: frozenset({DiskState.DESTROYED}),
    DiskState.DESTROYED: frozenset(),
}

#: each state in the words of "the disk is ..."
DISK_WORDS: dict[DiskState, str] = {
    DiskState.OPEN: "open",
    DiskState.RELEASED: "released to the users' project",
    DiskState.EXPIRED: "past its end date",
    DiskState.DESTROYED: "destroyed, with its keys",
}


def disk_transition(current: DiskState, target: DiskState, name: str) -> DiskState:
    """``target`` if a disk in ``current`` may move there, else :class:`InvalidTransition`."""
    if target not in DISK_TRANSITIONS[current]:
        raise InvalidTransition(
            f"shared disk {name} is {DISK_WORDS[current]} and cannot become {target.value}",
            current=current.value,
            target=target.value,
        )
    return target


def effective_state(state: DiskState, ends_at: datetime, now: datetime) -> DiskState:
    """The state a disk is in at ``now``: an open disk past its end date is expired, recorded or not."""
    if state is DiskState.OPEN and now >= ends_at:
        return DiskState.EXPIRED
    return state


def check_writable(state: DiskState, ends_at: datetime, now: datetime, name: str) -> None:
    """Refuse a write (an upload, a new delivery) to a disk that is not open at ``now``."""
    actual = effective_state(state, ends_at, now)
    if actual is not DiskState.OPEN:
        raise DiskReadOnly(
            f"shared disk {name} is {DISK_WORDS[actual]}: it takes no more data", state=actual.value
        )


def notice_due(ends_at: datetime, now: datetime, notice_days: list[int], sent: list[int]) -> int | None:
    """The notice (in days before the end date) to send now, if any: the nearest one whose time has
    come and that was not sent yet. Passing several at once (a disk made 3 days before its end with
    notices at 7 and 1 days) sends only the nearest one."""
    left = ends_at - now
    if left <= timedelta(0):
        return None
    due = [days for days in notice_days if left <= timedelta(days=days) and days not in sent]
    if not due:
        return None
    nearest = min(due)
    if any(days in sent for days in notice_days if days < nearest):
        return None
    return nearest


def check_secure_identifier(identifier: str, field: str = "identifier") -> str:
    identifier = identifier.strip()
    if not SECURE_PROJECT.match(identifier):
        raise ValidationFailed({field: f"{identifier[:40]!r} must look like p1234 (a secure project id)"})
    return identifier


def check_end_date(ends_at: datetime, now: datetime, field: str = "ends_at") -> datetime:
    """An end date in the future and not too far ahead, timezone-aware."""
    if ends_at.tzinfo is None:
        raise ValidationFailed({field: "give a time zone (e.g. 2027-03-01T00:00:00Z)"})
    if ends_at <= now:
        raise ValidationFailed({field: "must lie in the future"})
    if ends_at - now > MAX_LIFETIME:
        raise ValidationFailed({field: f"must lie within {MAX_LIFETIME.days} days"})
    return ends_at


@dataclass(frozen=True)
class Membership:
    """A zone member's standing: given an end date, removed or not."""

    ends_at: datetime
    removed_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.removed_at is None and now < self.ends_at


def membership_active(ends_at: datetime, removed_at: datetime | None, now: datetime) -> bool:
    return Membership(ends_at, removed_at).active(now)


class HeaderHolder(StrEnum):
    """Whose key a stored file's Crypt4GH header is made for (``file_headers.holder_kind``)."""

    #: the shared disk the file was delivered to: the facility reads through it until release
    DISK = "disk"
    #: a secure project: the users' project after release
    SECURE = "secure"
