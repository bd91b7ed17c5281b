"""Release: the facility hands a delivery on a shared disk to the users' secure project.

Each file gets a Crypt4GH header for the users' secure project's key, made from the data key the
disk's header opens, and loses the disk's header. The bodies are not read or written, so a release
takes time per file, not per byte. Once nothing unreleased is left on the disk, its private key is
dropped and the disk is released (``domain/secure.py``'s transitions): nothing encrypted to it can
be opened again, whatever bytes are left anywhere.

Design notes
------------
* One transaction per batch of files. In it, every file of the batch gains the users' header and
  loses the disk's; a file is thus readable by exactly one side at every commit, never by both and
  never by neither. A release killed at any point leaves whole batches done and the rest as it was;
  running it again goes on with the files that still hold a disk header, and the last run marks the
  delivery released. Each batch locks the delivery's row, so two runs at once take turns.
* Only the disk's facility side releases, with a second factor (the route's ``ZoneWriteUser``); a
  delivery is released once (``already_released``), and only a sealed one, so no upload can add a
  file with a disk header after the release.
* Every file moved is an audit event (``file.released``, written in one insert per batch), as are
  the start of each run, the delivery's release and the disk's.
* A release runs as a job run of kind ``release`` (:mod:`levere.jobs.dispatch`), as the analysis
  does: :func:`request_release` makes every check of :func:`release` at once, so a refusal comes with
  the request, and returns the delivery's active run if there is one; :func:`run_release` is one
  attempt, calling :func:`release` with a progress callback that records the files done on the
  run. Since :func:`release` goes on from where any earlier run stopped, the dispatch retries a
  failed attempt; an attempt that finds the delivery released already just closes the run.
* The transaction that marks the delivery released also makes its files' long-term copies pending
  (:func:`levere.services.sync.on_delivery_released`), and starts their sync in a project set to
  "auto": the bodies go to long-term as they are, their headers stay in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.crypt4gh import HeaderMaker, PrivateKey, PublicKey, read_data_key
from levere.db.models import Delivery, FileHeader, JobRun, Project, SharedDisk, StoredFile, User, utcnow
from levere.domain.deliveries import DeliveryState
from levere.domain.errors import AlreadyReleased, Conflict, NotFound, ValidationFailed
from levere.domain.jobruns import ACTIVE, JobKind, JobRunState, job_run_transition
from levere.domain.roles import Action
from levere.domain.secure import DISK_WORDS, DiskState, HeaderHolder, disk_transition
from levere.services import audit, sync
from levere.services.audit import Change
from levere.services.jobruns import disk_run, new_run, run_view
from levere.services.notify import notify
from levere.services.secure_disks import authorize_disk, both_sides
from levere.services.views import JobRunView
from levere.services.zone_files import private_key, record_header

#: files moved per transaction: large enough that a release of thousands of files takes a few
#: commits, small enough that a transaction holds the delivery's lock only briefly
BATCH = 500


@dataclass(frozen=True)
class ReleaseView:
    disk: str
    delivery: str
    users_project: str  # the users' secure project the delivery now belongs to
    files: int  # the delivery's files
    moved: int  # files this run gave a users' header (the others were moved by an earlier run)
    released_at: datetime
    #: the disk's state afterwards: "released" once nothing unreleased is left on it
    disk_state: str


def _find(session: Session, disk: SharedDisk, name: str) -> Delivery:
    query = select(Delivery).where(Delivery.shared_disk_id == disk.id, Delivery.name == name.strip())
    found = session.execute(query).scalar()
    if found is None:
        raise NotFound(f"no delivery {name.strip()[:100]} on shared disk {disk.name}")
    return found


def _refuse_released(disk: SharedDisk, delivery: Delivery) -> None:
    if delivery.released_at is not None:
        raise AlreadyReleased(
            f"delivery {delivery.name} on shared disk {disk.name} was released to "
            f"{disk.users_secure.identifier} on {delivery.released_at:%Y-%m-%d %H:%M} UTC; "
            "a delivery is released once",
            delivery=delivery.name,
            secure_project=disk.users_secure.identifier,
        )


def _releasable(
    session: Session, actor: User, disk_name: str, delivery_name: str
) -> tuple[SharedDisk, Delivery]:
    """The disk and the delivery, if ``actor`` may release it now; else the reason, as an error."""
    disk = authorize_disk(session, actor, disk_name, Action.DISK_RELEASE)
    delivery = _find(session, disk, delivery_name)
    _refuse_released(disk, delivery)
    if delivery.state != DeliveryState.SEALED:
        raise Conflict(
            f"delivery {delivery.name} is {delivery.state}: only a sealed delivery is released",
            delivery=delivery.name,
            state=delivery.state,
        )
    state = DiskState(disk.state)
    if state not in (DiskState.OPEN, DiskState.EXPIRED) or disk.wrapped_private_key is None:
        raise Conflict(
            f"shared disk {disk.name} is {DISK_WORDS[state]}: nothing on it can be released",
            state=state.value,
        )
    return disk, delivery


def release(
    ctx: Context,
    actor: User,
    disk_name: str,
    delivery_name: str,
    *,
    batch_size: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> ReleaseView:
    """Release ``delivery_name`` on ``disk_name`` to the disk's users' secure project. ``progress``
    hears (files moved so far in this run, files the delivery has) after each committed batch."""
    if batch_size < 1:
        raise ValidationFailed({"batch_size": "must be at least 1"})
    with ctx.tx() as session:
        disk, delivery = _releasable(session, actor, disk_name, delivery_name)
        disk_id, delivery_id = disk.id, delivery.id
        users_key = PublicKey.from_pem(disk.users_secure.public_key)
        total = session.execute(
            select(func.count()).select_from(StoredFile).where(StoredFile.delivery_id == delivery_id)
        ).scalar_one()
        audit.record(
            session, actor, "delivery.release_started", "delivery", delivery_id,
            after={"disk": disk.name, "delivery": delivery.name, "files": total,
                   "users_project": disk.users_secure.identifier},
        )  # fmt: skip
        disk_key = private_key(ctx, disk)
    moved = 0
    while True:
        with ctx.tx() as session:
            count = _release_batch(session, actor, disk_id, delivery_id, disk_key, users_key, batch_size)
        if count == 0:
            break
        moved += count
        if progress is not None:
            progress(moved, total)
    return _finish(ctx, actor, disk_id, delivery_id, total, moved, disk_key, users_key)


def _release_batch(
    session: Session,
    actor: User,
    disk_id: str,
    delivery_id: str,
    disk_key: PrivateKey,
    users_key: PublicKey,
    batch_size: int,
) -> int:
    """Move one batch of files from the disk's headers to the users' (one transaction)."""
    delivery = session.execute(
        select(Delivery).where(Delivery.id == delivery_id).with_for_update()
    ).scalar_one()
    disk = session.get(SharedDisk, disk_id)
    assert disk is not None
    _refuse_released(disk, delivery)  # another run finished it meanwhile
    rows = session.execute(
        select(FileHeader, StoredFile.path)
        .join(StoredFile, StoredFile.id == FileHeader.file_id)
        .where(
            StoredFile.delivery_id == delivery_id,
            FileHeader.holder_kind == HeaderHolder.DISK.value,
            FileHeader.holder_id == disk_id,
        )
        .order_by(StoredFile.path)
        .limit(batch_size)
    ).all()
    if not rows:
        return 0
    users = disk.users_secure
    changes: list[Change] = []
    for_users = HeaderMaker(users_key)  # the batch's headers for the users' project, one key exchange
    for header, path in rows:
        record_header(session, header.file_id, users, for_users(read_data_key(header.header, disk_key)))
        changes.append(
            ("file.released", "file", header.file_id, {"holder": f"disk:{disk.name}"},
             {"holder": f"secure:{users.identifier}", "path": f"{delivery.name}/{path}"})
        )  # fmt: skip
    session.execute(
        delete(FileHeader).where(
            FileHeader.holder_kind == HeaderHolder.DISK.value,
            FileHeader.holder_id == disk_id,
            FileHeader.file_id.in_([header.file_id for header, _ in rows]),
        )
    )
    audit.record_many(session, actor, changes)
    return len(rows)


def _finish(
    ctx: Context, actor: User, disk_id: str, delivery_id: str, total: int, moved: int,
    disk_key: PrivateKey, users_key: PublicKey,
) -> ReleaseView:  # fmt: skip
    """Mark the delivery released and, when nothing unreleased is left on the disk, release the disk
    and drop its key (one transaction). A file stored with the delivery since the last batch (an
    analysis report) is moved here too, under the delivery's lock, so none is left behind."""
    now = utcnow()
    with ctx.tx() as session:
        disk = session.execute(
            select(SharedDisk).where(SharedDisk.id == disk_id).with_for_update(of=SharedDisk)
        ).scalar_one()
        delivery = session.execute(
            select(Delivery).where(Delivery.id == delivery_id).with_for_update()
        ).scalar_one()
        _refuse_released(disk, delivery)
        while count := _release_batch(session, actor, disk_id, delivery_id, disk_key, users_key, BATCH):
            moved += count
        delivery.released_at = now
        sync.on_delivery_released(ctx, session, delivery)  # now the users': long-term copies follow
        audit.record(
            session, actor, "delivery.released", "delivery", delivery.id,
            after={"disk": disk.name, "delivery": delivery.name, "files": total,
                   "users_project": disk.users_secure.identifier},
        )  # fmt: skip
        left = session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.shared_disk_id == disk.id, Delivery.released_at.is_(None))
        ).scalar_one()
        headers_left = session.execute(
            select(func.count())
            .select_from(FileHeader)
            .where(FileHeader.holder_kind == HeaderHolder.DISK.value, FileHeader.holder_id == disk.id)
        ).scalar_one()
        if left == 0 and headers_left == 0:
            _release_disk(session, actor, disk, now)
        notify(
            ctx, session, both_sides(session, disk),
            f"[levere] Delivery {delivery.name} was released to {disk.users_secure.identifier}",
            f"Delivery {delivery.name} ({total} files) on shared disk {disk.name} now belongs to secure "
            f"project {disk.users_secure.identifier}. The facility can no longer read it."
            + (f"\nNothing is left on {disk.name}: it is released and its keys are destroyed.\n"
               if disk.state != DiskState.OPEN.value else "\n"),
        )  # fmt: skip
        return ReleaseView(
            disk=disk.name,
            delivery=delivery.name,
            users_project=disk.users_secure.identifier,
            files=total,
            moved=moved,
            released_at=now,
            disk_state=disk.state,
        )


