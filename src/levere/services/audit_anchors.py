"""Anchors of the audit chain outside the database.

Design notes
------------
The hash chain (:mod:`levere.services.audit`) shows any change in the middle of the log, but its
newest end is only remembered by the database itself: someone who can write the database can drop
the newest events and lower the counter, and the shorter chain is still a valid chain. An *anchor*
is the head of the chain (its sequence number, hash and time) written write-once, through the
storage :class:`~levere.storage.Backend` interface, to the long-term tier and to an optional second
place (``[audit] anchor_sink``). :func:`check_anchors` then demands that the chain still holds the
anchored event with the anchored hash; since each hash covers every event before it, that proves
the whole anchored history is intact.

* Anchors are named by sequence number (``audit-anchors/<seq>.json``, zero-padded so that listing
  order is numeric order); the newest is the one with the highest number. Delivered data lives
  under project identifiers (``LEV-...``), so the names never meet.
* Writing an anchor for a head that is already anchored is a no-op. If an anchor for that number
  exists with another hash, the chain was rewritten since: that is reported, never overwritten.
* Anchoring is not itself an audit event: an event about it would move the head it just recorded.
* The periodic job runs every minute and writes an anchor when the interval has passed since the
  last one and the chain has grown. When that was is kept in a counter row; tampering with it
  only changes when the next anchor is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import AuditEvent, Counter, User, utcnow
from levere.domain.errors import AlreadyExists, Conflict, NotFound
from levere.domain.roles import Action, require
from levere.domain.tiers import Purpose, tiers_for
from levere.services.accounts import subject_of
from levere.services.audit import ChainReport, verify_chain
from levere.storage import Backend

PREFIX = "audit-anchors/"
#: counter row holding when the last anchor was written (Unix seconds), for the periodic job
_LAST_ANCHOR = "audit_anchor_written_at"
#: anchors are a few hundred bytes; anything much bigger is not one of levere's
_MAX_ANCHOR_BYTES = 64 * 1024


@dataclass(frozen=True)
class Anchor:
    """The head of the chain as it was written to one place."""

    seq: int
    hash: str
    at: datetime
    written_at: datetime
    #: backend id of the place it was read from or written to
    where: str

    def encode(self) -> bytes:
        body = {
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at.isoformat(timespec="microseconds"),
            "written_at": self.written_at.isoformat(timespec="microseconds"),
        }
        return json.dumps(body, sort_keys=True).encode() + b"\n"


@dataclass(frozen=True)
class AnchorCheck:
    """What the anchors say about the chain: ``problem`` is empty when it holds them all."""

    anchors: list[Anchor]
    problem: str = ""
    first_bad_seq: int | None = None


def key_for(seq: int) -> str:
    return f"{PREFIX}{seq:020d}.json"


def places(ctx: Context) -> list[Backend]:
    """Where anchors go: the tiers that keep long-term copies (write-once), then the configured
    sink if any."""
    found = [ctx.backend(tier) for tier in tiers_for(Purpose.LONGTERM)]
    sink = ctx.anchor_sink()
    if sink is not None:
        found.append(sink)
    return found


def _head(session: Session) -> AuditEvent | None:
    return session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).scalar()


def _decode(data: bytes, where: str, key: str) -> Anchor:
    try:
        body = json.loads(data)
        seq, digest = int(body["seq"]), str(body["hash"])
        at, written = datetime.fromisoformat(body["at"]), datetime.fromisoformat(body["written_at"])
    except (ValueError, KeyError, TypeError):
        raise Conflict(f"anchor {key} on the {where} storage is not a readable anchor") from None
    if key != key_for(seq) or len(digest) != 64:
        raise Conflict(f"anchor {key} on the {where} storage does not match its name")
    return Anchor(seq, digest, at, written, where)


def _read(backend: Backend, key: str) -> Anchor:
    data = bytearray()
    for chunk in backend.read(key):
        data += chunk
        if len(data) > _MAX_ANCHOR_BYTES:
            raise Conflict(f"anchor {key} on the {backend.backend_id} storage is too large to be one")
    return _decode(bytes(data), backend.backend_id, key)


def latest(backend: Backend) -> Anchor | None:
    """The newest anchor stored on ``backend``, or None if it holds none."""
    newest = None
    for info in backend.list(PREFIX):
        if info.key.startswith(PREFIX) and info.key.endswith(".json"):
            newest = info.key  # listing is in key order, and keys are zero-padded numbers
    return None if newest is None else _read(backend, newest)


def _write(backend: Backend, anchor: Anchor) -> Anchor:
    """Store ``anchor`` write-once; an anchor already there for the same event is kept."""
    key = key_for(anchor.seq)
    data = anchor.encode()
    try:
        with backend.open_writer(key, size_hint=len(data), write_once=True) as writer:
            writer.write(data)
            writer.commit()
    except AlreadyExists:
        existing = _read(backend, key)
        if existing.hash != anchor.hash:
            raise Conflict(
                f"the {backend.backend_id} storage already holds an anchor for audit event {anchor.seq} "
                "with another hash: the audit log was rewritten after it was anchored",
                seq=anchor.seq,
            ) from None
        return existing
    return Anchor(anchor.seq, anchor.hash, anchor.at, anchor.written_at, backend.backend_id)


def anchor_now(ctx: Context, actor: User) -> list[Anchor]:
    """Anchor the head of the chain now (helpdesk, ``levere audit anchor``)."""
    require(subject_of(actor), Action.AUDIT_ANCHOR)
    return write_anchor(ctx)


def verify_log(ctx: Context, actor: User) -> tuple[ChainReport, list[Anchor]]:
    """The chain's own links, then the newest anchors: what ``levere audit verify`` shows."""
    require(subject_of(actor), Action.AUDIT_READ)
    found = newest_anchors(ctx)  # read before the transaction: no storage round trip holds it open
    with ctx.tx() as session:
        report = verify_chain(session)
        checked = check_anchors(session, found)
    if report.ok and checked.problem:
        report = ChainReport(report.events, False, checked.first_bad_seq, checked.problem)
    return report, checked.anchors


