"""Resumable uploads of single files over tus: create, status, append, terminate, expire.

Design notes
------------
* Quota: the whole ``Upload-Length`` is reserved when the upload is created, in the transaction that
  checks the free space (:func:`levere.services.quotas.reserve` locks the quota row), before any byte
  moves. Completion turns the reservation into usage; failure, termination and expiry give it back.
* The backend's staged offset is the durable truth (it survives a crash); the database offset is
  only updated at the end of each request, never per chunk.
* Checksums: MD5 and SHA-256 are computed while the bytes go to the backend, and their state is
  saved where bytes become durable, so any process can continue after a crash; the machinery is
  in :mod:`levere.dataplane.upload_state`.
* One writer at a time per upload (a lease in its row); HEAD waits a moment for a request still
  writing, so that a client resuming right after a broken connection gets the final offset.
* Permission and state checks come first, then protocol headers, then I/O; the body is not read
  until they have passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.dataplane import (
    BodyTooLong,
    Checkpoint,
    Checkpoints,
    LeaseBusy,
    Snapshot,
    UploadView,
    Writer,
    backend_for,
    expiry,
    gone,
    new_owner,
    release_lease,
    restore_state,
    take_lease,
)
from levere.db.models import Delivery, ProjectFacility, ProjectMember, Upload, User
from levere.domain.deliveries import DeliveryState, UploadState, upload_transition
from levere.domain.errors import (
    AccessDenied,
    ChecksumMismatch,
    CiphertextDamaged,
    Conflict,
    EncryptedToAnotherKey,
    LevereError,
    NotCrypt4GH,
    NotFound,
    StorageFull,
    ValidationFailed,
)
from levere.domain.paths import check_relative_path
from levere.domain.roles import Action, ProjectRole, Subject, UserKind, allowed, who_can
from levere.domain.tiers import Tier
from levere.services import audit, quotas, zone_uploads
from levere.services.deliveries import (
    NewFile,
    check_fits,
    check_path_free,
    key_limits,
    open_for_upload,
    record_files,
)
from levere.services.projects import authorize, landing_tier
from levere.services.upload_rows import abort_quietly, fail_upload, load_upload
from levere.storage import Backend
from levere.storage.encrypting import encrypting
from levere.transfer import tus, wire
from levere.transfer.hashing import EMPTY, Digests, StreamHash, restore_hash
from levere.transfer.pipe import ByteSource, ListSource

log = logging.getLogger(__name__)

#: how long a request waits for another one still writing to the same upload
LEASE_WAIT = 40.0
#: how long HEAD waits for a request still writing to the upload
HEAD_WAIT = 3.0


class WrongContentType(Exception):
    """A PATCH without ``Content-Type: application/offset+octet-stream`` (answered with 415)."""


def _require_uploader(session: Session, actor: User) -> None:
    """Refuse, before reading any header, a caller who may upload to no project at all (the project
    is only known once the metadata is read; the exact check follows then)."""
    kind = UserKind(actor.kind)
    subjects = [Subject(kind=kind)]
    if (
        kind is UserKind.FACILITY
        and actor.facility_id
        and session.execute(
            select(ProjectFacility.project_id)
            .where(ProjectFacility.facility_id == actor.facility_id)
            .limit(1)
        ).first()
    ):
        subjects.append(Subject(kind=kind, facility_assigned=True))
    roles = session.execute(
        select(ProjectMember.role).where(ProjectMember.user_id == actor.id).distinct()
    ).scalars()
    subjects += [Subject(kind=kind, project_role=ProjectRole(role)) for role in roles]
    if not any(allowed(s, Action.DELIVERY_UPLOAD) for s in subjects):
        raise AccessDenied(
            f"you are not allowed to upload to any project ({who_can(Action.DELIVERY_UPLOAD)})",
            action=Action.DELIVERY_UPLOAD.value,
        )


# --- create ----------------------------------------------------------------------------------------


def create(
    ctx: Context, actor: User, headers: Mapping[str, str], *, second_factor: bool = False
) -> UploadView:
    """POST: reserve the quota (the area's, or the shared disk's for a delivery on one) and open a
    staging session (a zero-length file is stored at once). ``second_factor``: the caller's
    sign-in proved one (needed on a shared disk)."""
    with ctx.tx() as session:
        _require_uploader(session, actor)
        tus.check_version(headers)
        length = tus.int_header(headers, "upload-length")
        meta = wire.parse_metadata(headers.get("upload-metadata", ""))
        missing = [k for k in wire.META_REQUIRED if not meta.get(k)]
        if missing:
            raise ValidationFailed({"Upload-Metadata": f"needs {', '.join(missing)}"})
        project = authorize(session, actor, meta[wire.META_PROJECT], Action.DELIVERY_UPLOAD)
        path = check_relative_path(meta[wire.META_PATH])
        md5 = wire.check_hex("md5", meta[wire.META_MD5], "md5") if meta.get(wire.META_MD5) else ""
        sha256 = (
            wire.check_hex("sha256", meta[wire.META_SHA256], "sha256") if meta.get(wire.META_SHA256) else ""
        )
        delivery = open_for_upload(session, project, meta[wire.META_DELIVERY])
        landing = zone_uploads.upload_placement(project, delivery)
        disk = zone_uploads.check_upload(session, actor, delivery, second_factor)
        crypt4gh = zone_uploads.wants_crypt4gh(meta, disk)
        key = check_fits(key_limits(ctx, project), project.identifier, delivery.name, path)
        # the quota row stays locked to the end of this transaction, which serialises the path check too
        what = f"{path} ({length} bytes)"
        if disk is not None:
            zone_uploads.reserve(session, disk, length, what)
        else:
            quotas.reserve(session, project.id, landing.tier, length, what=what)
        check_path_free(session, delivery, path)
        backend = ctx.backend(landing.tier)
        upload = Upload(
            delivery_id=delivery.id,
            project_id=project.id,
            path=path,
            length=length,
            expect_md5=md5,
            expect_sha256=sha256,
            backend_id=backend.backend_id,
            key=key,
            created_by_id=actor.id,
            expires_at=expiry(ctx),
            kind="tus",
            hash_state=Checkpoints(Checkpoint(0, None)).encode(),
        )
        session.add(upload)
        session.flush()
        up = Snapshot.of(upload, project, delivery)
    if length == 0 and not crypt4gh:
        return _complete(ctx, actor, up, EMPTY)
    try:
        zone = encrypting(backend)
        staged = (
            zone.start_sealed(up.key, length) if crypt4gh and zone else backend.start_staged(up.key, length)
        )
    except LevereError as exc:
        fail_upload(ctx, actor, up, f"the storage could not start the upload: {exc.message}")
        raise
    with ctx.tx() as session:
        session.execute(update(Upload).where(Upload.id == up.id).values(session=staged))
    return up.view(offset=0)


# --- status ----------------------------------------------------------------------------------------


def status(ctx: Context, actor: User, upload_id: str, headers: Mapping[str, str]) -> UploadView:
    """HEAD: the offset the storage durably holds (also after a crash). If a request is still
    writing (its client just went away), wait a moment for it to finish, so that the client
    resumes from the final offset rather than a stale one."""
    owner = new_owner()
    deadline = time.monotonic() + HEAD_WAIT
    while True:
        with ctx.tx() as session:
            upload, project, delivery = load_upload(session, actor, upload_id, lock=True)
            tus.check_version(headers)
            up = Snapshot.of(upload, project, delivery)
            leased = False
            if up.state == UploadState.ACTIVE:
                try:
                    take_lease(upload, owner)
                    leased = True
                except LeaseBusy:
                    pass
        if leased or up.state != UploadState.ACTIVE or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if up.state == UploadState.COMPLETE:
        return up.view(offset=up.length)
    if up.state != UploadState.ACTIVE:
        raise gone(up)
    backend = backend_for(ctx, up.backend_id)
    if not leased:  # still being written: report what is durable now, touch nothing
        return up.view(offset=backend.staged_offset(up.session) if up.session else 0)
    try:
        staged = _ensure_session(ctx, up, backend)
        try:
            durable = backend.staged_offset(staged)
        except NotFound:
            return _recover(ctx, actor, up, backend)
        if durable == up.length:
            # every byte arrived but the request ended before publishing (crash, or a broken answer)
            return _finish_after_crash(ctx, actor, up, backend, staged)
        return up.view(offset=durable)
    finally:
        release_lease(ctx, up.id, owner)


def _ensure_session(ctx: Context, up: Snapshot, backend: Backend) -> str:
    """The staging session; started now if the process stopped between creating the upload and
    starting it."""
    if up.session:
        return up.session
    staged = backend.start_staged(up.key, up.length)
    with ctx.tx() as session:
        done = session.execute(
            update(Upload).where(Upload.id == up.id, Upload.session == "").values(session=staged)
        ).rowcount  # type: ignore[attr-defined]
    if not done:
        backend.abort_staged(staged)
        with ctx.tx() as session:
            return str(session.execute(select(Upload.session).where(Upload.id == up.id)).scalar_one())
    return staged


def _recover(ctx: Context, actor: User, up: Snapshot, backend: Backend) -> UploadView:
    """The staging session is gone: published just before a crash, or lost."""
    info = backend.stat(up.key)
    saved = Checkpoints.decode(up.hash_state)
    final = next((cp for cp in (saved.pending, saved.confirmed) if cp and cp.offset == up.length), None)
    hasher = restore_hash(up.length, final.state) if final else None
    zone = encrypting(backend)
    if zone is not None and up.session and info is not None and hasher is not None:
        if info.size == zone.stored_size(up.session):
            # the body is published: completing finds it, and records the file with its header
            return _complete(ctx, actor, up, hasher.digests())
    elif info is not None and info.size == up.length and hasher is not None:
        return _record(ctx, actor, up, hasher.digests())
    fail_upload(ctx, actor, up, "its stored bytes are gone")
    raise gone(replace(up, state=UploadState.FAILED))


def _finish_after_crash(ctx: Context, actor: User, up: Snapshot, backend: Backend, staged: str) -> UploadView:
    hasher = _restore(ctx, actor, up, backend, staged, up.length)
    return _complete(ctx, actor, up, hasher.digests())


# --- append ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    offset: int
    levere: dict[str, str]
    checksum: tus.RequestChecksum | None
    content_length: int | None


def _parse_patch(headers: Mapping[str, str]) -> _Request:
    tus.check_version(headers)
    if headers.get("content-type", "").split(";")[0].strip().lower() != tus.OFFSET_CONTENT_TYPE:
        raise WrongContentType(headers.get("content-type", ""))
    offset = tus.int_header(headers, "upload-offset")
    levere = (
        wire.parse_checksums(headers[wire.CHECKSUM_HEADER.lower()])
        if wire.CHECKSUM_HEADER.lower() in headers
        else {}
    )
    checksum = tus.RequestChecksum.parse(headers["upload-checksum"]) if "upload-checksum" in headers else None
    length = tus.int_header(headers, "content-length") if "content-length" in headers else None
    return _Request(offset, levere, checksum, length)


def _begin(
    ctx: Context, actor: User, upload_id: str, headers: Mapping[str, str], owner: str
) -> tuple[Snapshot, _Request]:
    deadline = time.monotonic() + LEASE_WAIT
    while True:
        try:
            with ctx.tx() as session:
                upload, project, delivery = load_upload(session, actor, upload_id, lock=True)
                request = _parse_patch(headers)
                if upload.state == UploadState.COMPLETE:
                    raise Conflict(f"the upload of {upload.path} is already complete", offset=upload.length)
                if upload.state != UploadState.ACTIVE:
                    raise gone(upload)
                if delivery.state != DeliveryState.OPEN:
                    raise Conflict(f"delivery {delivery.name} is {delivery.state}", state=delivery.state)
                # a disk's delivery: still its facility side's, the disk still open (the token is
                # the one the upload was created with, which proved the second factor)
                zone_uploads.check_upload(session, actor, delivery, second_factor=True)
                if (
                    request.content_length is not None
                    and request.offset + request.content_length > upload.length
                ):
                    raise ValidationFailed(
                        {
                            "Content-Length": f"the request carries more bytes than the {upload.length}-byte upload has room for"
                        }
                    )
                for name, value in request.levere.items():
                    column = "expect_md5" if name == "md5" else "expect_sha256"
                    if getattr(upload, column) and getattr(upload, column) != value:
                        raise ChecksumMismatch(
                            f"the {name.upper()} in {wire.CHECKSUM_HEADER} differs from the one given when the "
                            f"upload of {upload.path} was created",
                            path=upload.path,
                        )
                    setattr(upload, column, value)
                take_lease(upload, owner)
                return Snapshot.of(upload, project, delivery), request
        except LeaseBusy:
            if time.monotonic() > deadline:
                raise Conflict(
                    "another request is still writing to this upload; try again in a moment"
                ) from None
            time.sleep(0.25)


def append(
    ctx: Context, actor: User, upload_id: str, headers: Mapping[str, str], source: ByteSource
) -> UploadView:
    """PATCH: append the body at ``Upload-Offset``; completes the upload when the last byte is in.
    Runs in a worker thread; ``source`` is read only after the checks have passed."""
    owner = new_owner()
    up, request = _begin(ctx, actor, upload_id, headers, owner)
    try:
        backend = backend_for(ctx, up.backend_id)
        staged = _ensure_session(ctx, up, backend)
        try:
            durable = backend.staged_offset(staged)
        except NotFound:
            return _recover(ctx, actor, up, backend)
        header = b""
        zone = encrypting(backend)
        if zone is not None and zone.awaits_header(staged) and request.offset == 0:
            try:
                staged, header = zone_uploads.take_header(ctx, up.id, up.delivery_id, zone, staged, source)
            except (NotCrypt4GH, EncryptedToAnotherKey) as exc:
                fail_upload(ctx, actor, up, exc.message)  # nothing was stored
                raise
            up = replace(up, session=staged)
        elif durable != request.offset:
            raise Conflict(
                f"Upload-Offset {request.offset} does not match the {durable} bytes stored", offset=durable
            )
        hasher = _restore(ctx, actor, up, backend, staged, durable)
        if header:  # taken out of the body, it is part of the file as sent (and checksummed)
            hasher.update(header)
        if request.checksum is not None:
            source = _verified_body(source, request.checksum, up.path)
        writer = Writer(ctx, up, staged, backend, hasher, owner)
        try:
            offset = writer.run(source)
        except BodyTooLong:
            kept = _take_back(ctx, up, backend, staged, writer, owner, request.offset)
            refused = ValidationFailed(
                {
                    "body": f"the request carries more bytes than the {up.length}-byte upload has room "
                    f"for; nothing of it was stored"
                }
            )
            refused.details["offset"] = kept
            raise refused from None
        except StorageFull as exc:
            kept = _take_back(ctx, up, backend, staged, writer, owner, request.offset)
            raise StorageFull(
                f"the storage is full: the upload of {up.path} keeps its first {kept} bytes and can be "
                "resumed from there once there is room",
                offset=kept,
                reason=exc.details.get("reason", ""),
            ) from exc
        _saved(ctx, up, owner, offset, Checkpoints(writer.confirmed))
    finally:
        release_lease(ctx, up.id, owner)
    if offset == up.length:
        return _complete(ctx, actor, replace(up, offset=offset), hasher.digests())
    return up.view(offset=offset)


def _saved(ctx: Context, up: Snapshot, owner: str, offset: int, checkpoints: Checkpoints | None) -> None:
    """The end of a request: the offset it left, the checksum state there, a new expiry."""
    values: dict[str, object] = {"offset": offset, "expires_at": expiry(ctx)}
    if checkpoints is not None:
        values["hash_state"] = checkpoints.encode()
    with ctx.tx() as session:
        session.execute(
            update(Upload)
            .where(Upload.id == up.id, Upload.lease_owner == owner)
            .values(**values, lease_owner=None, lease_expires_at=None)
        )


def _take_back(
    ctx: Context, up: Snapshot, backend: Backend, staged: str, writer: Writer, owner: str, start: int
) -> int:
    """A request that failed as a whole (its body ran past the upload's end, or the storage had no
    room for it) leaves nothing of itself: the storage drops what it kept of it. Returns the offset
    the upload resumes from (where the request began, except past parts an object store made
    durable, which it cannot take back)."""
    kept = backend.truncate_staged(staged, start)
    mark = writer.checkpoint_at(kept)
    _saved(ctx, up, owner, kept, Checkpoints(mark) if mark is not None else None)
    return kept


def _restore(
    ctx: Context, actor: User, up: Snapshot, backend: Backend, staged: str, durable: int
) -> StreamHash:
    restored = restore_state(up, backend, staged, durable)
    if restored is not None:
        return restored
    fail_upload(ctx, actor, up, "its checksum state was lost when the server stopped")
    raise NotFound(
        f"the upload of {up.path} cannot be continued (the server stopped at a moment it could not recover "
        "from); upload the file again",
        state="failed",
    )


def _verified_body(source: ByteSource, checksum: tus.RequestChecksum, path: str) -> ByteSource:
    """The tus checksum extension: the request's bytes are checked before any is stored, so they are
    held in memory (such requests are limited to a few MiB by the clients that send them)."""
    held: list[bytes] = []
    size = 0
    while (buf := source.next_buffer()) is not None:
        size += len(buf)
        if size > tus.MAX_CHECKSUMMED_PATCH:
            source.close()
            raise ValidationFailed(
                {
                    "Upload-Checksum": f"requests with a checksum may carry at most {tus.MAX_CHECKSUMMED_PATCH} bytes"
                }
            )
        held.append(bytes(buf))
    if source.interrupted:
        raise ChecksumMismatch(f"the request for {path} broke off; nothing of it was stored", path=path)
    if not checksum.matches(held):
        raise ChecksumMismatch(
            f"the bytes of this request for {path} do not match its Upload-Checksum; nothing of it was stored",
            path=path,
        )
    return ListSource(held)


# --- completion ----------------------------------------------------------------------------------------


def _complete(ctx: Context, actor: User, up: Snapshot, digests: Digests) -> UploadView:
    """Every byte is in: compare checksums, publish the file, record it and settle the quota."""
    wrong = [
        f"{name} {have} (expected {want})"
        for name, want, have in (
            ("MD5", up.expect_md5, digests.md5),
            ("SHA-256", up.expect_sha256, digests.sha256),
        )
        if want and want != have
    ]
    backend = backend_for(ctx, up.backend_id)
    zone = encrypting(backend)
    if wrong:
        if up.session:
            abort_quietly(backend, up.session)
        fail_upload(ctx, actor, up, "checksum mismatch: " + ", ".join(wrong))
        raise ChecksumMismatch(
            f"{up.delivery}/{up.path} arrived with {', '.join(wrong)}; nothing was stored",
            path=up.path,
            md5=digests.md5,
            sha256=digests.sha256,
        )
    sealed: zone_uploads.Sealed | None = None
    if zone is not None and up.session and zone.is_sealed(up.session):
        try:
            sealed, digests = zone_uploads.complete_sealed(ctx, zone, up.key, up.session)
        except CiphertextDamaged as exc:
            fail_upload(ctx, actor, up, exc.message)  # its body was deleted
            raise
        return _record(ctx, actor, up, digests, sealed)
    if up.length == 0:
        with backend.open_writer(up.key, size_hint=0) as writer:
            writer.commit()
        if zone is not None:
            sealed = zone_uploads.sealed_whole(ctx, zone, up.key, writer)
    else:
        try:
            backend.finish_staged(up.session)
        except NotFound:
            info = backend.stat(up.key)  # published by a request that stopped before recording it
            if info is None or info.size != (zone.stored_size(up.session) if zone else up.length):
                raise
        if zone is not None:
            sealed = zone_uploads.sealed_staged(ctx, zone, up.key, up.session)
    return _record(ctx, actor, up, digests, sealed)


def _record(
    ctx: Context, actor: User, up: Snapshot, digests: Digests, sealed: zone_uploads.Sealed | None = None
) -> UploadView:
    with ctx.tx() as session:
        upload = session.execute(select(Upload).where(Upload.id == up.id).with_for_update()).scalar_one()
        if upload.state == UploadState.COMPLETE:
            return up.view(offset=up.length, state=upload.state, digests=digests)
        stale = upload.state if upload.state != UploadState.ACTIVE else None
        if stale is None:
            upload.state = upload_transition(upload.state, UploadState.COMPLETE)
            delivery = session.get(Delivery, up.delivery_id)
            assert delivery is not None
            size = sealed.size if sealed is not None and sealed.size is not None else up.length
            (file_id,) = record_files(
                session,
                delivery,
                up.backend_id,
                [NewFile(up.path, size, digests.md5, digests.sha256, up.key)],
                tier=Tier.SECURE if delivery.shared_disk_id else None,
            )
            if delivery.shared_disk_id is not None and sealed is not None:
                zone_uploads.file_stored(
                    session, actor, file_id, delivery.shared_disk_id, sealed.data_key, sealed.body
                )
                upload.wrapped_data_key = sealed.wrapped
                if size < up.length:  # a Crypt4GH file's plaintext is what the disk holds
                    zone_uploads.give_back(session, delivery.shared_disk_id, up.length - size)
            else:
                quotas.settle(session, up.project_id, landing_tier(session, up.project_id), up.length)
            upload.file_id = file_id
            upload.offset = up.length
            upload.lease_owner = None
            upload.lease_expires_at = None
            audit.record(
                session, actor, "delivery.file_stored", "delivery", up.delivery_id,
                after={"path": up.path, "size": up.length, "md5": digests.md5, "sha256": digests.sha256},
            )  # fmt: skip
    if stale is not None:
        # cancelled or expired while its last bytes were being published: take the file back
        backend_for(ctx, up.backend_id).delete(up.key)
        raise gone(replace(up, state=stale))
    return up.view(offset=up.length, state=UploadState.COMPLETE, digests=digests)
