"""Deliveries onto a shared disk: the checks, the disk's quota and the completion of an upload
into the secure zone, for the delivery and upload use cases (:mod:`levere.services.deliveries`,
:mod:`levere.services.uploads`), which stay one pipeline for both kinds of project.

Design notes
------------
* Placement: a sensitive project's delivery lands on a shared disk (``Purpose.SHARED_DISK``,
  the secure tier); a non-sensitive one on the area. A delivery naming a disk into a non-sensitive
  project, or into a sensitive one without naming a disk, is refused by the placement policy
  before anything is recorded.
* Who: only the disk's facility side writes, while the disk is open, with a sign-in that proved a
  second factor (:func:`check_writer`); every upload request on a disk's delivery checks again.
* Quota: the disk's ``used_bytes`` counts what is stored and what uploads in progress reserved
  (plaintext sizes, as the area's quota does); it may never pass ``quota_bytes``. The row is
  locked while it is checked, so concurrent uploads cannot overrun it.
* Completion: the upload's body was encrypted on the way in by the secure tier's layer
  (:mod:`levere.storage.encrypting`) under the data key its session carries. The file gets a header
  for the disk's public key; its ``body_sha256``/``body_size`` are those of the stored body,
  read back once from the tier (ciphertext only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.crypt4gh import DataKey, PublicKey, iter_plaintext, make_header, read_data_key, read_header
from levere.db.models import Delivery, Project, SharedDisk, StoredFile, Upload, User
from levere.domain.errors import (
    AccessDenied,
    CiphertextDamaged,
    Conflict,
    NotFound,
    QuotaExceeded,
    StorageUnavailable,
    ValidationFailed,
)
from levere.domain.tiers import Placement, Purpose, Tier
from levere.domain.units import format_size
from levere.services import audit
from levere.services.projects import placement
from levere.services.secure_disks import authorize_write
from levere.services.zone_files import chunk_reader, open_plaintext, private_key, record_header
from levere.storage.base import ObjectWriter
from levere.storage.encrypting import EncryptingBackend, EncryptingWriter
from levere.transfer import wire
from levere.transfer.hashing import Digests
from levere.transfer.pipe import ByteSource

SECOND_FACTOR_WORDS = (
    "writing to a shared disk needs a sign-in with a second factor: give a one-time code "
    "('levere account step-up CODE') or sign in with a provider's second factor"
)


def delivery_placement(project: Project, disk_name: str | None) -> Placement:
    """Where a new delivery into ``project`` lands, naming ``disk_name`` or not (refused by the
    placement policy when the disk and the project's kind disagree)."""
    return placement(project, Purpose.SHARED_DISK if disk_name else Purpose.LANDING)


def upload_placement(project: Project, delivery: Delivery) -> Placement:
    """Where the files of ``delivery`` land."""
    return placement(project, Purpose.SHARED_DISK if delivery.shared_disk_id else Purpose.LANDING)


def check_writer(session: Session, actor: User, disk_name: str, second_factor: bool) -> SharedDisk:
    """The disk, if ``actor`` may write to it now: its facility side, the disk open, a second factor."""
    disk = authorize_write(session, actor, disk_name)
    if not second_factor:
        raise AccessDenied(SECOND_FACTOR_WORDS, reason="second_factor_required")
    return disk


def disk_for(
    session: Session, actor: User, project: Project, disk_name: str, second_factor: bool
) -> SharedDisk:
    """The disk a delivery into ``project`` names, checked: writable by ``actor`` and linked to the
    project's users' secure project."""
    disk = check_writer(session, actor, disk_name, second_factor)
    if disk.users_secure.project_id != project.id:
        raise Conflict(
            f"shared disk {disk.name} is not {project.identifier}'s: it links secure project "
            f"{disk.users_secure.identifier}",
            disk=disk.name,
        )
    return disk


def check_upload(session: Session, actor: User, delivery: Delivery, second_factor: bool) -> SharedDisk | None:
    """For a delivery on a disk: the disk, checked for ``actor`` as :func:`check_writer` does."""
    if delivery.shared_disk_id is None:
        return None
    disk = session.get(SharedDisk, delivery.shared_disk_id)
    assert disk is not None  # a foreign key
    return check_writer(session, actor, disk.name, second_factor)


def _locked(session: Session, disk_id: str) -> SharedDisk:
    return session.execute(
        select(SharedDisk)
        .where(SharedDisk.id == disk_id)
        .with_for_update(of=SharedDisk)
        # the row as locked, not as this session loaded it before (its quota may have moved since)
        .execution_options(populate_existing=True)
    ).scalar_one()


def reserve(session: Session, disk: SharedDisk, nbytes: int, what: str) -> None:
    """Count ``nbytes`` on the disk's quota, or refuse with ``quota_exceeded`` if they do not fit."""
    row = _locked(session, disk.id)
    available = row.quota_bytes - row.used_bytes
    if nbytes > available:
        raise QuotaExceeded(
            f"{what} needs {format_size(nbytes)} but only {format_size(max(available, 0))} of shared disk "
            f"{row.name}'s {format_size(row.quota_bytes)} quota is free",
            disk=row.name,
            needed=nbytes,
            available=max(available, 0),
            limit=row.quota_bytes,
            used=row.used_bytes,
        )
    row.used_bytes += nbytes


def give_back(session: Session, disk_id: str, nbytes: int) -> None:
    """An upload that failed, was cancelled or expired frees what it had counted."""
    row = _locked(session, disk_id)
    row.used_bytes = max(row.used_bytes - nbytes, 0)


def read_small_plaintext(
    ctx: Context, actor: User, disk_id: str, delivery: str, path: str, limit: int
) -> bytes:
    """A small file of a delivery on a disk (the run's checksum file, at sealing), decrypted in
    memory through the disk's header; the read is an audit event."""
    with ctx.tx() as session:
        disk = session.get(SharedDisk, disk_id)
        file = session.execute(
            select(StoredFile)
            .join(Delivery, Delivery.id == StoredFile.delivery_id)
            .where(Delivery.shared_disk_id == disk_id, Delivery.name == delivery, StoredFile.path == path)
        ).scalar_one_or_none()
        if disk is None or file is None:
            raise ValidationFailed({"checksum_file": f"{path} is not in delivery {delivery}"})
        if file.size > limit:
            raise ValidationFailed({"checksum_file": f"{path} is larger than {format_size(limit)}"})
        data = open_plaintext(ctx, session, file, disk).read(limit + 1)
        audit.record(
            session, actor, "zone.file_read", "shared_disk", disk.id,
            after={"disk": disk.name, "delivery": delivery, "path": path, "why": "checksum file at sealing"},
        )  # fmt: skip
    return data


# --- files uploaded already encrypted ----------------------------------------------------------------


def encrypted_paths(session: Session, delivery_id: str) -> frozenset[str]:
    """The files of a delivery on a disk that were uploaded already encrypted (Crypt4GH): their
    upload carried the file as sent (header and sealed segments), longer than the plaintext the
    file records; a plaintext upload's length is the file's size."""
    rows = session.execute(
        select(StoredFile.path)
        .join(Upload, Upload.file_id == StoredFile.id)
        .where(StoredFile.delivery_id == delivery_id, Upload.length != StoredFile.size)
    ).scalars()
    return frozenset(rows)


def wants_crypt4gh(meta: dict[str, str], disk: SharedDisk | None) -> bool:
    """Whether an upload's metadata marks the file as Crypt4GH (taken on a shared disk only)."""
    form = meta.get(wire.META_FORMAT, "")
    if form not in ("", wire.FORMAT_CRYPT4GH):
        raise ValidationFailed(
            {"Upload-Metadata": f"unknown format {form[:40]!r} (only {wire.FORMAT_CRYPT4GH!r})"}
        )
    if form and disk is None:
        raise ValidationFailed(
            {
                "Upload-Metadata": "Crypt4GH files are taken only on a shared disk (a sensitive project's delivery)"
            }
        )
    return bool(form)


class _HeaderReader:
    """Reads a Crypt4GH header off the start of a request's body; what follows it stays in the body."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source

    def read(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            buf = self.source.next_buffer()
            if buf is None:
                break
            need = size - len(out)
            out += memoryview(buf)[:need]
            if len(buf) > need:
                self.source.unread(bytes(memoryview(buf)[need:]))
        return bytes(out)


@dataclass(frozen=True)
class OpenedBody:
    """What reading a stored body back learnt: its own checksum and size, and its plaintext's."""

    body_sha256: str
    body_size: int
    size: int
    md5: str
    sha256: str


def open_body(ctx: Context, key: str, data_key: DataKey) -> OpenedBody:
    """Read the body stored under ``key`` back once: its SHA-256, and every segment authenticated
    and its plaintext hashed in memory. Raises ``ciphertext_damaged`` for a body that does not open."""
    body = hashlib.sha256()
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    stored = [0]

    def chunks() -> Iterator[bytes]:
        for chunk in ctx.backend(Tier.SECURE).read(key):
            body.update(chunk)
            stored[0] += len(chunk)
            yield chunk

    size = 0
    for piece in iter_plaintext(chunk_reader(chunks()), data_key):
        md5.update(piece)
        sha256.update(piece)
        size += len(piece)
    return OpenedBody(body.hexdigest(), stored[0], size, md5.hexdigest(), sha256.hexdigest())


def take_header(
    ctx: Context, upload_id: str, delivery_id: str, zone: EncryptingBackend, staged: str, source: ByteSource
) -> tuple[str, bytes]:
    """The first request of a Crypt4GH upload: its header, checked with the disk's key, goes to the
    session (and the data key, wrapped, to the upload row); returns the session and the header.
    Raises ``not_crypt4gh`` or ``encrypted_to_another_key`` before any byte is stored."""
    with ctx.tx() as session:
        disk = session.execute(
            select(SharedDisk)
            .join(Delivery, Delivery.shared_disk_id == SharedDisk.id)
            .where(Delivery.id == delivery_id)
        ).scalar_one()  # a Crypt4GH upload is only started on a disk
        key = private_key(ctx, disk)
    header = read_header(_HeaderReader(source))  # type: ignore[arg-type]
    ready = zone.with_header(staged, header, read_data_key(header, key))
    with ctx.tx() as session:
        done = session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.session == staged)
            .values(session=ready, wrapped_data_key=zone.wrapped_key(ready))
        ).rowcount  # type: ignore[attr-defined]
    if not done:
        zone.abort_staged(ready)
        raise Conflict("another request took this upload's header first; resume it")
    return ready, header