def write_anchor(ctx: Context) -> list[Anchor]:
    """Write the head of the chain to every anchor place; returns what each holds now.
    An empty chain has nothing to anchor (empty list)."""
    with ctx.tx() as session:
        head = _head(session)
        if head is None:
            return []
        anchor = Anchor(head.seq, head.hash, head.at, utcnow(), "")
    written = [_write(backend, anchor) for backend in places(ctx)]
    with ctx.tx() as session:
        row = session.get(Counter, _LAST_ANCHOR)
        if row is None:
            session.add(Counter(name=_LAST_ANCHOR, value=int(time.time())))
        else:
            row.value = int(time.time())
    return written


def anchor_if_due(ctx: Context) -> list[Anchor]:
    """The periodic job: anchor the head when the interval has passed and the chain has grown
    past the newest anchor in some anchor place (one that was unreachable last time catches up)."""
    interval = ctx.settings.audit.anchor_interval_minutes * 60
    with ctx.tx() as session:
        last = session.get(Counter, _LAST_ANCHOR)
        if last is not None and time.time() - last.value < interval:
            return []
        head = _head(session)
        head_seq = head.seq if head is not None else 0
    if head_seq == 0:
        return []
    behind = [b for b in places(ctx) if (newest := latest(b)) is None or newest.seq < head_seq]
    return write_anchor(ctx) if behind else []


def newest_anchors(ctx: Context) -> AnchorCheck:
    """The newest anchor in every anchor place (``problem``: one that is not a readable anchor).
    ``StorageUnavailable`` propagates: an unreadable anchor place is not evidence either way."""
    anchors: list[Anchor] = []
    for backend in places(ctx):
        try:
            found = latest(backend)
        except NotFound:
            found = None  # removed between listing and reading: as if absent
        except Conflict as exc:  # something under the anchors' name that is not one
            return AnchorCheck(anchors, exc.message)
        if found is not None:
            anchors.append(found)
    return AnchorCheck(anchors)


def check_anchors(session: Session, found: AnchorCheck) -> AnchorCheck:
    """Compare the chain in the database with the anchors :func:`newest_anchors` found.

    The chain's own links are checked by :func:`levere.services.audit.verify_chain`; this only
    asks whether the anchored events are still there, unchanged.
    """
    anchors = found.anchors
    if found.problem:
        return found
    for anchor in sorted(anchors, key=lambda a: -a.seq):
        event = session.get(AuditEvent, anchor.seq)
        when = f"anchored on the {anchor.where} storage at {anchor.written_at:%Y-%m-%d %H:%M:%S} UTC"
        if event is None:
            count = session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1)).scalar()
            have = f"the log ends at event {count}" if count else "the log is empty"
            return AnchorCheck(
                anchors,
                f"event {anchor.seq} ({when}) is missing: {have}, so anchored events were removed",
                first_bad_seq=(count or 0) + 1,
            )
        if event.hash != anchor.hash:
            return AnchorCheck(
                anchors,
                f"event {anchor.seq} differs from the one {when}: anchored history was rewritten",
                first_bad_seq=anchor.seq,
            )
    return AnchorCheck(anchors)
