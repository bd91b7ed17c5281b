"""Long-term storage of delivered data: sync, status, freeing and restoring.

This is the helpdesk's step in the NorSeq process ("synchronise the newly uploaded data from the
NeLS storage area to the StoreBioinfo layer for safe long term storage"), done by levere itself.

Design notes
------------
* Every file has one replica row per tier. Long-term replicas are made "pending" when a delivery is
  sealed (:func:`on_delivery_sealed`); the copy engine (:mod:`levere.dataplane.replication`) moves
  them to "copying" and "present" (verified) or "failed" (with the reason). Area replicas become
  "freeing" then "freed" when their bytes are removed, and "pending" again when a restore is asked.
* Requests (sync, restore) are job runs: a row people can watch, and huey tasks that do the work
  on whichever worker takes them. Requests return at once; the CLI waits on the run if asked to.
* Freeing is refused unless every selected file is present on long-term storage; it happens in
  two steps ("freeing", delete, "freed") so that a crash in between leaves nothing uncounted:
  running the same free again finishes it.
* A sensitive project's working copy is its secure-zone copy (``working_purpose``): sync copies the
  stored Crypt4GH bodies to long-term, free removes them from the secure tier, restore copies them
  back. Only *released* deliveries go to long-term (:func:`_released_only`): until release a
  delivery on a shared disk is the facility's, not yet the users'; release starts the sync
  (:func:`on_delivery_released`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.dataplane import NO_SYNC
from levere.db.bulk import new_ids_sql
from levere.db.models import (
    Delivery,
    JobRun,
    Project,
    Quota,
    Replica,
    StoredFile,
    User,
    UTCDateTime,
    replicas_table,
    utcnow,
)
from levere.domain.errors import Conflict, LevereError, NoPlacement, NotFound, NotSynced, StorageUnavailable
from levere.domain.jobruns import JobKind
from levere.domain.paths import check_name, check_relative_path
from levere.domain.replicas import AREA_HOLDS, PROBLEMS, UNDER_WAY, ReplicaState, replica_sources
from levere.domain.roles import Action
from levere.domain.tiers import ProjectKind, Purpose, Tier, tier_words, working_purpose
from levere.domain.units import count, format_size
from levere.services import audit, project_zone, quotas
from levere.services.jobruns import new_run, run_view, run_views
from levere.services.projects import authorize, placement
from levere.services.sync_views import (
    Counted,
    DeliveryStatusView,
    FileTiersView,
    FreedView,
    ReplicaProblemView,
    ReplicaView,
    SyncStatusView,
)
from levere.services.views import JobRunView, quota_view

log = logging.getLogger(__name__)

# --- sync ---------------------------------------------------------------------------------------


def _ensure_longterm_replicas(
    ctx: Context, session: Session, project: Project, delivery: Delivery | None, *, just_sealed: bool = False
) -> int:
    """Pending long-term replicas for every file of the sealed deliveries in scope that has none.
    One ``INSERT ... SELECT``: a project of a million files costs no memory here.

    ``just_sealed``: ``delivery`` is being sealed in this transaction, so none of its files has a
    long-term replica yet and each lies in the area under IDENTIFIER/DELIVERY/PATH; the rows are
    made from its files alone, without looking either up (a third of the time of sealing)."""
    longterm, landing = placement(project, Purpose.LONGTERM).tier, _working(project)
    values = (
        literal(longterm.value),
        literal(ctx.backend(longterm).backend_id),
        literal(ReplicaState.PENDING.value),
        literal(""),
        literal(0),
        literal(utcnow(), UTCDateTime()),
    )
    new_id = new_ids_sql(session.get_bind().dialect.name)
    if project.sensitive and just_sealed:
        return 0  # not released yet: release asks for the long-term copies
    if just_sealed and delivery is not None:
        key = literal(f"{project.identifier}/{delivery.name}/") + StoredFile.path
        query = select(new_id, StoredFile.id, key, *values).where(StoredFile.delivery_id == delivery.id)
    else:
        area = Replica.__table__.alias("area_replica")
        has_longterm = select(Replica.id).where(Replica.file_id == StoredFile.id, Replica.tier == longterm)
        # the same key as in the area: IDENTIFIER/DELIVERY/PATH
        key = func.coalesce(
            area.c.key, literal(f"{project.identifier}/") + Delivery.name + "/" + StoredFile.path
        )
        query = (
            select(new_id, StoredFile.id, key, *values)
            .join(Delivery, Delivery.id == StoredFile.delivery_id)
            .outerjoin(area, (area.c.file_id == StoredFile.id) & (area.c.tier == landing))
            .where(StoredFile.project_id == project.id, Delivery.state == "sealed", ~has_longterm.exists())
        )
        if delivery is not None:
            query = query.where(StoredFile.delivery_id == delivery.id)
        if project.sensitive:
            query = query.where(Delivery.released_at.is_not(None))
    columns = ("id", "file_id", "key", "tier", "backend_id", "state", "reason", "attempts", "updated_at")
    result = session.execute(insert(replicas_table).from_select(columns, query))
    return int(result.rowcount)  # type: ignore[attr-defined]


def on_delivery_sealed(ctx: Context, session: Session, delivery: Delivery) -> None:
    """Called by the deliveries service inside the sealing transaction: the delivery's files wait
    for long-term storage, and in projects set to "auto" the sync starts once it commits."""
    project = session.get(Project, delivery.project_id)
    if project is None:
        raise NotFound("the delivery's project does not exist")
    created = _ensure_longterm_replicas(ctx, session, project, delivery, just_sealed=True)
    if created and project.sync_mode == "auto":
        run = new_run(ctx, session, JobKind.SYNC, project, delivery=delivery)
        audit.record(
            session, None, "sync.requested", "delivery", delivery.id,
            after={"job": run.id, "delivery": delivery.name, "files": created, "automatic": True},
        )  # fmt: skip


def _working(project: Project) -> Tier:
    """The tier of the project's working copy: the area, or a sensitive project's secure zone."""
    return placement(project, working_purpose(ProjectKind.of(project.sensitive))).tier


def _released_only(project: Project, delivery: Delivery) -> None:
    """A sensitive project's delivery goes to long-term only once released to the users' project."""
    if project.sensitive and delivery.released_at is None:
        raise Conflict(
            f"delivery {delivery.name} is still on its shared disk: only deliveries released to the "
            "users' secure project go to long-term storage",
            state="not_released",
        )


def on_delivery_released(ctx: Context, session: Session, delivery: Delivery) -> None:
    """Called by release inside its last transaction: the released files wait for long-term storage,
    and in projects set to "auto" the sync starts once it commits."""
    project = session.get(Project, delivery.project_id)
    if project is None:
        raise NotFound("the delivery's project does not exist")
    created = _ensure_longterm_replicas(ctx, session, project, delivery)
    if created and project.sync_mode == "auto":
        run = new_run(ctx, session, JobKind.SYNC, project, delivery=delivery)
        audit.record(
            session, None, "sync.requested", "delivery", delivery.id,
            after={"job": run.id, "delivery": delivery.name, "files": created, "automatic": True},
        )  # fmt: skip


def request_sync(ctx: Context, actor: User, identifier: str, delivery_name: str | None = None) -> JobRunView:
    """Copy a project's sealed deliveries (or one of them) to long-term storage (helpdesk)."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.SYNC_RUN)
        delivery = _delivery(session, project, delivery_name) if delivery_name else None
        if delivery is not None and delivery.state != "sealed":
            raise Conflict(
                f"delivery {delivery.name} is {delivery.state}: only sealed deliveries go to long-term storage",
                state=delivery.state,
            )
        if delivery is not None:
            _released_only(project, delivery)
        created = _ensure_longterm_replicas(ctx, session, project, delivery)
        run = new_run(ctx, session, JobKind.SYNC, project, delivery=delivery, actor=actor)
        audit.record(
            session, actor, "sync.requested", "project", project.id,
            after={"job": run.id, "delivery": delivery.name if delivery else None, "new_replicas": created},
        )  # fmt: skip
        return run_view(session, run)


