"""The append-only, hash-chained audit log.

Design notes
------------
Each event's hash is SHA-256 over the previous event's hash and a canonical JSON of the event's own
fields, so changing, removing or reordering any event breaks every hash after it. Appends are
serialised by locking the ``audit`` counter row, so two transactions can never both chain onto the
same predecessor.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.db.bulk import insert_rows
from levere.db.models import AuditEvent, Counter, User, audit_table, utcnow
from levere.services.counters import next_value, take

GENESIS = "0" * 64
#: the fields an event's hash covers
_HASHED = ("seq", "at", "actor_id", "actor_email", "action", "object_type", "object_id", "before", "after")


def _canonical(event: AuditEvent) -> bytes:
    return _canonical_body({name: getattr(event, name) for name in _HASHED})


def _canonical_body(body: dict[str, Any]) -> bytes:
    body = body | {"at": body["at"].isoformat(timespec="microseconds")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def _digest(prev_hash: str, event: AuditEvent) -> str:
    return _digest_body(prev_hash, _canonical(event))


def _digest_body(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical).hexdigest()


def record(
    session: Session,
    actor: User | None,
    action: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    seq = next_value(session, "audit")  # locks the chain until this transaction ends
    last = session.execute(select(AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)).scalar()
    event = AuditEvent(
        seq=seq,
        at=utcnow(),
        actor_id=actor.id if actor else None,
        actor_email=actor.email if actor else "system",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        before=_jsonable(before),
        after=_jsonable(after),
        prev_hash=last or GENESIS,
    )
    event.hash = _digest(event.prev_hash, event)
    session.add(event)
    session.flush()
    return event


#: one event of :func:`record_many`: action, object type, object id, before, after
Change = tuple[str, str, str, dict[str, Any] | None, dict[str, Any] | None]


def record_many(session: Session, actor: User | None, changes: list[Change]) -> None:
    """Append ``changes`` in order, as :func:`record` would one by one, with one counter update and
    one insert (provisioning a project with many members records three events per member)."""
    if not changes:
        return
    first = take(session, "audit", len(changes))  # locks the chain until this transaction ends
    prev = session.execute(select(AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)).scalar()
    prev = prev or GENESIS
    at = utcnow()
    actor_id, actor_email = (actor.id, actor.email) if actor else (None, "system")
    rows = []
    for seq, (action, object_type, object_id, before, after) in enumerate(changes, first):
        body = {
            "seq": seq, "at": at, "actor_id": actor_id, "actor_email": actor_email, "action": action,
            "object_type": object_type, "object_id": str(object_id), "before": _jsonable(before),
            "after": _jsonable(after),
        }  # fmt: skip
        digest = _digest_body(prev, _canonical_body(body))
        rows.append((*body.values(), prev, digest))
        prev = digest
    insert_rows(session, audit_table, (*_HASHED, "prev_hash", "hash"), rows)


def _jsonable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return json.loads(json.dumps(value, default=_plain))  # type: ignore[no-any-return]


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class ChainReport:
    events: int
    ok: bool
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(session: Session) -> ChainReport:
    prev = GENESIS
    count = 0
    expected_seq = 1
    for event in session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars():
        count += 1
        if event.seq != expected_seq:
            return ChainReport(count, False, event.seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev:
            return ChainReport(
                count, False, event.seq, f"event {event.seq} does not follow event {event.seq - 1}"
            )
        if _digest(prev, event) != event.hash:
            return ChainReport(count, False, event.seq, f"event {event.seq} was altered after it was written")
        prev = event.hash
        expected_seq += 1
    # the counter remembers how many events were written, so removing the newest ones shows too
    written = session.execute(select(Counter.value).where(Counter.name == "audit")).scalar() or 0
    if written != count:
        return ChainReport(
            count, False, count + 1, f"{written - count} event(s) after event {count} were removed"
        )
    return ChainReport(count, True)
