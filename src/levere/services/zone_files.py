"""Files in the secure zone: stored once as Crypt4GH bodies on the secure tier, read through the
header a holder (a shared disk, a secure project) has for them.

Design notes
------------
* A zone file is a :class:`StoredFile` of a delivery on a shared disk, with one replica on the
  secure tier whose object is the Crypt4GH *body* only. Its headers are rows of ``file_headers``,
  one per holder; the holder's private key (wrapped under the master key) opens its header and
  gives the data key. Nothing here ever writes plaintext anywhere: :func:`open_plaintext` decrypts
  in memory as the caller reads.
* Which holder may read is the caller's decision (the use case checks roles and the disk's state);
  this module only finds the header and the key, and refuses with ``no_header`` when the holder
  has none (a facility after release, for example).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.crypt4gh import DataKey, PrivateKey, read_data_key
from levere.crypt4gh.body import PiecesReader, iter_plaintext
from levere.db.models import (
    Delivery,
    FileHeader,
    Project,
    Replica,
    SecureProject,
    SharedDisk,
    StoredFile,
    User,
)
from levere.domain.errors import NoHeader, NotFound, ReleasedNoAccess
from levere.domain.roles import Action
from levere.domain.secure import HeaderHolder
from levere.domain.tiers import Tier
from levere.services import audit
from levere.services.secure import key_context, master_keys
from levere.services.secure_disks import authorize_disk


def holder_of(holder: SharedDisk | SecureProject) -> tuple[HeaderHolder, str]:
    """The ``file_headers`` key of a shared disk or a secure project."""
    if isinstance(holder, SharedDisk):
        return HeaderHolder.DISK, holder.id
    return HeaderHolder.SECURE, holder.id


def private_key(ctx: Context, holder: SharedDisk | SecureProject) -> PrivateKey:
    """The holder's private key, unwrapped from the master key; refused once a disk is destroyed."""
    if isinstance(holder, SharedDisk):
        if holder.wrapped_private_key is None:
            raise NoHeader(f"shared disk {holder.name} is destroyed, with its key", disk=holder.name)
        return master_keys(ctx).unwrap(holder.wrapped_private_key, key_context("shared-disk", holder.id))
    return master_keys(ctx).unwrap(holder.wrapped_private_key, key_context("secure-project", holder.id))


def record_header(session: Session, file_id: str, holder: SharedDisk | SecureProject, header: bytes) -> None:
    """Store (or replace) the header ``holder`` reads ``file_id`` through."""
    kind, holder_id = holder_of(holder)
    row = session.get(FileHeader, (file_id, kind.value, holder_id))
    if row is None:
        session.add(FileHeader(file_id=file_id, holder_kind=kind.value, holder_id=holder_id, header=header))
    else:
        row.header = header


def header_for(session: Session, file: StoredFile, holder: SharedDisk | SecureProject) -> bytes:
    """The header ``holder`` has for ``file``; ``no_header`` (409) when it has none."""
    kind, holder_id = holder_of(holder)
    row = session.get(FileHeader, (file.id, kind.value, holder_id))
    if row is None:
        raise NoHeader(f"{file.path} holds no header for this key", path=file.path)
    return row.header


def data_key(ctx: Context, session: Session, file: StoredFile, holder: SharedDisk | SecureProject) -> DataKey:
    """The data key of ``file``'s body, opened with ``holder``'s private key."""
    return read_data_key(header_for(session, file, holder), private_key(ctx, holder))


def body_replica(session: Session, file: StoredFile, tier: Tier = Tier.SECURE) -> Replica:
    found = session.execute(
        select(Replica).where(Replica.file_id == file.id, Replica.tier == tier.value)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"{file.path} has no copy on {tier.value}")
    return found


def read_body(ctx: Context, replica: Replica) -> Iterator[bytes]:
    """The stored body's bytes (ciphertext), as they are on the tier."""
    return ctx.backend(Tier(replica.tier)).read(replica.key, version=replica.version_id)


def open_plaintext(
    ctx: Context, session: Session, file: StoredFile, holder: SharedDisk | SecureProject
) -> io.BufferedReader:
    """``file``'s plaintext as a readable file, decrypted in memory as it is read; each segment is
    authenticated before its bytes are given out."""
    key = data_key(ctx, session, file, holder)
    body = io.BufferedReader(PiecesReader(read_body(ctx, body_replica(session, file))), 1 << 20)
    return io.BufferedReader(PiecesReader(iter_plaintext(body, key)), 1 << 20)


# --- listing the zone's files ----------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneFileView:
    """A file in the secure zone, as every listing of it shows it (a shared disk's, before release,
    and a users' secure project's, after): its plaintext's size and checksums (what a decrypted
    download must match) and the stored Crypt4GH body's size (a download is a header for the
    reader's key plus this body)."""

    delivery: str
    #: the path inside the delivery
    path: str
    size: int
    md5: str
    sha256: str
    body_size: int | None
    created_at: datetime
    released: bool

    @property
    def full_path(self) -> str:
        """``DELIVERY/PATH``: how downloads name the file."""
        return f"{self.delivery}/{self.path}"


