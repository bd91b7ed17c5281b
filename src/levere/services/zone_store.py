"""Storing a file levere makes itself (an analysis report) in a shared disk's delivery, encrypted.

Design notes
------------
* The one place the server writes a zone file it made: the plaintext arrives as chunks, is
  encrypted as it comes with a fresh data key (:class:`~levere.crypt4gh.BodyEncryptor`, which
  hashes the plaintext in the same pass) and only the body reaches the secure tier, hashed on its
  way out; the header for the shared disk goes to ``file_headers``. The file is then a zone file
  like any upload (see :mod:`levere.services.zone_files`): a ``StoredFile`` with the plaintext's
  size and checksums, the body's SHA-256 and size, and one replica on the secure tier; release
  moves its header like every other file's.
* The body is published before its rows are written; if writing them fails, the object is
  removed again. A failure before the publish throws the temporary bytes away (the writer's
  abort). A body left by a transaction that fails later opens for no one: its header was never
  committed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context, after_commit
from levere.crypt4gh import BodyEncryptor, EncryptedBody, PublicKey, make_header
from levere.db.models import Delivery, Project, Replica, SharedDisk, StoredFile, utcnow
from levere.domain.errors import AlreadyExists, Conflict, LevereError, NoHeader
from levere.domain.paths import check_relative_path
from levere.domain.replicas import ReplicaState
from levere.domain.secure import DiskState, check_writable
from levere.domain.tiers import ProjectKind, Purpose, place
from levere.services.deliveries import area_key
from levere.services.zone_files import record_header
from levere.storage.base import Backend, ObjectWriter
from levere.storage.encrypting import EncryptingWriter


class _HashingSink:
    """Writes the body to the store and hashes it on the way (what copies are checked against)."""

    def __init__(self, writer: ObjectWriter) -> None:
        self._writer = writer
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sha256.update(data)
        self.size += len(data)
        self._writer.write(data)  # type: ignore[arg-type]


class _Written:
    """The body's checksum and size as the secure tier's layer counted them."""

    def __init__(self, sha256: hashlib._Hash, size: int) -> None:
        self.sha256, self.size = sha256, size


def disk_of(session: Session, delivery: Delivery) -> SharedDisk:
    """The shared disk ``delivery`` lies on; a delivery on none is not in the zone."""
    disk = session.get(SharedDisk, delivery.shared_disk_id) if delivery.shared_disk_id else None
    if disk is None:
        raise Conflict(f"delivery {delivery.name} is not on a shared disk", delivery=delivery.name)
    return disk


def store_zone_file(
    ctx: Context, session: Session, delivery: Delivery, path: str, chunks: Iterable[bytes]
) -> StoredFile:
    """Store ``chunks`` (plaintext, in memory) as the zone file ``path`` of ``delivery``: body
    encrypted on the secure tier, header for the delivery's shared disk. Refused on a disk that
    takes no more data, for a released delivery, and where ``path`` is taken."""
    disk = disk_of(session, delivery)
    check_writable(DiskState(disk.state), disk.ends_at, utcnow(), disk.name)
    # the delivery's row stays locked until the caller commits, so a release finishing meanwhile
    # (it takes the same lock before it marks the delivery released) waits and moves this file too
    released_at = session.execute(
        select(Delivery.released_at).where(Delivery.id == delivery.id).with_for_update()
    ).scalar_one()
    if released_at is not None:
        raise NoHeader(f"delivery {delivery.name} is released: no access", delivery=delivery.name)
    path = check_relative_path(path)
    taken = session.execute(
        select(StoredFile.id).where(StoredFile.delivery_id == delivery.id, StoredFile.path == path)
    ).first()
    if taken is not None:
        raise AlreadyExists(f"{path} is already in delivery {delivery.name}", path=path)
    project = session.get(Project, delivery.project_id)
    assert project is not None  # a delivery's foreign key
    tier = place(ProjectKind.SENSITIVE, Purpose.SHARED_DISK).tier
    backend = ctx.backend(tier)
    key = area_key(project.identifier, delivery.name, path)
    with backend.open_writer(key) as writer:
        if isinstance(writer, EncryptingWriter):
            # the secure tier's layer encrypts whatever is written (storage/encrypting.py): the
            # plaintext goes to it, and it tells the key and both checksums
            for chunk in chunks:
                writer.write(chunk)
            writer.commit()
            body = EncryptedBody(
                writer.data_key, writer.plain_size, writer.body_size,
                writer.plain_md5.hexdigest(), writer.plain_sha256.hexdigest(),
            )  # fmt: skip
            sink: _HashingSink | _Written = _Written(writer.body_sha256, writer.body_size)
        else:
            sink = _HashingSink(writer)
            with BodyEncryptor(sink) as encryptor:
                for chunk in chunks:
                    encryptor.write(chunk)
                body = encryptor.finish()
            writer.commit()
    try:
        return _record(session, delivery, disk, path, key, body, sink, backend.backend_id, writer.version)
    except BaseException:
        _delete_quietly(backend, [key])
        raise


def _record(
    session: Session,
    delivery: Delivery,
    disk: SharedDisk,
    path: str,
    key: str,
    body: EncryptedBody,
    sink: _HashingSink | _Written,
    backend_id: str,
    version: str | None,
) -> StoredFile:
    tier = place(ProjectKind.SENSITIVE, Purpose.SHARED_DISK).tier
    file = StoredFile(
        delivery_id=delivery.id,
        project_id=delivery.project_id,
        path=path,
        size=body.plaintext_size,
        md5=body.md5 or "",
        sha256=body.sha256 or "",
        body_sha256=sink.sha256.hexdigest(),
        body_size=sink.size,
    )
    session.add(file)
    session.flush()
    now = utcnow()
    session.add(
        Replica(
            file_id=file.id,
            tier=tier.value,
            backend_id=backend_id,
            key=key,
            version_id=version,
            state=ReplicaState.PRESENT.value,
            verified_at=now,
        )
    )
    record_header(session, file.id, disk, make_header(body.data_key, PublicKey.from_pem(_pem(disk))))
    session.flush()
    return file


def remove_zone_file(ctx: Context, session: Session, file: StoredFile) -> None:
    """Remove a file levere made (a report being replaced): its rows now, its body once the
    transaction has committed (a failed transaction keeps the file whole)."""
    replicas = list(session.execute(select(Replica).where(Replica.file_id == file.id)).scalars())
    for replica in replicas:
        session.delete(replica)
    session.delete(file)  # its headers go with it (ON DELETE CASCADE)
    session.flush()
    backend = ctx.backend(place(ProjectKind.SENSITIVE, Purpose.SHARED_DISK).tier)
    keys = [replica.key for replica in replicas]
    after_commit(session, lambda: _delete_quietly(backend, keys))


def _delete_quietly(backend: Backend, keys: list[str]) -> None:
    # a body left behind is ciphertext whose header is gone: it opens for no one
    for key in keys:
        with contextlib.suppress(LevereError, OSError):
            backend.delete(key)


def _pem(disk: SharedDisk) -> str:
    return f"-----BEGIN CRYPT4GH PUBLIC KEY-----\n{disk.public_key}\n-----END CRYPT4GH PUBLIC KEY-----\n"