@dataclass(frozen=True)
class Sealed:
    """An upload into the secure zone: its body's data key (also wrapped), the stored body's
    checksum and size, and for a file uploaded already encrypted the plaintext's size."""

    data_key: DataKey
    wrapped: str
    body: tuple[str, int]
    size: int | None = None


def sealed_staged(ctx: Context, zone: EncryptingBackend, key: str, session: str) -> Sealed:
    """A plaintext upload encrypted on the way in, published under ``key``; its body's checksum is
    the one the layer computed while writing it, or the stored body's if it has none."""
    body = zone.body_digest(session) or body_checksum(ctx, key)
    return Sealed(zone.data_key(session), zone.wrapped_key(session), body)


def sealed_whole(ctx: Context, zone: EncryptingBackend, key: str, writer: ObjectWriter) -> Sealed:
    """A whole object written through the layer (an empty file)."""
    wrapped = cast(EncryptingWriter, writer).wrapped_data_key
    return Sealed(zone.object_data_key(key, wrapped), wrapped, body_checksum(ctx, key))


def complete_sealed(ctx: Context, zone: EncryptingBackend, key: str, session: str) -> tuple[Sealed, Digests]:
    """A Crypt4GH file is in: its body is published, then read back once to authenticate every
    segment and learn the plaintext's size and checksums (in memory). A body that does not open
    is deleted (``ciphertext_damaged``)."""
    try:
        zone.finish_staged(session)
    except NotFound:  # published by a request that stopped before recording it
        info = zone.stat(key)
        if info is None or info.size != zone.stored_size(session):
            raise
    data_key = zone.data_key(session)
    try:
        opened = open_body(ctx, key, data_key)
    except CiphertextDamaged:
        zone.delete(key)
        raise
    body = (opened.body_sha256, opened.body_size)
    return Sealed(data_key, zone.wrapped_key(session), body, opened.size), Digests(opened.md5, opened.sha256)