def _release_disk(session: Session, actor: User, disk: SharedDisk, now: datetime) -> None:
    """Nothing unreleased is left: the disk is released (or, past its end date, destroyed) and its
    private key dropped, so nothing encrypted to it opens again."""
    before = DiskState(disk.state)
    target = DiskState.RELEASED if before is DiskState.OPEN else DiskState.DESTROYED
    disk.state = disk_transition(before, target, disk.name).value
    disk.wrapped_private_key = None
    disk.master_key_id = None
    if target is DiskState.RELEASED:
        disk.released_at = now
    disk.destroyed_at = now if target is DiskState.DESTROYED else disk.destroyed_at
    audit.record(
        session, actor, f"disk.{target.value}", "shared_disk", disk.id,
        before={"state": before.value}, after={"state": disk.state, "keys": "dropped"},
    )  # fmt: skip


# --- the job --------------------------------------------------------------------------------


def request_release(ctx: Context, actor: User, disk_name: str, delivery_name: str) -> JobRunView:
    """Start the release of a delivery as a job run (queued once this commits), after every check
    the release itself makes, so that a request it would refuse is refused here, with its reason.
    A release of the delivery already queued or under way is the answer: there is never a second."""
    with ctx.tx() as session:
        disk, delivery = _releasable(session, actor, disk_name, delivery_name)
        # two requests at once take turns here, so only one of them creates the run
        session.execute(select(Delivery.id).where(Delivery.id == delivery.id).with_for_update())
        running = session.execute(
            select(JobRun).where(
                JobRun.delivery_id == delivery.id,
                JobRun.kind == JobKind.RELEASE.value,
                JobRun.state.in_([s.value for s in ACTIVE]),
            )
        ).scalar()
        if running is not None:
            return run_view(session, running)
        total = session.execute(
            select(func.count()).select_from(StoredFile).where(StoredFile.delivery_id == delivery.id)
        ).scalar_one()
        project = session.get(Project, delivery.project_id)
        run = new_run(ctx, session, JobKind.RELEASE, project, delivery=delivery, actor=actor)
        run.files_total = total
        audit.record(
            session, actor, "delivery.release_requested", "delivery", delivery.id,
            after={"job": run.id, "disk": disk.name, "files": total,
                   "users_project": disk.users_secure.identifier},
        )  # fmt: skip
        return run_view(session, run)


