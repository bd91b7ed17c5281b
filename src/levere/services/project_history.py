"""A project's history for its page: quota use over time per tier, the viewer's notifications about
the project, and a page of the project's audit trail.

Design notes
------------
levere keeps no table of quota use over time, so the series are rebuilt from what the database
holds, and each says what it is built from (``basis``):

* the landing tier (the project area): the bytes of every file delivered, on the day its row was
  stored, less the bytes of copies freed from the area, on the day they were freed;
* every other tier (long-term): the bytes of the copies present there, on the day each copy was
  last verified (a later ``levere verify`` moves a copy's day forward, never its size).

Both are sums grouped by day in the database, so a project of many files costs two queries per
tier. The last point of each series is today with the quota's recorded use, so the line ends where
the quota bar stands even where the history above cannot account for every byte.

Notifications belong to people, not projects: the project's notifications are the viewer's own
whose subject names the project (every notification about a project does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Notification, Quota, Replica, StoredFile, User, utcnow
from levere.domain.errors import NoPlacement
from levere.domain.replicas import ReplicaState
from levere.domain.roles import Action, allowed
from levere.domain.tiers import ProjectKind, Purpose, placement_on, tier_words
from levere.services import projects
from levere.services.audit_listing import AuditEventView, project_events
from levere.services.views import NotificationView, notification_view

#: events on one page of a project's trail, and notifications shown on its page
TRAIL_PAGE = 25
NOTES = 20
#: long-term copies that count as held: on the tier, whatever a verify last found
HELD = (ReplicaState.PRESENT, ReplicaState.DAMAGED, ReplicaState.REPAIRING)


@dataclass(frozen=True)
class UsePoint:
    day: date
    bytes: int


@dataclass(frozen=True)
class TierSeries:
    """One tier's use by day (cumulative bytes at the end of each day with a change)."""

    tier: str
    words: str  # the tier in the user's words
    limit_bytes: int
    points: tuple[UsePoint, ...]
    basis: str  # what the series is built from, in the user's words


@dataclass(frozen=True)
class TrailPage:
    events: tuple[AuditEventView, ...]
    page: int
    has_more: bool


@dataclass(frozen=True)
class ProjectHistory:
    series: tuple[TierSeries, ...]
    notifications: tuple[NotificationView, ...]
    #: ``None`` for those who may not read the project's trail
    trail: TrailPage | None


def history(ctx: Context, actor: User, identifier: str, *, trail_page: int = 1) -> ProjectHistory:
    """The project's use per tier over time, ``actor``'s notifications about it and (for its admins
    and the helpdesk) page ``trail_page`` of its audit trail, newest first."""
    with ctx.tx() as session:
        project = projects.authorize(session, actor, identifier, Action.PROJECT_READ)
        subject = projects.subject_for(session, project, actor)
        try:
            landing: str | None = projects.placement(project, Purpose.LANDING).tier.value
        except NoPlacement:  # a sensitive project lands nothing on the ordinary tiers
            landing = None
        kind = ProjectKind.of(project.sensitive)
        series = tuple(
            _series(session, project.id, quota, quota.tier == landing)
            for quota in session.execute(
                select(Quota).where(Quota.project_id == project.id).order_by(Quota.tier)
            ).scalars()
            if _placed_on(kind, quota.tier)  # a sensitive project has no area to chart
        )
        trail = None
        if allowed(subject, Action.PROJECT_AUDIT):
            page = max(1, trail_page)
            events = project_events(session, project, offset=(page - 1) * TRAIL_PAGE, limit=TRAIL_PAGE + 1)
            trail = TrailPage(events=tuple(events[:TRAIL_PAGE]), page=page, has_more=len(events) > TRAIL_PAGE)
        return ProjectHistory(
            series=series, notifications=_notifications(session, actor, project.identifier), trail=trail
        )


def _placed_on(kind: ProjectKind, tier: str) -> bool:
    try:
        placement_on(kind, tier)
    except NoPlacement:
        return False
    return True


def _day(value: Any) -> date:
    """A grouped day as the database returns it (a date, or SQLite's ``YYYY-MM-DD`` text)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _series(session: Session, project_id: str, quota: Quota, landing: bool) -> TierSeries:
    changes: dict[date, int] = {}
    if landing:
        stored = func.date(StoredFile.created_at)
        freed = func.date(Replica.updated_at)
        queries: list[tuple[Any, int]] = [
            (
                select(stored, func.sum(StoredFile.size))
                .where(StoredFile.project_id == project_id)
                .group_by(stored),
                1,
            ),
            (
                select(freed, func.sum(StoredFile.size))
                .join(StoredFile, StoredFile.id == Replica.file_id)
                .where(
                    StoredFile.project_id == project_id,
                    Replica.tier == quota.tier,
                    Replica.state == ReplicaState.FREED,
                )
                .group_by(freed),
                -1,
            ),
        ]
        basis = "bytes delivered, less bytes freed from the area, by day"
    else:
        verified = func.date(func.coalesce(Replica.verified_at, Replica.updated_at))
        queries = [
            (
                select(verified, func.sum(StoredFile.size))
                .join(StoredFile, StoredFile.id == Replica.file_id)
                .where(
                    StoredFile.project_id == project_id,
                    Replica.tier == quota.tier,
                    Replica.state.in_(HELD),
                )
                .group_by(verified),
                1,
            )
        ]
        basis = "bytes of the copies held there, by the day each was last verified"
    for query, sign in queries:
        for day, size in session.execute(query).all():
            if day is not None:
                changes[_day(day)] = changes.get(_day(day), 0) + sign * int(size or 0)
    points: list[UsePoint] = []
    total = 0
    for day in sorted(changes):
        total += changes[day]
        points.append(UsePoint(day, max(total, 0)))
    today = utcnow().date()
    if points and points[-1].day == today:
        points.pop()
    points.append(UsePoint(today, quota.used_bytes))
    return TierSeries(
        tier=quota.tier,
        words=tier_words(quota.tier),
        limit_bytes=quota.limit_bytes,
        points=tuple(points),
        basis=basis,
    )


def _notifications(session: Session, actor: User, identifier: str) -> tuple[NotificationView, ...]:
    named = re.compile(rf"(?<![\w-]){re.escape(identifier)}(?![\w])")
    found = session.execute(
        select(Notification)
        .where(Notification.user_id == actor.id, Notification.subject.contains(identifier, autoescape=True))
        .order_by(Notification.created_at.desc())
        .limit(NOTES * 2)
    ).scalars()
    return tuple(notification_view(n) for n in found if named.search(n.subject))[:NOTES]