@dataclass(frozen=True)
class ZoneDeliveryView:
    name: str
    project: str
    state: str
    files: int
    bytes: int
    created_at: datetime
    sealed_at: datetime | None


@dataclass(frozen=True)
class DiskContents:
    """What is on a shared disk, as both its sides see it."""

    disk: str
    state: str
    deliveries: tuple[ZoneDeliveryView, ...]
    files: tuple[ZoneFileView, ...]


def released_words(disk: SharedDisk, delivery: Delivery) -> str:
    """What anyone reading a released delivery through its shared disk is told."""
    assert delivery.released_at is not None
    return (
        f"released: no access. Delivery {delivery.name} was released from shared disk {disk.name} "
        f"to secure project {disk.users_secure.identifier} on {delivery.released_at:%Y-%m-%d %H:%M} "
        "UTC; only that project's members can read it"
    )


def refuse_released_on_disk(disk: SharedDisk, delivery: Delivery) -> None:
    """Reading a released delivery through its shared disk: ``released_no_access`` for everyone."""
    if delivery.released_at is not None:
        raise ReleasedNoAccess(
            released_words(disk, delivery), delivery=delivery.name, disk=disk.name,
            secure_project=disk.users_secure.identifier,
        )  # fmt: skip


def file_views(session: Session, deliveries: Sequence[Delivery]) -> list[ZoneFileView]:
    """The files of ``deliveries``, by delivery (in the order given) and path: one query."""
    names = {d.id: d.name for d in deliveries}
    released = {d.id for d in deliveries if d.released_at is not None}
    found = session.execute(
        select(StoredFile).where(StoredFile.delivery_id.in_(list(names))).order_by(StoredFile.path)
    ).scalars()
    order = {delivery_id: i for i, delivery_id in enumerate(names)}
    return [
        ZoneFileView(
            delivery=names[f.delivery_id],
            path=f.path,
            size=f.size,
            md5=f.md5,
            sha256=f.sha256,
            body_size=f.body_size,
            created_at=f.created_at,
            released=f.delivery_id in released,
        )
        for f in sorted(found, key=lambda f: (order[f.delivery_id], f.path))
    ]


def disk_contents(
    ctx: Context, actor: User, name: str, delivery: str | None = None, *, to_read: bool = False
) -> DiskContents:
    """The deliveries on a shared disk and their files (of one delivery, if named); the listing is
    an audit event. Both sides and the helpdesk may list; with ``to_read`` (the listing a download
    starts from) only those who may read the disk's data. A released delivery is listed as
    released, without its files (it is read only through the users' secure project from then on);
    naming one is refused with ``released_no_access``."""
    with ctx.tx() as session:
        disk = authorize_disk(session, actor, name, Action.DISK_DATA_READ if to_read else Action.DISK_READ)
        query = (
            select(Delivery, Project.identifier)
            .join(Project, Project.id == Delivery.project_id)
            .where(Delivery.shared_disk_id == disk.id)
            .order_by(Delivery.created_at, Delivery.name)
        )
        if delivery is not None:
            query = query.where(Delivery.name == delivery.strip())
        rows = session.execute(query).all()
        if delivery is not None and not rows:
            raise NotFound(f"no delivery {delivery.strip()[:100]} on shared disk {disk.name}")
        if delivery is not None:
            refuse_released_on_disk(disk, rows[0].Delivery)
        counts: dict[str, tuple[int, int]] = {
            delivery_id: (n, int(size))
            for delivery_id, n, size in session.execute(
                select(StoredFile.delivery_id, func.count(), func.coalesce(func.sum(StoredFile.size), 0))
                .where(StoredFile.delivery_id.in_([row.Delivery.id for row in rows]))
                .group_by(StoredFile.delivery_id)
            )
        }
        files = file_views(session, [row.Delivery for row in rows if row.Delivery.released_at is None])
        audit.record(
            session, actor, "disk.listed", "shared_disk", disk.id,
            after={"disk": disk.name, "delivery": delivery, "files": len(files)},
        )  # fmt: skip
        return DiskContents(
            disk=disk.name,
            state=disk.state,
            deliveries=tuple(
                ZoneDeliveryView(
                    name=row.Delivery.name,
                    project=row.identifier,
                    state="released" if row.Delivery.released_at is not None else row.Delivery.state,
                    files=counts.get(row.Delivery.id, (0, 0))[0],
                    bytes=counts.get(row.Delivery.id, (0, 0))[1],
                    created_at=row.Delivery.created_at,
                    sealed_at=row.Delivery.sealed_at,
                )
                for row in rows
            ),
            files=tuple(files),
        )


def chunk_reader(chunks: Iterator[bytes]) -> io.BufferedReader:
    """A readable file over an iterator of byte chunks (a body as the tier gives it)."""
    return io.BufferedReader(PiecesReader(chunks), 1 << 20)
