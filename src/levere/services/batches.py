"""Many small files in one request: a tar stream written into a delivery as it arrives.

Design notes
------------
* One HTTP round trip per small file cannot keep up with ``rsync``; a batch carries thousands.
  Everything per batch happens once: the permission and state checks, loading the delivery's
  existing paths, the quota reservation (the request's ``Content-Length`` up front, or as it goes).
* Per file: the member's path is checked here, then it is read whole (it is small) and handed to
  :class:`~levere.dataplane.small_writes.SmallWrites`, which hashes it in one pass, compares it with
  the checksums the client put in its PAX header, and only then publishes it under its final name
  in one step, without an fsync of its own (``Backend.write_small``), in groups: in worker
  processes where the backend gains from them (a local disk), on an object store on threads, so
  that the hashing and the file system's work (or an object store's round trips) overlap the
  parsing and recording of the next members.
* Per chunk of files (:data:`CHUNK_FILES` or :data:`CHUNK_BYTES`), and when the body ends or breaks:
  one ``flush()`` makes every published file durable, then one transaction records them all with
  bulk inserts and turns their part of the reservation into usage. Once the next chunk is handed
  over, a chunk's files are written (or nearly): its ``flush()`` (a ``syncfs``, tens of
  milliseconds) then runs on a thread of its own while the parsing goes on, and it is recorded
  at the end of the chunk after, so that neither the children nor the parsing wait for the disk
  or the database. (Recording stays on the parsing thread: SQLite gives Python's lock up at
  every row, and two busy threads would take turns at it.) A broken connection keeps every file
  completed before the break.
* Members too large to hold in memory are streamed to a normal (fsynced) writer.
* The reservation lives in an ``uploads`` row of kind ``batch`` (its ``length`` is what the batch
  still holds reserved), so if the process dies the expiry job gives it back
  (:mod:`levere.services.batch_reservation`).
* A delivery on a shared disk takes batches too, with a second factor: the secure tier's layer
  encrypts every member under its own data key, the disk's quota counts them, and each file is
  recorded with its body's checksum and a header for the disk (:mod:`levere.services.zone_batches`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from levere.context import Context
from levere.dataplane import SmallWrites, new_owner
from levere.db.models import Delivery, Project, SharedDisk, StoredFile, Upload, User, utcnow
from levere.domain.deliveries import UploadState
from levere.domain.errors import InvalidPath, LevereError, QuotaExceeded, ValidationFailed
from levere.domain.paths import check_key_fits, check_relative_path
from levere.domain.replicas import ReplicaState
from levere.domain.roles import Action
from levere.domain.tiers import Tier
from levere.services import audit, zone_uploads
from levere.services.batch_reservation import (
    BATCH_EXPIRY,
    BATCH_LEASE,
    AreaQuota,
    DiskQuota,
    Quota,
    Reservation,
)
from levere.services.deliveries import (
    FileView,
    NewFile,
    area_key,
    folders_of,
    key_limits,
    open_for_upload,
    record_files,
)
from levere.services.projects import authorize
from levere.services.zone_batches import ZoneBatch
from levere.storage import Backend
from levere.transfer import wire
from levere.transfer.pipe import ByteSource
from levere.transfer.tarstream import ArchiveTruncated, Member, TarReader

log = logging.getLogger(__name__)

CHUNK_FILES = 2000
CHUNK_BYTES = 256 * 1024 * 1024
#: members up to this size are read whole; larger ones are streamed
IN_MEMORY = 8 * 1024 * 1024
#: when reserving as the batch goes, reserve at least this much at a time
TOP_UP = 64 * 1024 * 1024
TAR_TYPES = ("application/x-tar", "application/tar")

# Paths being written by batches of this process, per delivery: two batches sent in parallel with
# the same path would otherwise both publish it before either records it.
_claims: dict[str, set[str]] = {}
_claims_lock = threading.Lock()


@dataclass
class Failure:
    path: str
    error: str
    message: str
    #: for a checksum mismatch: the checksums of the bytes that arrived
    md5: str | None = None
    sha256: str | None = None


@dataclass
class BatchResult:
    stored: list[FileView] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class _Known:
    size: int
    md5: str
    sha256: str


@contextmanager
def _claimed(delivery_id: str) -> Iterator[set[str]]:
    mine: set[str] = set()
    try:
        yield mine
    finally:
        with _claims_lock:
            taken = _claims.get(delivery_id, set())
            taken -= mine
            if not taken:
                _claims.pop(delivery_id, None)


def _claim(delivery_id: str, mine: set[str], path: str) -> bool:
    with _claims_lock:
        taken = _claims.setdefault(delivery_id, set())
        if path in taken:
            return False
        taken.add(path)
        mine.add(path)
        return True


def _start(
    ctx: Context,
    actor: User,
    identifier: str,
    name: str,
    content_length: int | None,
    content_type: str,
    second_factor: bool,
) -> tuple[Project, Delivery, dict[str, _Known], set[str], Reservation, ZoneBatch | None]:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DELIVERY_UPLOAD)
        if content_type.split(";")[0].strip().lower() not in TAR_TYPES:
            raise ValidationFailed(
                {"Content-Type": f"send the batch as {TAR_TYPES[0]}, not {content_type!r}"}
            )
        delivery = open_for_upload(session, project, name)
        landing = zone_uploads.upload_placement(project, delivery).tier
        disk = zone_uploads.check_upload(session, actor, delivery, second_factor)
        quota: Quota = DiskQuota(disk.id) if disk is not None else AreaQuota(project.id, landing)
        known = {
            row[0]: _Known(row[1], row[2], row[3])
            for row in session.execute(
                select(StoredFile.path, StoredFile.size, StoredFile.md5, StoredFile.sha256).where(
                    StoredFile.delivery_id == delivery.id
                )
            ).all()
        }
        busy = set(
            session.execute(
                select(Upload.path).where(
                    Upload.delivery_id == delivery.id,
                    Upload.state == UploadState.ACTIVE,
                    Upload.kind == "tus",
                )
            ).scalars()
        )
        held = 0
        if content_length:
            # the whole body up front if it fits (it is a little larger than the files in it);
            # otherwise file by file as they arrive, so that what fits is still stored
            try:
                quota.reserve(session, content_length, "the batch")
                held = content_length
            except QuotaExceeded:
                held = 0
        row = Upload(
            delivery_id=delivery.id,
            project_id=project.id,
            path="",
            length=held,
            backend_id=ctx.backend(landing).backend_id,
            key=area_key(project.identifier, delivery.name, ""),
            created_by_id=actor.id,
            expires_at=utcnow() + BATCH_EXPIRY,
            lease_owner=new_owner(),
            lease_expires_at=utcnow() + BATCH_LEASE,
            kind="batch",
        )
        session.add(row)
        session.flush()
        reservation = Reservation(ctx, row.id, quota, landing, held, 0 if content_length else TOP_UP)
        return project, delivery, known, busy, reservation, _zone(ctx, landing, delivery, disk)


def _zone(ctx: Context, landing: Tier, delivery: Delivery, disk: SharedDisk | None) -> ZoneBatch | None:
    if disk is None:
        return None
    return ZoneBatch(ctx.backend(landing), delivery.id, disk.id, disk.name, disk.public_key)


class _Small(NamedTuple):
    """A small file handed over to be published, with what its member said it holds (a tuple:
    one is made per file)."""

    path: str
    size: int
    key: str
    expect_md5: str
    expect_sha256: str


class _Batch:
    def __init__(
        self,
        ctx: Context,
        actor: User,
        project: Project,
        delivery: Delivery,
        known: dict[str, _Known],
        busy: set[str],
        reservation: Reservation,
        claims: set[str],
        zone: ZoneBatch | None = None,
    ) -> None:
        self.ctx = ctx
        self.actor = actor
        self.project = project
        self.delivery = delivery
        self.known = known
        self.busy = busy
        self.reservation = reservation
        self.claims = claims
        #: for a delivery on a shared disk: what each file's header is made from, and the checks
        self.zone = zone
        #: the tier where the batch's files land, and its backend
        self.landing = reservation.tier
        self.backend: Backend = ctx.backend(self.landing)
        # read once: attributes of database rows cost more to read than plain ones, per file
        self.delivery_id = delivery.id
        self.key_prefix = area_key(project.identifier, delivery.name, "")
        self.limits = key_limits(ctx, project)
        self.result = BatchResult()
        #: big members, streamed to their writers and complete, not yet recorded
        self.streamed: list[NewFile] = []
        #: files and bytes accepted in the current chunk (see :meth:`_end_chunk`)
        self.chunk_files = 0
        self.chunk_bytes = 0
        #: bytes accepted and not yet recorded or refused: what the reservation must cover
        self.unrecorded = 0
        #: where the previous chunk ends among the small writes, once it is handed over
        self.previous_chunk: int | None = None
        #: a chunk being made durable on the flushing thread, and its files, to record once it is
        self.flushing: tuple[Future[None], list[NewFile]] | None = None
        self.flusher = ThreadPoolExecutor(1, "levere-flush")
        self.seen: set[str] = set()
        #: paths stored or being stored, and every folder they lie in (a name cannot be both)
        self.accepted: set[str] = set()
        self.folders = {folder for path in (*known, *busy) for folder in folders_of(path)}
        self.quota_error: QuotaExceeded | None = None
        self.writes: SmallWrites[_Small] = SmallWrites(self.backend, ctx.settings.ingest_processes)

    def fail(self, path: str, error: str, message: str, **arrived: str) -> None:
        self.result.failed.append(Failure(path, error, message, **arrived))

    def member(self, reader: TarReader, m: Member) -> None:
        name = m.name[2:] if m.name.startswith("./") else m.name
        if m.kind == "directory":
            return
        if m.kind != "file":
            self.fail(name, "not_a_file", f"{name} is a {m.kind}, not a regular file; it was not stored")
            return
        try:
            path = check_relative_path(name)
            if "\ufffd" in path:
                raise InvalidPath(f"{name!r} is not valid UTF-8")
            key = self.key_prefix + path
            check_key_fits(path, key, self.limits)
        except InvalidPath as exc:
            self.fail(name, exc.code, exc.message)
            return
        if path in self.seen:
            self.fail(path, "duplicate", f"{path} appears twice in this batch; the first copy was kept")
            return
        self.seen.add(path)
        expect_md5 = m.pax.get(wire.PAX_MD5, "").lower()
        expect_sha256 = m.pax.get(wire.PAX_SHA256, "").lower()
        existing = self.known.get(path)
        if existing is not None or path in self.busy:
            self._already(reader, m, path, existing, expect_md5, expect_sha256)
            return
        parents = folders_of(path) if "/" in path else []
        clash = self._clash(path, parents)
        if clash is not None:
            self.fail(path, "path_conflict", f"{path} cannot be stored: {clash}, and a name cannot be both")
            return
        if not _claim(self.delivery_id, self.claims, path):
            self.fail(path, "already_exists", f"{path} is being uploaded by another request")
            return
        try:
            self.reservation.need(self.unrecorded + m.size, path, m.size)
        except QuotaExceeded as exc:
            self.fail(path, exc.code, exc.message)
            self.quota_error = exc
            return
        if m.size <= IN_MEMORY:
            small = _Small(path, m.size, key, expect_md5, expect_sha256)
            self.writes.add(small, key, reader.read_all(), expect_md5, expect_sha256, path)
        else:
            digests = self._stream(reader, key, m.size, expect_md5, expect_sha256, path)
            if digests is None:
                return
            self.streamed.append(NewFile(path, m.size, *digests, key))
        self.accepted.add(path)
        self.folders.update(parents)
        self.unrecorded += m.size
        self.chunk_files += 1
        self.chunk_bytes += m.size
        if self.chunk_files >= CHUNK_FILES or self.chunk_bytes >= CHUNK_BYTES:
            self._end_chunk()

    def _clash(self, path: str, parents: list[str]) -> str | None:
        if path in self.folders:
            return f"{path} is a folder in this delivery"
        for folder in parents:
            if folder in self.folders:  # already known to be a folder, so not a file
                continue
            if folder in self.known or folder in self.busy or folder in self.accepted:
                return f"{folder} is a file in this delivery"
        return None

    def _stream(
        self, reader: TarReader, key: str, size: int, expect_md5: str, expect_sha256: str, path: str
    ) -> tuple[str, str] | None:
        md5h = hashlib.md5(usedforsecurity=False)
        shah = hashlib.sha256()
        with self.backend.open_writer(key, size_hint=size) as writer:
            while piece := reader.read(4 * 1024 * 1024):
                md5h.update(piece)
                shah.update(piece)
                writer.write(bytes(piece))
            md5, sha256 = md5h.hexdigest(), shah.hexdigest()
            if (expect_md5 and expect_md5 != md5) or (expect_sha256 and expect_sha256 != sha256):
                writer.abort()
                self._mismatch(path, md5, sha256, expect_md5, expect_sha256)
                return None
            writer.commit()
        if self.zone is not None:
            self.zone.streamed(path, writer)
        return md5, sha256

    def _mismatch(self, path: str, md5: str, sha256: str, expect_md5: str, expect_sha256: str) -> None:
        wrong = [
            f"{name} {have} (expected {want})"
            for name, want, have in (("MD5", expect_md5, md5), ("SHA-256", expect_sha256, sha256))
            if want and want != have
        ]
        self.fail(
            path, "checksum_mismatch", f"{path} arrived with {', '.join(wrong)}; it was not stored",
            md5=md5, sha256=sha256,
        )  # fmt: skip

    def _already(
        self,
        reader: TarReader,
        m: Member,
        path: str,
        existing: _Known | None,
        expect_md5: str,
        expect_sha256: str,
    ) -> None:
        """A path the delivery holds: the same bytes again count as stored (a resent batch), when
        they are also the bytes the member says they are."""
        if existing is not None and existing.size == m.size and m.size <= IN_MEMORY:
            data = reader.read_all()
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            sha256 = hashlib.sha256(data).hexdigest()
            if (expect_md5 and expect_md5 != md5) or (expect_sha256 and expect_sha256 != sha256):
                self._mismatch(path, md5, sha256, expect_md5, expect_sha256)
                return
            if md5 == existing.md5 and sha256 == existing.sha256:
                self.result.stored.append(self._view(path, existing.size, existing.md5, existing.sha256))
                return
        what = "is already in the delivery" if existing is not None else "is being uploaded"
        self.fail(path, "already_exists", f"{path} {what} with other content; it was not replaced")

    def _view(self, path: str, size: int, md5: str, sha256: str) -> FileView:
        return FileView(
            path=path,
            size=size,
            md5=md5,
            sha256=sha256,
            created_at=utcnow(),
            tiers={self.landing.value: ReplicaState.PRESENT.value},
        )

    def _end_chunk(self) -> None:
        """Every file of a chunk is handed over. The chunk before it is written by now (or nearly):
        it is made durable on the flushing thread while this one parses on, and recorded at the
        next chunk's end, so that neither the writers nor the parsing wait for the disk or the
        database more than they must."""
        until = self.writes.mark()
        self.chunk_files = self.chunk_bytes = 0
        if self.previous_chunk is not None:
            self._record_flushed()
            files, error = self._collect(self.previous_chunk)
            if error is not None:
                self._store(files)
                raise error
            if files:
                self.flushing = (self.flusher.submit(self.backend.flush), files)
        self.previous_chunk = until

    def commit(self) -> None:
        """Make every file written so far durable, then record them and settle their quota. A
        write that failed is raised once the files stored before it are recorded."""
        self._record_flushed()
        files, error = self._collect(None)
        self._store(files)
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.writes.close()
        finally:
            self.flusher.shutdown()

    def _collect(self, until: int | None) -> tuple[list[NewFile], LevereError | None]:
        """The files written (those handed over before ``until``, see :meth:`SmallWrites.mark`; all
        of them without it), with the storage error that stopped the writes, if one did; files
        whose bytes did not match are reported here."""
        written = self.writes.drain(until)
        for small, md5, sha256 in written.mismatched:
            self._mismatch(small.path, md5, sha256, small.expect_md5, small.expect_sha256)
            self.accepted.discard(small.path)
            self.unrecorded -= small.size
        self.unrecorded -= sum(small.size for small in written.unwritten)
        if self.zone is not None:
            for small, _md5, _sha256, sealed in written.stored:
                self.zone.sealed(small.path, sealed)
        files = self.streamed + [
            NewFile(small.path, small.size, md5, sha256, small.key)
            for small, md5, sha256, _ in written.stored
        ]
        self.streamed = []
        return files, written.error

    def _record_flushed(self) -> None:
        """Record the chunk whose flush was started, once it is durable (a failed flush raises
        here, and its files are not recorded)."""
        if self.flushing is None:
            return
        flushed, files = self.flushing
        self.flushing = None
        flushed.result()
        self._record_checked(files)

    def _store(self, files: list[NewFile]) -> None:
        """Make ``files`` durable and record them, now."""
        if files:
            self.backend.flush()
            self._record_checked(files)

    def _record_checked(self, files: list[NewFile]) -> None:
        try:
            self._record(files)
        except IntegrityError:
            # another process recorded some of these paths meanwhile: record the rest, report those
            with self.ctx.tx() as session:
                taken = set(
                    session.execute(
                        select(StoredFile.path).where(
                            StoredFile.delivery_id == self.delivery.id,
                            StoredFile.path.in_([f.path for f in files]),
                        )
                    ).scalars()
                )
            for f in files:
                if f.path in taken:
                    self.fail(
                        f.path, "already_exists", f"{f.path} was stored by another request at the same time"
                    )
                    self.unrecorded -= f.size
            self._record([f for f in files if f.path not in taken])

    def _record(self, files: list[NewFile]) -> None:
        if not files:
            return
        nbytes = sum(f.size for f in files)
        try:
            with self.ctx.tx() as session:
                if self.zone is not None:
                    self.zone.check_open(session, self.delivery.name)
                ids = record_files(session, self.delivery, self.backend.backend_id, files, self.landing)
                if self.zone is not None:
                    self.zone.record(session, self.actor, ids, files)
                self.reservation.use(session, nbytes)
                audit.record(
                    session, self.actor, "delivery.files_stored", "delivery", self.delivery.id,
                    after={"files": len(files), "bytes": nbytes, "paths": [f.path for f in files]},
                )  # fmt: skip
        except LevereError:
            if self.zone is not None:  # refused (a release came first): nothing of the chunk is kept
                self.zone.drop(files)
            raise
        self.unrecorded -= nbytes
        now, tiers = utcnow(), {self.landing.value: ReplicaState.PRESENT.value}
        self.result.stored += [
            FileView(path=f.path, size=f.size, md5=f.md5, sha256=f.sha256, created_at=now, tiers=tiers)
            for f in files
        ]


def ingest(
    ctx: Context,
    actor: User,
    identifier: str,
    name: str,
    source: ByteSource,
    content_length: int | None = None,
    content_type: str = TAR_TYPES[0],
    *,
    second_factor: bool = False,
) -> BatchResult:
    """Store every regular file of the tar stream ``source`` in the delivery. Runs in a worker thread;
    the body is read only after the permission and state checks. ``second_factor``: the caller's
    sign-in proved one (needed on a shared disk)."""
    project, delivery, known, busy, reservation, zone = _start(
        ctx, actor, identifier, name, content_length, content_type, second_factor
    )
    with _claimed(delivery.id) as claims:
        batch = _Batch(ctx, actor, project, delivery, known, busy, reservation, claims, zone)
        reader = TarReader(source)
        try:
            while (m := reader.next()) is not None:
                batch.member(reader, m)
                reservation.renew()
        except ArchiveTruncated as exc:
            batch.fail("", "incomplete", exc.reason + "; the files before it were stored")
        except ValidationFailed as exc:
            batch.fail("", "invalid_archive", exc.message + "; the files before it were stored")
        finally:
            try:
                batch.commit()
            finally:
                batch.close()
                source.close()
                reservation.give_back()
    if batch.quota_error is not None and not batch.result.stored:
        raise batch.quota_error
    return batch.result
