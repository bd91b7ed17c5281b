"""Claiming the copy engine's work (:mod:`levere.dataplane.replication` records it): a batch of
replicas leased to one worker in one short transaction, with the quota their copies need.

See :mod:`levere.dataplane.replication` for the leases and the quota rules. What each copy must
hash to comes from :func:`levere.dataplane.copying.expected_copy`: a secure-zone file's copies are
its stored Crypt4GH body, so they are claimed, counted and reserved by the body's size.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Select

from levere.dataplane.batch_copy import NO_SYNC, Item, Scope
from levere.dataplane.copying import expected_copy
from levere.db.models import Delivery, JobRun, Replica, StoredFile, utcnow
from levere.domain.deliveries import DeliveryState
from levere.domain.errors import QuotaExceeded
from levere.domain.replicas import ReplicaState, replica_sources
from levere.domain.tiers import tier_words
from levere.domain.units import count
from levere.services import quotas

BATCH_FILES = 2048
BATCH_BYTES = 2 * 1024**3
#: the bytes a file's copies hold: its stored Crypt4GH body for a secure-zone file
STORED_SIZE = func.coalesce(StoredFile.body_size, StoredFile.size)


def _claimable(now: datetime, since: datetime) -> Any:
    # the IN lets the (tier, state) index find the few candidate rows among many present ones;
    # it is every state that may become "copying": pending, failed, and copying under a dead lease
    return and_(
        Replica.state.in_(replica_sources(ReplicaState.COPYING)),
        or_(
            Replica.state == ReplicaState.PENDING,
            and_(Replica.state == ReplicaState.FAILED, Replica.updated_at < since),
            and_(Replica.state == ReplicaState.COPYING, Replica.lease_expires_at < now),
        ),
    )


def has_source(scope: Scope) -> Any:
    src = aliased(Replica)
    return exists().where(
        src.file_id == Replica.file_id, src.tier == scope.source, src.state == ReplicaState.PRESENT
    )


def candidates(scope: Scope, now: datetime, since: datetime) -> Select[*tuple[Any, ...]]:
    query = (
        select(Replica.id, STORED_SIZE)
        .join(StoredFile, StoredFile.id == Replica.file_id)
        .join(Delivery, Delivery.id == StoredFile.delivery_id)
        .where(Replica.tier == scope.target, Delivery.state == DeliveryState.SEALED, _claimable(now, since))
        .where(has_source(scope))
    )
    return scope.files(query)


def _item_columns(scope: Scope) -> tuple[Any, ...]:
    src = aliased(Replica)
    # a correlated lookup by (file_id, tier), the unique index, so that no planner starts from
    # every replica of the source tier
    same = (src.file_id == Replica.file_id, src.tier == scope.source)
    source_key = select(src.key).where(*same).scalar_subquery()
    source_version = select(src.version_id).where(*same).scalar_subquery()
    return (
        Replica.id, Replica.key, Replica.attempts, StoredFile.id, StoredFile.delivery_id, StoredFile.path,
        StoredFile.size, StoredFile.md5, StoredFile.sha256, Delivery.name, source_key, Replica.state,
        source_version, StoredFile.body_size, StoredFile.body_sha256,
    )  # fmt: skip


def claim(
    session: Session,
    scope: Scope,
    owner: str,
    backend_id: str,
    lease_seconds: float,
    since: datetime,
    *,
    limit_files: int = BATCH_FILES,
    limit_bytes: int = BATCH_BYTES,
) -> list[Item]:
    """Lease the next batch of this scope's work to ``owner``; see the module notes."""
    now = utcnow()
    # no ORDER BY: sorting every remaining row on each claim costs more than it gives; the batch
    # is put in path order below, for the disks' sake. The candidates carry everything the copy
    # needs, so the rows claimed need no second query.
    query = candidates(scope, now, since).with_only_columns(*_item_columns(scope))
    if session.get_bind().dialect.name == "postgresql":
        # other workers' locked rows are theirs: skip them instead of queueing behind them
        query = query.with_for_update(of=Replica, skip_locked=True)
    found: dict[str, Item] = {}
    leased_before: list[str] = []
    total = 0
    for (
        rid,
        key,
        attempts,
        fid,
        did,
        path,
        size,
        md5,
        sha256,
        name,
        source_key,
        state,
        version,
        body_size,
        body_sha256,
    ) in session.execute(query.limit(limit_files)):
        expected = expected_copy(size, md5, sha256, body_size, body_sha256)
        if found and total + expected.size > limit_bytes:
            break
        total += expected.size
        if state == ReplicaState.COPYING:
            leased_before.append(rid)
        found[rid] = Item(
            replica_id=rid, file_id=fid, delivery_id=did, label=f"{name}/{path}", key=key,
            source_key=source_key, expected=expected, attempts=attempts + 1,
            source_version=version,
        )  # fmt: skip
    if not found:
        return []
    ids = list(found)
    # the copy goes to the tier's backend as configured now (it may have changed since sealing)
    lease = {
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "backend_id": backend_id,
        "version_id": None,
    }
    claimed: set[str] = set()
    if leased_before:
        # taking over a dead worker's rows: their reservation is already held
        taken = session.execute(
            update(Replica)
            .where(
                Replica.id.in_(leased_before),
                Replica.state.in_(replica_sources(ReplicaState.COPYING, ReplicaState.COPYING)),
                Replica.lease_expires_at < now,
            )
            .values(**lease, attempts=Replica.attempts + 1, updated_at=now)
            .returning(Replica.id),
            execution_options=NO_SYNC,
        ).scalars()
        claimed.update(taken)
    before = set(leased_before)
    waiting = [i for i in ids if i not in before]
    fresh = list(
        session.execute(
            update(Replica)
            .where(
                Replica.id.in_(waiting),
                or_(
                    Replica.state == ReplicaState.PENDING,
                    and_(Replica.state == ReplicaState.FAILED, Replica.updated_at < since),
                ),
            )
            .values(
                **lease, state=ReplicaState.COPYING, reason="", attempts=Replica.attempts + 1, updated_at=now
            )
            .returning(Replica.id),
            execution_options=NO_SYNC,
        ).scalars()
    )
    claimed.update(fresh)
    refused = _reserve(session, scope, [found[i] for i in fresh])
    if refused:
        for message, group in grouped(refused).items():
            fail(session, owner, group, message, now)
        progress(session, scope.run_id, failed=len(refused))
    claimed -= {r.replica_id for r, _ in refused}
    return sorted((found[i] for i in ids if i in claimed), key=lambda i: i.label)


