"""Deliveries: a run opened in a project, the files it holds, and the views of both.

Design notes
------------
* A file exists for levere once its row is in ``files`` with an area replica: the bytes are already
  published and durable by then (tus: :mod:`levere.services.uploads`, tar batches:
  :mod:`levere.services.batches`). Rows are written with Core bulk inserts, because a run may hold
  tens of thousands of small files.
* Sealing a delivery, with its checksum file and manifest, is :mod:`levere.services.sealing`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import String, func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from levere.context import Context
from levere.dataplane import held
from levere.db.bulk import insert_rows
from levere.db.models import (
    ID_STEM,
    Delivery,
    Project,
    Replica,
    StoredFile,
    Upload,
    User,
    files_table,
    new_ids,
    replicas_table,
    utcnow,
)
from levere.domain.deliveries import DeliveryState, UploadState
from levere.domain.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    ValidationFailed,
)
from levere.domain.paths import KeyLimits, check_key_fits, check_name
from levere.domain.replicas import ReplicaState
from levere.domain.roles import Action, allowed
from levere.domain.tiers import ProjectKind, Purpose, Tier, placements, tier_words
from levere.domain.units import format_size
from levere.services import audit, upload_rows, zone_access, zone_uploads
from levere.services.projects import authorize, landing_tier, placement, subject_for
from levere.services.views import DeliveryView as DeliveryView  # the views of this use case
from levere.services.views import FilePage, OpenUploadView, upload_view
from levere.services.views import FileView as FileView
from levere.services.views import delivery_view as view_of

log = logging.getLogger(__name__)

MAX_METADATA = 256 * 1024


def area_key(identifier: str, delivery: str, path: str) -> str:
    """Where a delivered file lives on a tier: ``IDENTIFIER/DELIVERY/PATH``."""
    return f"{identifier}/{delivery}/{path}"


def key_limits(ctx: Context, project: Project) -> KeyLimits:
    """How long a delivered file's key may be: it must fit on every tier the project's placement
    keeps it on (where it lands, and where sync copies it under the same key)."""
    # refuses a project with nowhere to land files; a sensitive project's land on its shared disk
    landing = placement(project, Purpose.SHARED_DISK if project.sensitive else Purpose.LANDING)
    found = _described_limits(ctx, landing.tier)
    for other in placements(ProjectKind.of(project.sensitive)):
        if other.tier != landing.tier:
            found = found.tighter(_described_limits(ctx, other.tier))
    return found


def _described_limits(ctx: Context, tier: Tier) -> KeyLimits:
    limits = ctx.backend(tier).key_limits()
    return replace(limits, where=f"{tier_words(tier)} ({limits.where})")


def check_fits(limits: KeyLimits, identifier: str, delivery: str, path: str) -> str:
    """``path``'s key in the delivery, refused with the limit if the storage cannot hold it."""
    key = area_key(identifier, delivery, path)
    check_key_fits(path, key, limits)
    return key


# --- lookups -------------------------------------------------------------------------------------------


def get_delivery(session: Session, project: Project, name: str, *, lock: bool = False) -> Delivery:
    query = select(Delivery).where(Delivery.project_id == project.id, Delivery.name == name)
    if lock:
        query = query.with_for_update()
    delivery = session.execute(query).scalar()
    if delivery is None:
        raise NotFound(f"no delivery {name!r} in {project.identifier}")
    return delivery


def open_for_upload(session: Session, project: Project, name: str, *, lock: bool = False) -> Delivery:
    """The delivery, if files may still be added to it."""
    # a project with nowhere to land files is refused first: a sensitive project's files land only
    # in a delivery on its shared disk
    found = session.execute(
        select(Delivery.shared_disk_id).where(Delivery.project_id == project.id, Delivery.name == name)
    ).first()
    placement(project, Purpose.SHARED_DISK if found is not None and found[0] else Purpose.LANDING)
    delivery = get_delivery(session, project, name, lock=lock)
    if delivery.state != DeliveryState.OPEN:
        raise Conflict(
            f"delivery {name} in {project.identifier} is {delivery.state}; files cannot be added to it",
            state=delivery.state,
        )
    return delivery