def _delivery(session: Session, project: Project, name: str) -> Delivery:
    found = session.execute(
        select(Delivery).where(
            Delivery.project_id == project.id, Delivery.name == check_name(name, "delivery name")
        )
    ).scalar()
    if found is None:
        raise NotFound(f"{project.identifier} has no delivery {name}")
    return found


# --- status -------------------------------------------------------------------------------------


def tier_states(session: Session, file_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{file_id: {tier: state}}``: the "tiers" of the File JSON."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    ids = list(file_ids)
    for start in range(0, len(ids), 1000):
        rows = session.execute(
            select(Replica.file_id, Replica.tier, Replica.state).where(
                Replica.file_id.in_(ids[start : start + 1000])
            )
        )
        for file_id, tier, state in rows:
            found[file_id][tier] = state
    return dict(found)


def _summary(tiers: dict[str, dict[str, Counted]], files: int, purpose: Purpose, tier: Tier | None) -> str:
    """One word for a delivery on the tier that holds it for ``purpose``, from its counts per state."""
    counts = {state: c.files for state, c in tiers.get(tier, {}).items()} if tier is not None else {}
    if not files:
        return "empty"
    landing = purpose is Purpose.LANDING
    if counts.get(ReplicaState.PRESENT, 0) == files:
        return ReplicaState.PRESENT if landing else "synced"
    if landing and counts.get(ReplicaState.FREED, 0) == files:
        return ReplicaState.FREED
    # the most pressing state any file is in names the delivery
    for state in (
        ReplicaState.DAMAGED,
        ReplicaState.FAILED,
        ReplicaState.REPAIRING,
        ReplicaState.COPYING,
        ReplicaState.FREEING,
        ReplicaState.PENDING,
    ):
        if counts.get(state):
            return state
    if landing and counts.get(ReplicaState.FREED):
        return "partly freed"
    return "-" if landing else "not started"


def _placed(project: Project, purpose: Purpose) -> Tier | None:
    try:
        return placement(project, purpose).tier
    except NoPlacement:
        return None


def status(ctx: Context, actor: User, identifier: str, *, second_factor: bool = False) -> SyncStatusView:
    """Per delivery: files and bytes per state on each tier, the problems, and the recent jobs;
    for a sensitive project also its secure project and shared disks (it has no working area)."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        deliveries = list(
            session.execute(
                select(Delivery).where(Delivery.project_id == project.id).order_by(Delivery.created_at)
            ).scalars()
        )
        totals = {
            delivery_id: (n, int(b))
            for delivery_id, n, b in session.execute(
                select(StoredFile.delivery_id, func.count(), func.coalesce(func.sum(StoredFile.size), 0))
                .where(StoredFile.project_id == project.id)
                .group_by(StoredFile.delivery_id)
            )
        }
        per: dict[str, dict[str, dict[str, Counted]]] = defaultdict(lambda: defaultdict(dict))
        for delivery_id, tier, state, n, b in session.execute(
            select(
                StoredFile.delivery_id, Replica.tier, Replica.state, func.count(),
                func.coalesce(func.sum(StoredFile.size), 0),
            )
            .join(StoredFile, StoredFile.id == Replica.file_id)
            .where(StoredFile.project_id == project.id)
            .group_by(StoredFile.delivery_id, Replica.tier, Replica.state)
        ):  # fmt: skip
            per[delivery_id][tier][state] = Counted(files=n, bytes=int(b))
        problems: dict[str, list[ReplicaProblemView]] = defaultdict(list)
        for delivery_id, path, tier, state, reason in session.execute(
            select(StoredFile.delivery_id, StoredFile.path, Replica.tier, Replica.state, Replica.reason)
            .join(StoredFile, StoredFile.id == Replica.file_id)
            .where(StoredFile.project_id == project.id, Replica.state.in_(PROBLEMS))
            .order_by(StoredFile.path)
            .limit(200)
        ):
            problems[delivery_id].append(ReplicaProblemView(path=path, tier=tier, state=state, reason=reason))
        out = []
        landing, longterm = _working(project), _placed(project, Purpose.LONGTERM)
        for d in deliveries:
            files, size = totals.get(d.id, (0, 0))
            tiers = {tier: dict(states) for tier, states in per.get(d.id, {}).items()}
            out.append(
                DeliveryStatusView(
                    name=d.name,
                    state=d.state,
                    files=files,
                    bytes=size,
                    area=_summary(tiers, files, Purpose.LANDING, landing),
                    longterm=(
                        _summary(tiers, files, Purpose.LONGTERM, longterm)
                        if d.state == "sealed"
                        else "not sealed"
                    ),
                    tiers=tiers,
                    problems=tuple(problems.get(d.id, [])),
                )
            )
        quota = session.execute(select(Quota).where(Quota.project_id == project.id).order_by(Quota.tier))
        runs = session.execute(
            select(JobRun).where(JobRun.project_id == project.id).order_by(JobRun.created_at.desc()).limit(5)
        ).scalars()
        return SyncStatusView(
            project=project.identifier,
            sync_mode=project.sync_mode,
            quotas=tuple(quota_view(q) for q in quota.scalars()),
            deliveries=tuple(out),
            jobs=tuple(run_views(session, list(runs))),
            sensitive=project.sensitive,
            zone=project_zone.zone_view(session, project, actor, second_factor=second_factor),
        )


def file_tiers(
    ctx: Context,
    actor: User,
    identifier: str,
    prefix: str = "",
    problems_only: bool = False,
    limit: int = 10_000,
) -> list[FileTiersView]:
    """Each file (``DELIVERY/PATH``) with its state, reason and last verification on each tier."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        query = (
            select(Delivery.name, StoredFile, Replica)
            .join(StoredFile, StoredFile.delivery_id == Delivery.id)
            .join(Replica, Replica.file_id == StoredFile.id)
            .where(Delivery.project_id == project.id)
            .order_by(Delivery.name, StoredFile.path, Replica.tier)
        )
        if prefix:
            name, _, rest = prefix.partition("/")
            query = query.where(Delivery.name == name)
            if rest:
                query = query.where(StoredFile.path.startswith(rest, autoescape=True))
        if problems_only:
            bad = select(Replica.file_id).where(Replica.state.in_((*PROBLEMS, *UNDER_WAY)))
            query = query.where(StoredFile.id.in_(bad))
        files: dict[str, FileTiersView] = {}
        for name, stored, replica in session.execute(query):
            entry = files.get(stored.id)
            if entry is None:
                if len(files) >= limit:
                    break
                entry = files[stored.id] = FileTiersView(
                    path=f"{name}/{stored.path}", size=stored.size, sha256=stored.sha256, tiers={}
                )
            entry.tiers[replica.tier] = ReplicaView(
                state=replica.state,
                reason=replica.reason,
                verified_at=replica.verified_at,
                attempts=replica.attempts,
            )
        return list(files.values())


