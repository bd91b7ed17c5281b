"""Reading delivered files: find an intact copy to stream from, for people allowed to read the project.

Design notes
------------
Copies are tried in the order the project's placement gives (the working area, then long-term storage), and only those
recorded as ``present`` (on a store that keeps versions, the version levere wrote). Before one is used it is looked at: a copy that is gone or has the wrong
size is recorded as damaged at once (as ``levere verify`` would, audited, so that sync or verify
repairs it) and the next copy is tried. A whole-file read is also checked while it streams: its
last piece is held back until the SHA-256 of everything read equals the manifest's, and a copy that
differs is recorded as damaged and the response broken off, so the client never completes the file
from it; its retry is served from the next copy. Ranges are not checked here (that would mean
reading the whole file for each); the client checks the file it assembles, and starts again from
the first byte when it does not match, which is then a checked whole-file read.

A store that cannot be reached is never taken for damage: its copy is skipped and, if no copy is
left, the answer is "try again" (503) rather than "damaged everywhere" (409, :class:`NoIntactCopy`).
Ranges and checksums in HTTP headers are the API's concern.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import select, update

from levere.context import Context
from levere.db.models import Delivery, Replica, StoredFile, User, utcnow
from levere.domain.errors import NoIntactCopy, NotFound, StorageUnavailable
from levere.domain.paths import check_name, check_relative_path
from levere.domain.replicas import UNDER_WAY, ReplicaState, replica_sources
from levere.domain.roles import Action
from levere.domain.tiers import Purpose, Tier, tier_words
from levere.services import audit
from levere.services.projects import authorize, placement
from levere.storage import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readable:
    path: str  # DELIVERY/PATH
    size: int
    md5: str
    sha256: str
    tier: str
    backend: Backend
    key: str
    #: records this copy as damaged, with the reason
    damaged: Callable[[str], None]
    #: the version levere wrote, on a store that keeps versions
    version: str | None = None

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if start == 0 and (end is None or end >= self.size):
            return self._checked()
        return self.backend.read(self.key, start, end, version=self.version)

    def _checked(self) -> Iterator[bytes]:
        """The whole file, its last piece sent only once everything read matches the manifest."""
        digest = hashlib.sha256()
        held = b""
        count = 0
        for piece in self.backend.read(self.key, version=self.version):
            if held:
                yield held
            digest.update(piece)
            count += len(piece)
            held = piece
        if count != self.size or digest.hexdigest() != self.sha256:
            reason = f"read back {count} bytes with SHA-256 {digest.hexdigest()}, not the manifest's"
            self.damaged(reason)
            log.warning("%s on %s: %s; the download was broken off", self.path, self.tier, reason)
            raise NoIntactCopy(f"{self.path} on {tier_words(self.tier)} is damaged ({reason})")
        if held:
            yield held


@dataclass(frozen=True)
class _Copy:
    tier: str
    state: str
    reason: str
    backend_id: str
    key: str
    version: str | None


def open_file(ctx: Context, actor: User, identifier: str, delivery: str, path: str) -> Readable:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DATA_READ)
        delivery = check_name(delivery, "delivery name")
        path = check_relative_path(path)
        row = session.execute(
            select(StoredFile)
            .join(Delivery, Delivery.id == StoredFile.delivery_id)
            .where(Delivery.project_id == project.id, Delivery.name == delivery, StoredFile.path == path)
        ).scalar()
        if row is None:
            raise NotFound(f"no file {delivery}/{path} in {project.identifier}")
        # the copies a reader may use, in the placement's order of preference
        reads = placement(project, Purpose.LANDING).reads
        file_id, size, md5, sha256 = row.id, row.size, row.md5, row.sha256
        copies = {
            r.tier: _Copy(r.tier, r.state, r.reason, r.backend_id, r.key, r.version_id)
            for r in session.execute(select(Replica).where(Replica.file_id == file_id)).scalars()
        }
    label = f"{delivery}/{path}"
    unreachable: list[str] = []
    for tier in reads:
        copy = copies.get(tier)
        if copy is None or copy.state != ReplicaState.PRESENT:
            continue
        backend = ctx.backend(tier)
        if backend.backend_id != copy.backend_id:
            unreachable.append(
                f"{tier_words(tier)} is on storage {copy.backend_id!r}, which this server does not use"
            )
            continue
        try:
            info = backend.stat(copy.key, version=copy.version)
        except (StorageUnavailable, OSError) as exc:
            unreachable.append(f"{tier_words(tier)} cannot be reached ({exc})")
            continue
        damage = "missing" if info is None else None
        if info is not None and info.size != size:
            damage = f"{info.size} bytes instead of {size}"
        if damage is None:

            def damaged(reason: str, tier: str = tier) -> None:
                _record_damage(ctx, file_id, tier, label, reason)

            return Readable(label, size, md5, sha256, tier, backend, copy.key, damaged, copy.version)
        _record_damage(ctx, file_id, tier, label, damage)
        copies[tier] = _Copy(tier, ReplicaState.DAMAGED, damage, copy.backend_id, copy.key, copy.version)
    under_way = [c for c in copies.values() if c.state in UNDER_WAY]  # worth waiting for
    if unreachable or under_way:
        why = "; ".join(unreachable) or "a copy is being made (a sync, restore or repair)"
        raise StorageUnavailable(
            f"{label} has no readable copy right now: {why}; try again later", path=label
        )
    ordered = sorted(copies.values(), key=lambda c: _order(reads, c))
    held = "; ".join(f"{tier_words(c.tier)}: {_state_words(c)}" for c in ordered)
    raise NoIntactCopy(
        f"{label} has no intact copy on any tier ({held or 'no copy was ever stored'}); nothing was sent. "
        "The helpdesk can see it with 'levere status' and may have to deliver it again",
        path=label,
    )


def _order(reads: tuple[Tier, ...], copy: _Copy) -> int:
    return reads.index(Tier(copy.tier)) if copy.tier in reads else len(reads)


def _state_words(copy: _Copy) -> str:
    if copy.state == ReplicaState.DAMAGED:
        return f"damaged ({copy.reason})" if copy.reason else "damaged"
    if copy.state == ReplicaState.FAILED:
        return f"never copied ({copy.reason})" if copy.reason else "never copied"
    return copy.state


def _record_damage(ctx: Context, file_id: str, tier: str, label: str, reason: str) -> None:
    """Record a present copy as damaged (in its own transaction: the read that found it is not one)."""
    with ctx.tx() as session:
        changed = session.execute(
            update(Replica)
            .where(
                Replica.file_id == file_id,
                Replica.tier == tier,
                Replica.state.in_(replica_sources(ReplicaState.DAMAGED, ReplicaState.PRESENT)),
            )
            .values(state=ReplicaState.DAMAGED, reason=reason, updated_at=utcnow())
            .returning(Replica.id)
        ).scalar()
        if changed:
            audit.record(
                session, None, "replica.damaged", "file", file_id,
                after={"path": label, "tier": tier, "reason": reason, "found_by": "download"},
            )  # fmt: skip