def folders_of(path: str) -> list[str]:
    """The folders a path lies in: ``a/b/c`` -> ``a``, ``a/b``."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def check_path_free(session: Session, delivery: Delivery, path: str) -> None:
    """Refuse a path that the delivery already holds, that an active upload is writing, or that
    would make a file and a folder of the same name (``a`` and ``a/b``): such a run could not be
    downloaded into a folder."""
    stored = [StoredFile.delivery_id == delivery.id]
    uploading = [Upload.delivery_id == delivery.id, Upload.state == UploadState.ACTIVE, Upload.kind == "tus"]
    for column, where, busy in (
        (StoredFile.path, stored, "is already in the delivery"),
        (Upload.path, uploading, "is already being uploaded"),
    ):
        if session.execute(select(column).where(*where, column == path).limit(1)).first():
            raise AlreadyExists(f"{delivery.name}/{path} {busy}", path=path)
        clash = session.execute(
            select(column)
            .where(*where, column.in_(folders_of(path)) | column.startswith(f"{path}/", autoescape=True))
            .limit(1)
        ).scalar()
        if clash is not None:
            raise Conflict(
                f"{delivery.name}/{path} cannot be stored: {clash} {busy} and a name cannot be both a file "
                "and a folder",
                path=path,
            )


@dataclass(frozen=True)
class NewFile:
    path: str
    size: int
    md5: str
    sha256: str
    key: str


def record_files(
    session: Session, delivery: Delivery, backend_id: str, files: Sequence[NewFile], tier: Tier | None = None
) -> list[str]:
    """Insert file rows and their present replicas on the landing tier (or ``tier``) in bulk;
    returns the new file ids."""
    now = utcnow()
    ids = new_ids(len(files))
    insert_rows(
        session,
        files_table,
        ("id", "path", "size", "md5", "sha256"),
        [(fid, f.path, f.size, f.md5, f.sha256) for fid, f in zip(ids, files, strict=True)],
        {"delivery_id": delivery.id, "project_id": delivery.project_id, "created_at": now},
    )
    landing = tier or landing_tier(session, delivery.project_id)
    replica = {
        "tier": landing.value, "backend_id": backend_id, "state": ReplicaState.PRESENT.value, "reason": "", "attempts": 0,
        "verified_at": now, "updated_at": now,
    }  # fmt: skip
    prefix = _common_prefix(files)
    if prefix is None:
        insert_rows(
            session,
            replicas_table,
            ("id", "file_id", "key"),
            [(rid, fid, f.key) for rid, fid, f in zip(new_ids(len(files)), ids, files, strict=True)],
            replica,
        )
        return ids
    # Every key is the same folder plus the path: the database makes the rows from the file rows
    # just inserted, found by their ids (one new_ids call: one stem, then counters). Each copy's id
    # is a stem of its own followed by its file's counter.
    stem = new_ids(1)[0][:ID_STEM]
    made = select(
        (literal(stem, String) + func.substr(StoredFile.id, ID_STEM + 1)).label("id"),
        StoredFile.id.label("file_id"),
        (literal(prefix, String) + StoredFile.path).label("key"),
        *(literal(value, replicas_table.c[name].type).label(name) for name, value in replica.items()),
    ).where(StoredFile.id.between(ids[0], ids[-1]), StoredFile.delivery_id == delivery.id)
    session.execute(insert(replicas_table).from_select(["id", "file_id", "key", *replica], made))
    return ids


def _common_prefix(files: Sequence[NewFile]) -> str | None:
    """The folder every file's storage key is its path in, if there is one."""
    if not files:
        return None
    first = files[0]
    if not first.key.endswith(first.path):
        return None
    prefix = first.key[: len(first.key) - len(first.path)]
    if all(f.key == prefix + f.path for f in files):
        return prefix
    return None


