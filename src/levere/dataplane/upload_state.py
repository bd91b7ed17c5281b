"""The machinery under one tus upload's writes: saved checksum checkpoints, the write lease, and
the writer that hands a request's body to the storage while hashing it.

Design notes
------------
* The hash state is saved in the upload row wherever bytes become durable: at the end of each
  request, and, for backends that cannot read staged bytes back (S3), just before each step (part)
  that the backend makes durable. Two checkpoints are kept, the last confirmed one and the pending
  one, so that whatever offset the backend reports after a crash, a state for it exists. On the
  local backend a process killed in the middle of a request leaves an offset between checkpoints:
  the state is then rebuilt once by reading the staged bytes back.
* One writer at a time: a request takes a lease on the row (owner, expiry) in a short transaction
  and renews it while it writes. A lease whose owner is gone (same host, process not alive) or
  expired is taken over; otherwise the next request waits for it.
* Each buffer is hashed on helper threads (SHA-256 on one, MD5 on another) while the backend writes
  it; all three release the GIL, so with free cores the checksums add little time to the copy.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import update

from levere.context import Context
from levere.dataplane.leases import held
from levere.db.models import Delivery, Project, Upload, utcnow
from levere.domain.deliveries import UploadState
from levere.domain.errors import Conflict, NotFound, StorageUnavailable
from levere.domain.tiers import Purpose, tiers_for
from levere.storage import Backend
from levere.transfer.hashing import Digests, StreamHash, new_hash, restore_hash
from levere.transfer.pipe import ByteSource

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)
RENEW_EVERY = 10.0


# --- saved checksum state --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    offset: int
    state: str | None


@dataclass(frozen=True)
class Checkpoints:
    confirmed: Checkpoint | None = None
    pending: Checkpoint | None = None

    def encode(self) -> str:
        def one(cp: Checkpoint | None) -> list[Any] | None:
            return None if cp is None else [cp.offset, cp.state]

        return json.dumps({"confirmed": one(self.confirmed), "pending": one(self.pending)})

    @classmethod
    def decode(cls, text: str) -> Checkpoints:
        try:
            data = json.loads(text) if text else {}

            def one(raw: Any) -> Checkpoint | None:
                return None if not raw else Checkpoint(int(raw[0]), raw[1])

            return cls(one(data.get("confirmed")), one(data.get("pending")))
        except (ValueError, TypeError, IndexError, AttributeError):
            return cls()


# --- what the API answers with ---------------------------------------------------------------------


@dataclass
class UploadView:
    id: str
    project: str
    delivery: str
    path: str
    length: int
    offset: int
    state: str
    expires_at: datetime
    digests: Digests | None = None


@dataclass(frozen=True)
class Snapshot:
    """A detached snapshot of an upload row and where it belongs."""

    id: str
    project_id: str
    project: str
    delivery_id: str
    delivery: str
    path: str
    length: int
    offset: int
    state: str
    key: str
    backend_id: str
    session: str
    hash_state: str
    expect_md5: str
    expect_sha256: str
    expires_at: datetime

    @classmethod
    def of(cls, upload: Upload, project: Project, delivery: Delivery) -> Snapshot:
        return cls(
            id=upload.id,
            project_id=project.id,
            project=project.identifier,
            delivery_id=delivery.id,
            delivery=delivery.name,
            path=upload.path,
            length=upload.length,
            offset=upload.offset,
            state=upload.state,
            key=upload.key,
            backend_id=upload.backend_id,
            session=upload.session,
            hash_state=upload.hash_state,
            expect_md5=upload.expect_md5,
            expect_sha256=upload.expect_sha256,
            expires_at=upload.expires_at,
        )

    def view(
        self, offset: int | None = None, state: str | None = None, digests: Digests | None = None
    ) -> UploadView:
        return UploadView(
            id=self.id,
            project=self.project,
            delivery=self.delivery,
            path=self.path,
            length=self.length,
            offset=self.offset if offset is None else offset,
            state=state or self.state,
            expires_at=self.expires_at,
            digests=digests,
        )


def expiry(ctx: Context) -> datetime:
    return utcnow() + timedelta(hours=ctx.settings.upload_expiry_hours)


def gone(up: Snapshot | Upload) -> NotFound:
    return NotFound(f"the upload of {up.path} is {up.state}; start it again", state=up.state)


def backend_for(ctx: Context, backend_id: str) -> Backend:
    """The backend an upload was started on: one of the tiers where deliveries land (an area,
    or a shared disk's tier)."""
    for tier in (*tiers_for(Purpose.LANDING), *tiers_for(Purpose.SHARED_DISK)):
        backend = ctx.backend(tier)
        if backend.backend_id == backend_id:
            return backend
    raise StorageUnavailable(
        f"this upload was started on storage {backend_id!r}, which this server no longer uses"
    )


class LeaseBusy(Exception):
    pass


class BodyTooLong(Exception):
    """A request's body goes on past the upload's last byte (found before that byte is handed
    to the storage, so that the request can be taken back whole)."""


def take_lease(upload: Upload, owner: str) -> None:
    now = utcnow()
    if held(upload.lease_owner, upload.lease_expires_at, now):
        raise LeaseBusy
    upload.lease_owner = owner
    upload.lease_expires_at = now + LEASE


def release_lease(ctx: Context, upload_id: str, owner: str) -> None:
    try:
        with ctx.tx() as session:
            session.execute(
                update(Upload)
                .where(Upload.id == upload_id, Upload.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )
    except Exception:  # the lease expires by itself; never hide the request's own error
        log.exception("could not release the lease on upload %s", upload_id)


def restore_state(up: Snapshot, backend: Backend, staged: str, durable: int) -> StreamHash | None:
    """The checksum state after the ``durable`` bytes the storage holds: from a saved checkpoint,
    else rebuilt once by reading the bytes back (where the backend can), else ``None`` (lost)."""
    saved = Checkpoints.decode(up.hash_state)
    for cp in (saved.pending, saved.confirmed):
        if cp is not None and cp.offset == durable:
            restored = restore_hash(durable, cp.state)
            if restored is not None:
                return restored
    if durable == 0:
        return new_hash()
    if backend.staged_step(staged) is None:
        log.info("rebuilding the checksum state of upload %s from %d stored bytes", up.id, durable)
        rebuilt = new_hash()
        for chunk in backend.read_staged(staged):
            rebuilt.update(chunk)
        if rebuilt.offset != durable:
            raise Conflict("the stored bytes changed while they were being read; try again")
        return rebuilt
    return None


class Writer:
    """Hands a body to the backend, hashing in the same pass, saving checkpoints where bytes become
    durable, and renewing the lease."""

    def __init__(
        self, ctx: Context, up: Snapshot, staged: str, backend: Backend, hasher: StreamHash, owner: str
    ) -> None:
        self.ctx = ctx
        self.up = up
        self.staged = staged
        self.backend = backend
        self.hasher = hasher
        self.owner = owner
        self.step = backend.staged_step(staged)
        self.pos = hasher.offset
        self.confirmed = Checkpoint(self.pos, hasher.export())
        self.pending: Checkpoint | None = None
        self.renewed = time.monotonic()

    def run(self, source: ByteSource) -> int:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="levere-sha256") as self._hashing,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="levere-md5") as self._md5,
        ):
            return self._run(source)

    def _run(self, source: ByteSource) -> int:
        while self.pos < self.up.length:
            first = source.next_buffer()
            if first is None:
                break
            source.unread(first)
            if self.step is None:
                end = self.up.length
            else:
                end = min(self.up.length, (self.pos // self.step + 1) * self.step)
            chunks = cast(Iterator[bytes], self._segment(source, end))
            got = self.backend.append_staged(self.staged, self.pos, chunks)
            if got < self.pos < end and self.confirmed is not None and got == self.confirmed.offset:
                # the storage keeps only whole steps (an encrypting layer stores whole segments):
                # the part of a step this request carried is dropped, the upload resumes from the
                # step's start, where the confirmed checkpoint is
                self.pos = got
                break
            if got != self.pos or self.pending is None or self.pending.offset != got:
                raise Conflict(f"the storage kept {got} bytes where {self.pos} were sent; resume the upload")
            self.confirmed = self.pending
        return self.pos

    def _segment(self, source: ByteSource, end: int) -> Iterator[bytes | bytearray | memoryview]:
        # Each buffer is hashed on the helper threads while the backend writes it; the hash must
        # have caught up before the next buffer is handed over or a checkpoint is saved.
        hashing: Future[None] | None = None
        # the buffer hashed and written last: the source may reuse it once its hash is done,
        # unless part of it went back to the source (that part gives it back when it is done)
        done_with: bytes | bytearray | memoryview | None = None
        try:
            while self.pos < end:
                buf = source.next_buffer()
                if buf is None:
                    break
                room = end - self.pos
                whole = True
                if end == self.up.length and (len(buf) > room or (len(buf) == room and _more(source))):
                    # the upload's last byte is in this buffer and the body goes on past it
                    raise BodyTooLong
                if len(buf) > room:
                    view = memoryview(buf)
                    source.unread(view[room:])
                    buf, whole = view[:room], False
                if hashing is not None:
                    hashing.result()
                    if done_with is not None:
                        source.recycle(done_with)
                done_with = buf if whole else None
                hashing = self._hashing.submit(self.hasher.update, buf, self._md5)
                self.pos += len(buf)
                if self.step is not None and self.pos == end:
                    hashing.result()
                    self._save_pending()  # the backend makes this step durable as soon as it has it
                elif time.monotonic() - self.renewed > RENEW_EVERY:
                    hashing.result()
                    self._save_pending()
                yield buf
        finally:
            if hashing is not None:
                hashing.result()
        if self.pending is None or self.pending.offset != self.pos:
            self._save_pending()

    def checkpoint_at(self, offset: int) -> Checkpoint | None:
        """The checksum state this request reached at ``offset``, if it is one the writer holds
        (where it began, or the end of the last step the storage made durable)."""
        return self.confirmed if self.confirmed is not None and self.confirmed.offset == offset else None

    def _save_pending(self) -> None:
        pending = Checkpoint(self.pos, self.hasher.export())
        with self.ctx.tx() as session:
            done = session.execute(
                update(Upload)
                .where(
                    Upload.id == self.up.id,
                    Upload.lease_owner == self.owner,
                    Upload.state == UploadState.ACTIVE,
                )
                .values(
                    hash_state=Checkpoints(self.confirmed, pending).encode(),
                    lease_expires_at=utcnow() + LEASE,
                )
            ).rowcount  # type: ignore[attr-defined]
        if done != 1:
            raise Conflict("the upload was cancelled or taken over while this request was writing to it")
        self.pending = pending
        self.renewed = time.monotonic()


def _more(source: ByteSource) -> bool:
    """Whether the body has bytes left (waits for the client to send more or to end it)."""
    while (extra := source.next_buffer()) is not None:
        if len(extra):
            source.unread(extra)
            return True
    return False
