"""Scrubbing (``levere verify``): re-read every stored copy, compare it with the manifest, and
repair damage from an intact copy on another tier.

Design notes
------------
* Each replica that should hold bytes ("present", or "damaged" from an earlier run) on every tier the
  placement policy keeps data on is read back once and its size and SHA-256 compared with the manifest (the
  stronger of its two checksums: bytes that match it match the MD5 too). An unreachable store
  is reported as unreadable, never as damage: only bytes that were read and differ, or an
  object that is gone, are damage.
* Damage is recorded at once (replica "damaged" with the reason, audited), then repaired from an
  intact copy under a lease ("repairing"), so two verifies never repair one file at once, and the
  new copy is checked against the manifest while it is written.
* Long-term copies are write-once and levere refuses to overwrite them; repair is the one
  exception: levere removes its own damaged copy with ``force`` and writes it again (on a
  versioned bucket the damaged version stays under its retention, hidden, and the new version's
  id is recorded).
* On a store that keeps versions each copy is read as the version levere wrote, so a newer
  version or a delete marker that someone else put on the key is not damage to levere's copy.
* Quota does not change: the repaired copy has the size the damaged one was counted with.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.dataplane import (
    NO_SYNC,
    REPORT_ITEMS,
    Expected,
    RateLimiter,
    check_stored,
    copy_verified,
    expected_copy,
    leased,
    new_owner,
)
from levere.db.models import Delivery, JobRun, Project, Replica, StoredFile, User, utcnow
from levere.domain.errors import ChecksumMismatch, LevereError, NoPlacement, StorageUnavailable
from levere.domain.jobruns import FINISHED, JobKind, JobRunState, job_run_transition
from levere.domain.replicas import CHECKED, ReplicaState, replica_sources
from levere.domain.roles import Action, require
from levere.domain.tiers import (
    TIER_PROPERTIES,
    ProjectKind,
    Tier,
    placed_tiers,
    placement_on,
    tier_words,
)
from levere.domain.units import format_size
from levere.services import audit, notify
from levere.services.accounts import subject_of
from levere.services.jobruns import new_run, run_view
from levere.services.projects import authorize
from levere.services.sync_notices import concerned
from levere.services.views import JobRunView

PAGE = 256


def request_verify(ctx: Context, actor: User, identifier: str | None = None) -> JobRunView:
    """Check (and repair) every stored copy of one project, or of every project (helpdesk)."""
    with ctx.tx() as session:
        project = None
        if identifier is not None:
            project = authorize(session, actor, identifier, Action.VERIFY_RUN)
        else:
            require(subject_of(actor), Action.VERIFY_RUN, "(every project)")
        run = new_run(ctx, session, JobKind.VERIFY, project, actor=actor)
        audit.record(
            session, actor, "verify.requested", "project" if project else "service",
            project.id if project else "*", after={"job": run.id},
        )  # fmt: skip
        return run_view(session, run)


@dataclass
class Row:
    replica_id: str
    file_id: str
    project_id: str
    kind: ProjectKind
    tier: Tier
    key: str
    state: str
    label: str
    expected: Expected
    reason: str
    version: str | None = None


@dataclass
class Tally:
    checked: int = 0
    ok: int = 0
    nbytes: int = 0
    damaged: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    unreadable_count: int = 0
    damaged_count: int = 0
    unrepaired_count: int = 0


def _rows(project_id: str | None) -> Any:
    query = (
        select(Replica, StoredFile, Delivery.name, Project.identifier, Project.sensitive)
        .join(StoredFile, StoredFile.id == Replica.file_id)
        .join(Delivery, Delivery.id == StoredFile.delivery_id)
        .join(Project, Project.id == StoredFile.project_id)
        .where(Replica.tier.in_(placed_tiers()), Replica.state.in_(CHECKED))
    )
    if project_id is not None:
        query = query.where(StoredFile.project_id == project_id)
    return query


def _row(replica: Replica, stored: StoredFile, delivery: str, identifier: str, sensitive: bool) -> Row:
    return Row(
        replica_id=replica.id,
        file_id=stored.id,
        project_id=stored.project_id,
        kind=ProjectKind.of(sensitive),
        tier=Tier(replica.tier),
        key=replica.key,
        state=replica.state,
        label=f"{identifier}/{delivery}/{stored.path}",
        expected=expected_copy(stored.size, stored.md5, stored.sha256, stored.body_size, stored.body_sha256),
        reason=replica.reason,
        version=replica.version_id,
    )


def _check(ctx: Context, row: Row, limiter: RateLimiter | None) -> tuple[str | None, str | None]:
    """(damage, unreadable): what is wrong with the stored bytes, or why they could not be read."""
    try:
        backend = ctx.backend(row.tier)
        return check_stored(backend, row.key, row.expected, limiter, version=row.version), None
    except StorageUnavailable as exc:
        return None, exc.message
    except OSError as exc:
        return None, str(exc)


def run_verify(ctx: Context, run_id: str) -> None:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        if run is None or run.state in FINISHED:
            return
        project_id = run.project_id
        count, size = session.execute(
            _rows(project_id).with_only_columns(func.count(), func.coalesce(func.sum(StoredFile.size), 0))
        ).one()
        run.files_total, run.bytes_total = count, int(size)
        run.state = job_run_transition(run.state, JobRunState.RUNNING, f"job {run.id}")
        run.started_at = utcnow()
    settings = ctx.settings.sync
    limiter = RateLimiter(settings.bandwidth_limit) if settings.bandwidth_limit else None
    tally = Tally()
    last = ""
    with ThreadPoolExecutor(settings.threads, thread_name_prefix="levere-verify") as pool:
        while True:
            with ctx.tx() as session:
                page = [
                    _row(*r)
                    for r in session.execute(
                        _rows(project_id).where(Replica.id > last).order_by(Replica.id).limit(PAGE)
                    ).all()
                ]
            if not page:
                break
            last = page[-1].replica_id
            results = list(pool.map(lambda r: _check(ctx, r, limiter), page))
            with ctx.tx() as session:
                _record(session, run_id, page, results, tally)
    repaired = _repair_all(ctx, project_id, tally)
    with ctx.tx() as session:
        _close(ctx, session, run_id, tally, repaired)


def _record(
    session: Session, run_id: str, page: list[Row], results: list[tuple[str | None, str | None]], tally: Tally
) -> None:
    now = utcnow()
    good = [
        row.replica_id
        for row, (damage, unread) in zip(page, results, strict=True)
        if not damage and not unread
    ]
    if good:
        # an earlier "damaged" that reads back intact (a share that was unmounted) is present again
        session.execute(
            update(Replica)
            .where(
                Replica.id.in_(good),
                Replica.state.in_(
                    replica_sources(ReplicaState.PRESENT, ReplicaState.PRESENT, ReplicaState.DAMAGED)
                ),
            )
            .values(state=ReplicaState.PRESENT, reason="", verified_at=now, updated_at=now),
            execution_options=NO_SYNC,
        )
    for row, (damage, unread) in zip(page, results, strict=True):
        tally.checked += 1
        tally.nbytes += row.expected.size
        if unread:
            tally.unreadable_count += 1
            if len(tally.unreadable) < REPORT_ITEMS:
                tally.unreadable.append({"path": row.label, "tier": row.tier, "reason": unread})
        elif damage:
            changed = session.execute(
                update(Replica)
                .where(
                    Replica.id == row.replica_id,
                    Replica.state.in_(
                        replica_sources(ReplicaState.DAMAGED, ReplicaState.PRESENT, ReplicaState.DAMAGED)
                    ),
                )
                .values(state=ReplicaState.DAMAGED, reason=damage, updated_at=now)
                .returning(Replica.id),
                execution_options=NO_SYNC,
            ).scalar()
            if changed and row.state == ReplicaState.PRESENT:
                audit.record(
                    session, None, "replica.damaged", "file", row.file_id,
                    after={"path": row.label, "tier": row.tier, "reason": damage, "job": run_id},
                )  # fmt: skip
        else:
            tally.ok += 1
    session.execute(
        update(JobRun)
        .where(JobRun.id == run_id)
        .values(
            files_done=JobRun.files_done + len(page),
            bytes_done=JobRun.bytes_done + sum(r.expected.size for r in page),
            updated_at=now,
        ),
        execution_options=NO_SYNC,
    )


def _repair_all(ctx: Context, project_id: str | None, tally: Tally) -> int:
    """Repair every damaged replica in scope (found now or by an earlier run); returns how many."""
    with ctx.tx() as session:
        now = utcnow()
        query = _rows(project_id).where(
            or_(
                Replica.state == ReplicaState.DAMAGED,
                and_(Replica.state == ReplicaState.REPAIRING, Replica.lease_expires_at < now),
            )
        )
        rows = [_row(*r) for r in session.execute(query.order_by(Project.identifier, Replica.key)).all()]
    repaired = 0
    for row in rows:
        error = _repair(ctx, row)
        repaired += error is None
        tally.damaged_count += 1
        tally.unrepaired_count += error is not None
        if len(tally.damaged) < REPORT_ITEMS:
            tally.damaged.append(
                {
                    "path": row.label,
                    "tier": row.tier,
                    "reason": row.reason.split("; ")[0],
                    "repaired": error is None,
                    "error": error or "",
                }
            )
    return repaired


def _repair(ctx: Context, row: Row) -> str | None:
    """Rewrite one damaged copy from an intact copy on a tier the placement repairs it from; None
    on success, else why not."""
    try:
        sources = placement_on(row.kind, row.tier).repairs_from
    except NoPlacement as exc:
        return exc.message
    from_words = " or ".join(tier_words(t) for t in sources)
    owner = new_owner()
    lease = timedelta(seconds=ctx.settings.sync.lease_seconds)
    with ctx.tx() as session:
        now = utcnow()
        claimed = session.execute(
            update(Replica)
            .where(
                Replica.id == row.replica_id,
                Replica.state.in_(
                    replica_sources(ReplicaState.REPAIRING)
                ),  # damaged, or repairing under a dead lease
                or_(Replica.state == ReplicaState.DAMAGED, Replica.lease_expires_at < now),
            )
            .values(
                state=ReplicaState.REPAIRING, lease_owner=owner, lease_expires_at=now + lease, updated_at=now
            )
            .returning(Replica.reason),
            execution_options=NO_SYNC,
        ).scalar()
        if claimed is None:
            return "another verify is repairing it"
        damage = claimed
        intact = {
            r.tier: r
            for r in session.execute(
                select(Replica).where(
                    Replica.file_id == row.file_id,
                    Replica.tier.in_(sources),
                    Replica.state == ReplicaState.PRESENT,
                )
            ).scalars()
        }
        source = next((intact[t] for t in sources if t in intact), None)
        source_tier = Tier(source.tier) if source else None
        source_key = source.key if source else None
        source_version = source.version_id if source else None
    error: str | None = None
    version: str | None = None
    if source_key is None or source_tier is None:
        error = f"no intact copy on {from_words} to repair it from"
    else:
        target = ctx.backend(row.tier).stored_form()  # a copy of a stored object, as it is
        try:
            with leased(ctx, owner, ReplicaState.REPAIRING):
                target.delete(row.key, force=True)  # the one overwrite of a write-once copy: see notes
                version = copy_verified(
                    ctx.backend(source_tier), source_key, target, row.key, row.expected,
                    write_once=TIER_PROPERTIES[row.tier].write_once, label=row.label,
                    source_version=source_version,
                )  # fmt: skip
        except ChecksumMismatch as exc:
            error = f"the copy on {tier_words(source_tier)} is damaged too: {exc.message}"
        except (LevereError, OSError) as exc:
            error = f"repair failed: {exc}"
    with ctx.tx() as session:
        now = utcnow()
        outcome = ReplicaState.PRESENT if error is None else ReplicaState.DAMAGED
        values: dict[str, Any] = {"state": outcome, "lease_expires_at": None, "updated_at": now}
        if error is None:
            values |= {"reason": "", "verified_at": now, "version_id": version}
        else:
            values |= {"reason": f"{damage}; {error}" if error not in damage else damage}
        session.execute(
            update(Replica)
            .where(
                Replica.id == row.replica_id,
                Replica.lease_owner == owner,
                Replica.state.in_(replica_sources(outcome, ReplicaState.REPAIRING)),
            )
            .values(**values),
            execution_options=NO_SYNC,
        )
        if error is None:
            audit.record(
                session, None, "replica.repaired", "file", row.file_id,
                after={"path": row.label, "tier": row.tier.value, "from": source_tier, "damage": damage},
            )  # fmt: skip
    return error


def _close(ctx: Context, session: Session, run_id: str, tally: Tally, repaired: int) -> None:
    run = session.get(JobRun, run_id)
    assert run is not None
    problems = []
    if tally.unrepaired_count:
        n = tally.unrepaired_count
        problems.append(f"{n} damaged cop{'y' if n == 1 else 'ies'} could not be repaired")
    if tally.unreadable_count:
        n = tally.unreadable_count
        problems.append(f"{n} cop{'y' if n == 1 else 'ies'} could not be read")
    run.report = {
        "checked": tally.checked,
        "ok": tally.ok,
        "bytes": tally.nbytes,
        "damaged_found": tally.damaged_count,
        "repaired": repaired,
        "damaged": tally.damaged,
        "unreadable_count": tally.unreadable_count,
        "unreadable": tally.unreadable,
    }
    run.state = job_run_transition(
        run.state, JobRunState.FAILED if problems else JobRunState.DONE, f"job {run.id}"
    )
    run.error = "; ".join(problems)
    run.files_failed = tally.unrepaired_count + tally.unreadable_count
    run.finished_at = utcnow()
    if tally.damaged:
        _tell(ctx, session, tally)


def _tell(ctx: Context, session: Session, tally: Tally) -> None:
    """One message per project with damage: its admins and the helpdesk."""
    by_project: dict[str, list[dict[str, Any]]] = {}
    for entry in tally.damaged:
        by_project.setdefault(entry["path"].split("/", 1)[0], []).append(entry)
    for identifier, entries in by_project.items():
        project = session.execute(select(Project).where(Project.identifier == identifier)).scalar()
        if project is None:
            continue
        fixed = sum(1 for e in entries if e["repaired"])
        lines = "\n".join(
            f"  {e['path']} on {tier_words(e['tier'])}: "
            + ("repaired from the other copy" if e["repaired"] else f"NOT repaired: {e['error']}")
            for e in entries
        )
        notify.notify(
            ctx, session, concerned(session, project),
            f"[levere] verify found {len(entries)} damaged cop{'y' if len(entries) == 1 else 'ies'} in {identifier}",
            f"levere re-read the stored copies of {identifier} ({format_size(tally.nbytes)} checked in all) and "
            f"found damage; {fixed} of {len(entries)} repaired:\n{lines}\n\n"
            f"Details:  levere status {identifier}\n",
        )  # fmt: skip