# --- choosing files by path ---------------------------------------------------------------------


@dataclass(frozen=True)
class Chosen:
    file: StoredFile
    label: str  # DELIVERY/PATH
    area: Replica | None
    longterm: Replica | None


def choose(session: Session, project: Project, paths: list[str]) -> list[Chosen]:
    """Files named as ``DELIVERY/PATH``, or every file under ``DELIVERY`` or ``DELIVERY/FOLDER``."""
    if not paths:
        raise NotFound("name at least one file or delivery (DELIVERY or DELIVERY/PATH)")
    chosen: dict[str, StoredFile] = {}
    names: dict[str, str] = {}
    for raw in paths:
        name, _, rest = raw.strip().strip("/").partition("/")
        delivery = _delivery(session, project, name)
        query = select(StoredFile).where(StoredFile.delivery_id == delivery.id)
        if rest:
            rest = check_relative_path(rest)
            query = query.where(
                or_(StoredFile.path == rest, StoredFile.path.startswith(rest + "/", autoescape=True))
            )
        found = list(session.execute(query.order_by(StoredFile.path)).scalars())
        if not found:
            raise NotFound(f"nothing in {project.identifier} matches {raw}")
        for stored in found:
            chosen[stored.id] = stored
            names[stored.id] = f"{delivery.name}/{stored.path}"
    landing, longterm = _working(project), placement(project, Purpose.LONGTERM).tier
    replicas: dict[tuple[str, str], Replica] = {}
    ids = list(chosen)
    for start in range(0, len(ids), 1000):
        for replica in session.execute(
            select(Replica).where(Replica.file_id.in_(ids[start : start + 1000]))
        ).scalars():
            replicas[(replica.file_id, replica.tier)] = replica
    return [
        Chosen(stored, names[fid], replicas.get((fid, landing)), replicas.get((fid, longterm)))
        for fid, stored in chosen.items()
    ]


