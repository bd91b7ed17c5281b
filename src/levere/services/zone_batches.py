"""Tar batches into a delivery on a shared disk: what :mod:`levere.services.batches` does
differently in the secure zone, kept here so that the batch pipeline stays one for both kinds of
delivery.

Design notes
------------
* Writing: each member is encrypted under its own fresh data key by the secure tier's layer
  (:mod:`levere.storage.encrypting`): small members through its ``sealed_writes``, which the
  batch's :class:`~levere.dataplane.SmallWrites` uses on that layer, large ones through its
  streaming writer. Only Crypt4GH bodies reach the tier; the plaintext is in memory only, and its
  MD5 and SHA-256 are checked against the member's PAX records before anything is written, as on
  the working area.
* What a written member leaves here until it is recorded: its data key and its body's SHA-256
  and size (:class:`ZoneBatch`, by path).
* Recording (one transaction per chunk, the batch's): the file rows as on the area, with the
  replica on the secure tier, then each file's ``body_sha256``/``body_size`` and its header for
  the disk's public key, in bulk. The transaction first locks the delivery's row and refuses a
  released delivery (``released: no access``) or a disk that takes no more data, as
  :func:`levere.services.zone_store.store_zone_file` does: a release waits for the chunk, and
  moves its headers too. Bodies of a chunk that is refused are deleted (they open for no one).
* Quota: the disk's (:class:`~levere.services.batch_reservation.DiskQuota`), in plaintext bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from levere.crypt4gh import DataKey, HeaderMaker, PublicKey
from levere.db.bulk import insert_rows
from levere.db.models import Delivery, SharedDisk, User, files_table, headers_table, utcnow
from levere.domain.errors import LevereError, NoHeader
from levere.domain.secure import DiskState, HeaderHolder, check_writable
from levere.services import audit
from levere.services.deliveries import NewFile
from levere.storage import Backend
from levere.storage.encrypting import EncryptingWriter, SealedObject


@dataclass(frozen=True)
class _Body:
    data_key: DataKey
    sha256: str
    size: int


class ZoneBatch:
    """The zone side of one batch into a delivery on ``disk_id``."""

    def __init__(self, backend: Backend, delivery_id: str, disk_id: str, disk_name: str, public_key: str):
        self.backend = backend
        self.delivery_id = delivery_id
        self.disk_id = disk_id
        self.disk_name = disk_name
        #: the headers of the batch's files for the disk, from one writer key pair
        self.headers = HeaderMaker(PublicKey.from_pem(public_key))
        #: written members not yet recorded, by path
        self.bodies: dict[str, _Body] = {}

    def sealed(self, path: str, sealed: SealedObject | None) -> None:
        """A small member written through the layer's sealed writes."""
        if sealed is None:  # the secure tier writes only through its encrypting layer
            raise RuntimeError(f"{path} was not written through the secure tier's encrypting layer")
        self.bodies[path] = _Body(sealed.data_key, sealed.body_sha256, sealed.body_size)

    def streamed(self, path: str, writer: object) -> None:
        """A large member written through the layer's streaming writer (committed)."""
        if not isinstance(writer, EncryptingWriter):
            raise RuntimeError(f"{path} was not written through the secure tier's encrypting layer")
        self.bodies[path] = _Body(writer.data_key, writer.body_sha256.hexdigest(), writer.body_size)

    def check_open(self, session: Session, delivery_name: str) -> None:
        """At the start of a recording transaction: lock the delivery's row (a release takes the
        same lock) and refuse if it was released or the disk takes no more data."""
        released_at = session.execute(
            select(Delivery.released_at).where(Delivery.id == self.delivery_id).with_for_update()
        ).scalar_one()
        if released_at is not None:
            raise NoHeader(f"delivery {delivery_name} is released: no access", delivery=delivery_name)
        disk = session.get(SharedDisk, self.disk_id)
        assert disk is not None  # the delivery's foreign key
        check_writable(DiskState(disk.state), disk.ends_at, utcnow(), disk.name)

    def record(self, session: Session, actor: User, ids: Sequence[str], files: Sequence[NewFile]) -> None:
        """The files just inserted (``ids``, in the order of ``files``): their bodies' checksums and
        their headers for the disk, in bulk."""
        bodies = [self.bodies.pop(f.path) for f in files]
        session.execute(
            update(files_table)
            .where(files_table.c.id == bindparam("fid"))
            .values(body_sha256=bindparam("bsha"), body_size=bindparam("bsize")),
            [{"fid": fid, "bsha": b.sha256, "bsize": b.size} for fid, b in zip(ids, bodies, strict=True)],
        )
        insert_rows(
            session,
            headers_table,
            ("file_id", "header"),
            [(fid, self.headers(b.data_key)) for fid, b in zip(ids, bodies, strict=True)],
            {"holder_kind": HeaderHolder.DISK.value, "holder_id": self.disk_id, "created_at": utcnow()},
        )
        audit.record(
            session, actor, "zone.files_stored", "shared_disk", self.disk_id,
            after={"disk": self.disk_name, "files": len(files), "bytes": sum(f.size for f in files),
                   "body_bytes": sum(b.size for b in bodies), "kind": "batch"},
        )  # fmt: skip

    def drop(self, files: Sequence[NewFile]) -> None:
        """Bodies that will not be recorded: deleted, and forgotten (a body whose key is lost opens
        for no one, but takes room)."""
        for f in files:
            self.bodies.pop(f.path, None)
            with contextlib.suppress(LevereError, OSError):
                self.backend.delete(f.key)