@dataclass(frozen=True)
class _Attempt:
    actor: User
    disk: str
    delivery: str
    #: files of the delivery an earlier attempt already moved
    moved_before: int
    #: the delivery was released already (an earlier attempt stopped before closing the run)
    released: ReleaseView | None


def _start(ctx: Context, run_id: str) -> _Attempt | None:
    """Mark the run running; what the attempt works on, or None for a run already finished."""
    with ctx.tx() as session:
        found = disk_run(session, run_id)
        if found is None:
            return None
        run, delivery, disk = found
        actor = session.get(User, run.created_by_id) if run.created_by_id else None
        if actor is None:
            raise NotFound(f"job {run_id} names no one who asked for it")
        total = session.execute(
            select(func.count()).select_from(StoredFile).where(StoredFile.delivery_id == delivery.id)
        ).scalar_one()
        on_disk = session.execute(
            select(func.count())
            .select_from(FileHeader)
            .join(StoredFile, StoredFile.id == FileHeader.file_id)
            .where(
                StoredFile.delivery_id == delivery.id,
                FileHeader.holder_kind == HeaderHolder.DISK.value,
                FileHeader.holder_id == disk.id,
            )
        ).scalar_one()
        run.state = job_run_transition(run.state, JobRunState.RUNNING, f"job {run.id}")
        run.started_at = run.started_at or utcnow()
        run.files_total, run.files_done = total, total - on_disk
        released = None
        if delivery.released_at is not None:
            released = ReleaseView(
                disk=disk.name, delivery=delivery.name, users_project=disk.users_secure.identifier,
                files=total, moved=0, released_at=delivery.released_at, disk_state=disk.state,
            )  # fmt: skip
        session.expunge(actor)  # the attempt acts as whoever asked, in transactions of its own
        return _Attempt(actor, disk.name, delivery.name, total - on_disk, released)


def _note_progress(ctx: Context, run_id: str, files_done: int) -> None:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        if run is not None:
            run.files_done = files_done


def run_release(ctx: Context, run_id: str) -> None:
    """One attempt at a release run (the job's work, see :mod:`levere.jobs.dispatch`). A retry
    goes on with the files an earlier attempt left on the disk, as :func:`release` does."""
    started = _start(ctx, run_id)
    if started is None:
        return
    done = started.released
    if done is None:
        before = started.moved_before

        def progress(moved: int, total: int) -> None:
            _note_progress(ctx, run_id, min(before + moved, total))

        done = release(
            ctx, started.actor, started.disk, started.delivery, batch_size=BATCH, progress=progress
        )
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        run.state = job_run_transition(run.state, JobRunState.DONE, f"job {run.id}")
        run.files_total = run.files_done = done.files
        run.finished_at = utcnow()
        run.error = ""
        run.report = {
            "disk": done.disk,
            "users_project": done.users_project,
            "files": done.files,
            "moved": done.moved,
            "disk_state": done.disk_state,
            "released_at": done.released_at.isoformat(),
        }