def _not_on_longterm(chosen: list[Chosen], verb: str, identifier: str) -> NotSynced | None:
    missing = [c for c in chosen if c.longterm is None or c.longterm.state != ReplicaState.PRESENT]
    if not missing:
        return None
    first = missing[0]
    state = first.longterm.state if first.longterm else "not synced"
    reason = f" ({first.longterm.reason})" if first.longterm and first.longterm.reason else ""
    return NotSynced(
        f"{len(missing)} of {count(len(chosen), 'file')} in {identifier} are not safely on long-term storage "
        f"yet, so levere will not {verb} them: {first.label} is {state}{reason}",
        project=identifier,
        files=[c.label for c in missing[:20]],
    )


# --- freeing ------------------------------------------------------------------------------------


def free(ctx: Context, actor: User, identifier: str, paths: list[str]) -> FreedView:
    """Remove synced files from the project's working copy to give its quota back (admin or
    helpdesk): the project area, or a sensitive project's secure zone (whose space is not the
    project's quota); never a tier the project does not keep its working copy on."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DATA_FREE)
        chosen = choose(session, project, paths)
        busy = [
            c
            for c in chosen
            if c.area is not None and c.area.state in (ReplicaState.PENDING, ReplicaState.COPYING)
        ]
        if busy:
            raise Conflict(
                f"{busy[0].label} is being restored to {tier_words(_working(project))}; free it once that is done"
            )
        holding = [c for c in chosen if c.area is not None and c.area.state in AREA_HOLDS]
        refusal = _not_on_longterm(holding, "free", project.identifier)
        if refusal is not None:
            raise refusal
        ids = [c.area.id for c in holding if c.area is not None]
        marked = set(_set_state(session, ids, ReplicaState.FREEING))
        targets = [c for c in holding if c.area is not None and c.area.id in marked]
        project_id = project.id
        landing = _working(project)
    area = ctx.backend(landing)
    deleted: list[Chosen] = []
    failure: LevereError | None = None

    def remove(c: Chosen) -> Chosen:
        assert c.area is not None
        area.delete(c.area.key, force=True)  # levere's own copy: protected from others, not from a free
        return c

    with ThreadPoolExecutor(8, thread_name_prefix="levere-free") as pool:
        for c, error in zip(targets, pool.map(_attempt(remove), targets), strict=True):
            if error is None:
                deleted.append(c)
            elif failure is None:
                failure = error
    with ctx.tx() as session:
        done = set(_set_state(session, [c.area.id for c in deleted if c.area], ReplicaState.FREED))
        freed = [c for c in deleted if c.area is not None and c.area.id in done]
        nbytes = sum(c.file.size for c in freed)
        if nbytes:
            quotas.free(session, project_id, landing, nbytes)
        if freed:
            audit.record(
                session, actor, "data.freed", "project", project_id,
                after={"files": len(freed), "bytes": nbytes, "paths": [c.label for c in freed][:1000]},
            )  # fmt: skip
        quota = session.execute(
            select(Quota).where(Quota.project_id == project_id, Quota.tier == landing)
        ).scalar()
        result = FreedView(
            freed_files=len(freed),
            freed_bytes=nbytes,
            already_freed=sum(1 for c in chosen if c.area is not None and c.area.state == ReplicaState.FREED),
            area_used_bytes=quota.used_bytes if quota else 0,
            area_limit_bytes=quota.limit_bytes if quota else 0,
            tier=landing.value,
        )
    if failure is not None:
        raise StorageUnavailable(
            f"freed {len(freed)} of {count(len(targets), 'file')} ({format_size(nbytes)}); the rest could not be "
            f"removed from {tier_words(landing)}: {failure}. Run the same free again to finish.",
            **asdict(result),
        )
    return result


def _attempt(fn: Any) -> Any:
    def run(arg: Any) -> LevereError | None:
        try:
            fn(arg)
        except LevereError as exc:
            return exc
        except OSError as exc:
            return StorageUnavailable(str(exc))
        return None

    return run


def _set_state(session: Session, ids: list[str], after: ReplicaState) -> list[str]:
    """Move the replicas ``ids`` that may become ``after`` (by the transition table) there; returns
    those moved. Rows another request moved meanwhile stay as they are."""
    before = replica_sources(after)
    changed: list[str] = []
    for start in range(0, len(ids), 1000):
        changed += session.execute(
            update(Replica)
            .where(Replica.id.in_(ids[start : start + 1000]), Replica.state.in_(before))
            .values(state=after, reason="", updated_at=utcnow())
            .returning(Replica.id),
            execution_options=NO_SYNC,
        ).scalars()
    return changed


# --- restoring ----------------------------------------------------------------------------------


def request_restore(ctx: Context, actor: User, identifier: str, paths: list[str]) -> JobRunView:
    """Copy freed files back from long-term storage into the project area, verified (admin or
    helpdesk). The copy runs as a job; its quota is checked now and reserved as it goes."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DATA_RESTORE)
        chosen = choose(session, project, paths)
        restorable = replica_sources(ReplicaState.PENDING)  # freed, or an earlier restore that failed
        wanted = [c for c in chosen if c.area is not None and c.area.state in restorable]
        refusal = _not_on_longterm(wanted, "restore", project.identifier)
        if refusal is not None:
            raise refusal
        nbytes = sum(c.file.size for c in wanted)
        landing = _working(project)
        if nbytes:
            # only a check that it fits now, with the usual numbers if not; the copy reserves per batch
            quotas.reserve(
                session, project.id, landing, nbytes, what=f"restoring {count(len(wanted), 'file')}"
            )
            quotas.release(session, project.id, landing, nbytes)
        _set_state(session, [c.area.id for c in wanted if c.area], ReplicaState.PENDING)
        run = new_run(ctx, session, JobKind.RESTORE, project, actor=actor)
        audit.record(
            session, actor, "data.restore_requested", "project", project.id,
            after={"job": run.id, "files": len(wanted), "bytes": nbytes, "paths": [c.label for c in wanted][:1000]},
        )  # fmt: skip
        return run_view(session, run)