def _reserve(session: Session, scope: Scope, fresh: list[Item]) -> list[tuple[Item, str]]:
    """Reserve quota for newly claimed replicas; returns those that do not fit, with the reason."""
    if not fresh:
        return []
    try:
        quotas.reserve(
            session, scope.project_id, scope.target, sum(i.size for i in fresh),
            what=f"copying {count(len(fresh), 'file')} to {tier_words(scope.target)}",
        )  # fmt: skip
        return []
    except QuotaExceeded:
        pass  # not all of them: reserve one by one, so that what fits still goes
    refused = []
    for item in fresh:
        try:
            quotas.reserve(
                session, scope.project_id, scope.target, item.size,
                what=f"copying {item.label} to {tier_words(scope.target)}",
            )  # fmt: skip
        except QuotaExceeded as exc:
            refused.append((item, exc.message))
    return refused


def grouped(pairs: list[tuple[Item, str]]) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = defaultdict(list)
    for item, message in pairs:
        groups[message].append(item)
    return groups


def fail(session: Session, owner: str, items: list[Item], reason: str, now: datetime) -> list[str]:
    return list(
        session.execute(
            update(Replica)
            .where(
                Replica.id.in_([i.replica_id for i in items]),
                Replica.lease_owner == owner,
                Replica.state.in_(replica_sources(ReplicaState.FAILED, ReplicaState.COPYING)),
            )
            .values(state=ReplicaState.FAILED, reason=reason, lease_expires_at=None, updated_at=now)
            .returning(Replica.id),
            execution_options=NO_SYNC,
        ).scalars()
    )


def progress(session: Session, run_id: str, files: int = 0, nbytes: int = 0, failed: int = 0) -> None:
    session.execute(
        update(JobRun)
        .where(JobRun.id == run_id)
        .values(
            files_done=JobRun.files_done + files,
            bytes_done=JobRun.bytes_done + nbytes,
            files_failed=JobRun.files_failed + failed,
            updated_at=utcnow(),
        ),
        execution_options=NO_SYNC,
    )