def secure_backend(ctx: Context) -> EncryptingBackend:
    backend = ctx.backend(Tier.SECURE)
    if not isinstance(backend, EncryptingBackend):
        raise StorageUnavailable("the secure tier has no encryption layer: nothing is stored there")
    return backend


def session_key(ctx: Context, session_string: str) -> tuple[DataKey, str]:
    """The data key of an encrypting upload's session, and the same wrapped (for the upload row)."""
    backend = secure_backend(ctx)
    return backend.data_key(session_string), backend.wrapped_key(session_string)


def body_checksum(ctx: Context, key: str) -> tuple[str, int]:
    """The SHA-256 and size of the body stored under ``key`` on the secure tier."""
    digest = hashlib.sha256()
    size = 0
    for chunk in ctx.backend(Tier.SECURE).read(key):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def file_stored(
    session: Session,
    actor: User,
    file_id: str,
    disk_id: str,
    data_key: DataKey,
    body: tuple[str, int],
) -> None:
    """A file of a delivery on a disk is stored: its header for the disk, its body's checksum."""
    disk = session.get(SharedDisk, disk_id)
    file = session.get(StoredFile, file_id)
    assert disk is not None and file is not None
    file.body_sha256, file.body_size = body
    record_header(session, file_id, disk, make_header(data_key, PublicKey.from_pem(disk.public_key)))
    audit.record(
        session, actor, "zone.file_stored", "shared_disk", disk.id,
        after={"path": file.path, "size": file.size, "body_size": body[1], "disk": disk.name},
    )  # fmt: skip