def _counts(session: Session, delivery_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    ids = list(delivery_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(StoredFile.delivery_id, func.count(StoredFile.id), func.coalesce(func.sum(StoredFile.size), 0))
        .where(StoredFile.delivery_id.in_(ids))
        .group_by(StoredFile.delivery_id)
    ).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def delivery_view(session: Session, project: Project, delivery: Delivery) -> DeliveryView:
    session.flush()
    count, total = _counts(session, [delivery.id]).get(delivery.id, (0, 0))
    return view_of(delivery, project.identifier, count, total)


def file_views(session: Session, *conditions: Any, with_delivery: bool = False) -> list[FileView]:
    """Files matching ``conditions`` (on StoredFile and Delivery), ordered, with their tiers; paths
    as ``DELIVERY/PATH`` when ``with_delivery``."""
    found = session.execute(
        select(
            StoredFile.id,
            Delivery.name,
            StoredFile.path,
            StoredFile.size,
            StoredFile.md5,
            StoredFile.sha256,
            StoredFile.created_at,
        )
        .join(Delivery, Delivery.id == StoredFile.delivery_id)
        .where(*conditions)
    ).all()
    # ordered here, not by the database, whose collation may differ (PostgreSQL locales)
    rows = sorted(found, key=lambda r: (r[1], r[2]))
    tiers: dict[str, dict[str, str]] = {r[0]: {} for r in rows}
    if rows:
        replica_rows = session.execute(
            select(Replica.file_id, Replica.tier, Replica.state)
            .join(StoredFile, StoredFile.id == Replica.file_id)
            .join(Delivery, Delivery.id == StoredFile.delivery_id)
            .where(*conditions)
        ).all()
        for file_id, tier, state in replica_rows:
            if file_id in tiers:
                tiers[file_id][tier] = state
    return [
        FileView(
            path=f"{r[1]}/{r[2]}" if with_delivery else r[2],
            size=r[3],
            md5=r[4],
            sha256=r[5],
            created_at=r[6],
            tiers=tiers[r[0]],
        )
        for r in rows
    ]


def reclaim_dead_batches(session: Session, *where: Any) -> int:
    """Give back the reservations of batches whose request died with its process (or whose lease
    ran out): they will never finish, and must neither hold quota nor keep a delivery from being
    sealed. Returns how many were reclaimed."""
    now = utcnow()
    rows = session.execute(
        select(Upload)
        .where(Upload.kind == "batch", Upload.state == UploadState.ACTIVE, *where)
        .with_for_update(skip_locked=True)
    ).scalars()
    count = 0
    for batch in rows:
        if held(batch.lease_owner, batch.lease_expires_at, now):
            continue
        batch.state = UploadState.EXPIRED
        batch.reason = "the request receiving it stopped"
        batch.lease_owner = None
        if batch.length:
            upload_rows.give_back(session, batch)  # on the disk or the area quota
        audit.record(
            session, None, "upload.expired", "delivery", batch.delivery_id,
            after={"kind": "batch", "released": batch.length, "reason": batch.reason},
        )  # fmt: skip
        count += 1
    return count


# --- use cases -----------------------------------------------------------------------------------------


def open_delivery(
    ctx: Context,
    actor: User,
    identifier: str,
    name: str,
    metadata: dict[str, Any] | None = None,
    *,
    disk: str | None = None,
    second_factor: bool = False,
) -> DeliveryView:
    """Open a delivery into a project: onto its area, or, for a sensitive project, onto the shared
    disk ``disk`` (by its facility side, with a second factor; :mod:`levere.services.zone_uploads`)."""
    try:
        with ctx.tx() as session:
            project = authorize(session, actor, identifier, Action.DELIVERY_CREATE)
            # a delivery with nowhere to land (a sensitive project without a disk, a disk named
            # for a project that is not sensitive) is refused before anything is recorded
            zone_uploads.delivery_placement(project, disk)
            on_disk = zone_uploads.disk_for(session, actor, project, disk, second_factor) if disk else None
            name = check_name(name, "delivery name")
            metadata = metadata or {}
            if len(json.dumps(metadata, default=str)) > MAX_METADATA:
                raise ValidationFailed({"metadata": f"is larger than {format_size(MAX_METADATA)}"})
            existing = session.execute(
                select(Delivery).where(Delivery.project_id == project.id, Delivery.name == name)
            ).scalar()
            if existing is not None:
                raise AlreadyExists(
                    f"{project.identifier} already has a delivery {name} ({existing.state})",
                    state=existing.state,
                )
            delivery = Delivery(
                project_id=project.id,
                facility_id=actor.facility_id,
                name=name,
                meta=metadata,
                created_by_id=actor.id,
                shared_disk_id=on_disk.id if on_disk else None,
            )
            session.add(delivery)
            session.flush()
            audit.record(
                session, actor, "delivery.opened", "delivery", delivery.id,
                after={"project": project.identifier, "name": name}
                | ({"disk": on_disk.name} if on_disk else {}),
            )  # fmt: skip
            return delivery_view(session, project, delivery)
    except IntegrityError:
        # a concurrent request opened the same name first
        with ctx.tx() as session:
            project = authorize(session, actor, identifier, Action.DELIVERY_CREATE)
            state = get_delivery(session, project, name).state
        raise AlreadyExists(
            f"{project.identifier} already has a delivery {name} ({state})", state=state
        ) from None


def list_deliveries(ctx: Context, actor: User, identifier: str) -> list[DeliveryView]:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        return delivery_views(session, project)


def delivery_views(session: Session, project: Project) -> list[DeliveryView]:
    """A project's deliveries, oldest first, with their counts (two queries)."""
    found = list(
        session.execute(
            select(Delivery).where(Delivery.project_id == project.id).order_by(Delivery.created_at)
        ).scalars()
    )
    counts = _counts(session, (d.id for d in found))
    return [view_of(d, project.identifier, *counts.get(d.id, (0, 0))) for d in found]


def show_delivery(ctx: Context, actor: User, identifier: str, name: str) -> DeliveryView:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        delivery = get_delivery(session, project, name)
        zone_access.refuse_released(session, actor, delivery)
        files = file_views(session, StoredFile.delivery_id == delivery.id)
        return replace(
            delivery_view(session, project, delivery),
            files=tuple(files),
            uploads=_uploads_in_flight(session, delivery),
        )


def _uploads_in_flight(session: Session, delivery: Delivery) -> tuple[OpenUploadView, ...]:
    uploads = session.execute(
        select(Upload)
        .where(
            Upload.delivery_id == delivery.id,
            Upload.state == UploadState.ACTIVE,
            Upload.kind == "tus",
        )
        .order_by(Upload.created_at)
    ).scalars()
    return tuple(upload_view(u) for u in uploads)


def uploads_in_flight(ctx: Context, actor: User, identifier: str, name: str) -> tuple[OpenUploadView, ...]:
    """The delivery's resumable uploads in flight, with how far each has come (one query, whatever
    the size of the delivery: a page polls it while uploads run)."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        return _uploads_in_flight(session, get_delivery(session, project, name))


def list_files(ctx: Context, actor: User, identifier: str, prefix: str = "") -> list[FileView]:
    """Files of the project whose ``DELIVERY/PATH`` starts with ``prefix``."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        conditions: list[Any] = [StoredFile.project_id == project.id]
        hidden = zone_access.released_elsewhere(session, actor, project.id)
        if hidden:
            conditions.append(StoredFile.delivery_id.not_in(hidden))
        delivery_part, slash, path_part = prefix.lstrip("/").partition("/")
        if slash:
            conditions.append(Delivery.name == delivery_part)
            if path_part:
                conditions.append(StoredFile.path.startswith(path_part, autoescape=True))
        elif delivery_part:
            conditions.append(Delivery.name.startswith(delivery_part, autoescape=True))
        return file_views(session, *conditions, with_delivery=True)


def manifest(ctx: Context, actor: User, identifier: str, name: str) -> DeliveryView:
    """The delivery with every file (``files``), for its manifest."""
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        delivery = get_delivery(session, project, name)
        zone_access.refuse_released(session, actor, delivery)
        files = file_views(session, StoredFile.delivery_id == delivery.id)
        return replace(delivery_view(session, project, delivery), files=tuple(files))


#: the most files one page of a delivery holds, and the furthest a page may start
MAX_PAGE = 1000
MAX_OFFSET = 10**9


def file_page(
    ctx: Context,
    actor: User,
    identifier: str,
    name: str,
    *,
    search: str = "",
    offset: int = 0,
    limit: int = 100,
) -> FilePage:
    """One page of a delivery's files in path order, those whose path contains ``search`` (any
    case): a count, one page of rows and their replicas, however large the delivery."""
    if not 0 <= offset <= MAX_OFFSET:
        raise ValidationFailed({"offset": f"must be between 0 and {MAX_OFFSET}"})
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed({"limit": f"must be between 1 and {MAX_PAGE}"})
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_READ)
        delivery = get_delivery(session, project, name)
        zone_access.refuse_released(session, actor, delivery)
        where: list[Any] = [StoredFile.delivery_id == delivery.id]
        if search.strip():
            where.append(func.lower(StoredFile.path).contains(search.strip().lower(), autoescape=True))
        matching = session.execute(select(func.count()).select_from(StoredFile).where(*where)).scalar_one()
        # byte order on every database, as the manifest and the listings sort (PostgreSQL's own
        # collation would follow the locale)
        path = StoredFile.path
        if session.get_bind().dialect.name == "postgresql":
            path = path.collate("C")  # type: ignore[assignment]
        ids = list(
            session.execute(
                select(StoredFile.id).where(*where).order_by(path).offset(offset).limit(limit)
            ).scalars()
        )
        files = file_views(session, StoredFile.id.in_(ids)) if ids else []
        return FilePage(
            delivery=delivery_view(session, project, delivery),
            files=tuple(files),
            matching=matching,
            offset=offset,
            limit=limit,
            search=search.strip(),
            uploads=_uploads_in_flight(session, delivery),
            may_upload=delivery.state == DeliveryState.OPEN
            and allowed(subject_for(session, project, actor), Action.DELIVERY_UPLOAD),
        )
