"""The audit log as people read it: each event names its object by the identifier people know
(a project's ``LEV-2026-0001``, ``application 3``, an e-mail, ``LEV-2026-0001/RUN42``), never by
the internal id it is stored under.

Labels are looked up per object kind in one query each, so a page of events costs a handful of
queries whatever its length. An object that no longer exists keeps its kind and a short id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import (
    ApiToken,
    Application,
    AuditEvent,
    Delivery,
    Facility,
    Invitation,
    JobRun,
    Project,
    StoredFile,
    User,
)
from levere.domain.roles import Action, require
from levere.services.accounts import subject_of

MAX_EVENTS = 1000


@dataclass(frozen=True)
class AuditEventView:
    seq: int
    at: datetime
    actor_email: str
    action: str
    object_type: str
    object_id: str
    #: the object as people name it, e.g. "LEV-2026-0001" or "application 3"
    object_label: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


#: per object kind: a query of (id, parts...) for a set of ids, and how the parts read
_LABELS: dict[str, tuple[Callable[[set[str]], Any], Callable[..., str]]] = {
    "project": (
        lambda ids: select(Project.id, Project.identifier).where(Project.id.in_(ids)),
        lambda identifier: identifier,
    ),
    "application": (
        lambda ids: select(Application.id, Application.number).where(Application.id.in_(ids)),
        lambda number: f"application {number}",
    ),
    "user": (lambda ids: select(User.id, User.email).where(User.id.in_(ids)), lambda email: email),
    "facility": (
        lambda ids: select(Facility.id, Facility.name).where(Facility.id.in_(ids)),
        lambda name: name,
    ),
    "invitation": (
        lambda ids: select(Invitation.id, Invitation.email).where(Invitation.id.in_(ids)),
        lambda email: f"invitation of {email}",
    ),
    "token": (
        lambda ids: (
            select(ApiToken.id, ApiToken.name, User.email)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id.in_(ids))
        ),
        lambda name, email: f"token {name} of {email}",
    ),
    "delivery": (
        lambda ids: (
            select(Delivery.id, Project.identifier, Delivery.name)
            .join(Project, Project.id == Delivery.project_id)
            .where(Delivery.id.in_(ids))
        ),
        lambda identifier, name: f"{identifier}/{name}",
    ),
    "file": (
        lambda ids: (
            select(StoredFile.id, Project.identifier, Delivery.name, StoredFile.path)
            .join(Delivery, Delivery.id == StoredFile.delivery_id)
            .join(Project, Project.id == StoredFile.project_id)
            .where(StoredFile.id.in_(ids))
        ),
        lambda identifier, name, path: f"{identifier}/{name}/{path}",
    ),
    "job": (
        lambda ids: select(JobRun.id, JobRun.kind, JobRun.id).where(JobRun.id.in_(ids)),
        lambda kind, job_id: f"{kind} job {job_id}",  # the id people give to `levere jobs show`
    ),
}


def _object_id(session: Session, reference: str) -> list[str]:
    """Internal ids of the object people name ``reference`` (an identifier, a number, an e-mail,
    a facility name), or the reference itself when it is an internal id."""
    ids = [reference]
    for query in (
        select(Project.id).where(Project.identifier == reference.upper()),
        select(User.id).where(User.email == reference.lower()),
        select(Facility.id).where(Facility.name == reference.lower()),
    ):
        ids += session.execute(query).scalars()
    if reference.isdigit():
        ids += session.execute(select(Application.id).where(Application.number == int(reference))).scalars()
    return ids


def list_events(
    ctx: Context, actor: User, *, about: str | None = None, limit: int = 100
) -> list[AuditEventView]:
    """The newest events first, ``about`` one object (named as people name it, or by id)."""
    require(subject_of(actor), Action.AUDIT_READ)
    with ctx.tx() as session:
        return _events(session, about, limit)


def _events(session: Session, about: str | None, limit: int) -> list[AuditEventView]:
    query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(min(max(limit, 1), MAX_EVENTS))
    if about:
        query = query.where(AuditEvent.object_id.in_(_object_id(session, about.strip())))
    return labelled(session, list(session.execute(query).scalars()))


def project_events(session: Session, project: Project, *, offset: int, limit: int) -> list[AuditEventView]:
    """A page of one project's trail, newest first: events about the project, its application, its
    deliveries, its files and its jobs (the caller checks who may read it). The objects are matched
    by subqueries, so a project of many files costs no more queries."""
    mine = (
        ((AuditEvent.object_type == "project") & (AuditEvent.object_id == project.id))
        | (
            (AuditEvent.object_type == "application")
            & AuditEvent.object_id.in_(select(Application.id).where(Application.project_id == project.id))
        )
        | (
            (AuditEvent.object_type == "delivery")
            & AuditEvent.object_id.in_(select(Delivery.id).where(Delivery.project_id == project.id))
        )
        | (
            (AuditEvent.object_type == "file")
            & AuditEvent.object_id.in_(select(StoredFile.id).where(StoredFile.project_id == project.id))
        )
        | (
            (AuditEvent.object_type == "job")
            & AuditEvent.object_id.in_(select(JobRun.id).where(JobRun.project_id == project.id))
        )
    )
    query = (
        select(AuditEvent)
        .where(mine)
        .order_by(AuditEvent.seq.desc())
        .offset(max(offset, 0))
        .limit(min(max(limit, 1), MAX_EVENTS))
    )
    return labelled(session, list(session.execute(query).scalars()))


def labelled(session: Session, events: list[AuditEvent]) -> list[AuditEventView]:
    """Views of ``events``, each object named as people name it (one query per object kind)."""
    labels: dict[tuple[str, str], str] = {}
    for kind in {e.object_type for e in events} & _LABELS.keys():
        rows_of, label = _LABELS[kind]
        ids = {e.object_id for e in events if e.object_type == kind}
        labels.update(((kind, str(row[0])), label(*row[1:])) for row in session.execute(rows_of(ids)).all())
    return [
        AuditEventView(
            seq=e.seq,
            at=e.at,
            actor_email=e.actor_email,
            action=e.action,
            object_type=e.object_type,
            object_id=e.object_id,
            object_label=labels.get((e.object_type, e.object_id), f"{e.object_type} {e.object_id[:8]}"),
            before=e.before,
            after=e.after,
        )
        for e in events
    ]
