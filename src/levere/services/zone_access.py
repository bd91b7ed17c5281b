"""Reading the secure zone's files: a users' secure project's released files, and downloads
re-encrypted to a reader's own key (a shared disk's listing is :func:`zone_files.disk_contents`).

Before release, both sides of a shared disk read its deliveries through the disk's header; after
release, the users' secure project's admins and members (and staff an admin let in, until their end
date) read them through the users' header, and the disk answers ``released_no_access`` to everyone.

Design notes
------------
* The server never sends plaintext and never decrypts a body here. A download is a Crypt4GH file
  made of a header for the public key the reader supplies (from the data key the holder's header
  opens) and the body as stored, so the stock ``crypt4gh decrypt --sk`` reads it.
* The reader's public key is checked before any header is made (``invalid_public_key``), and every
  read is an audit event naming the file, the holder and the recipient key's fingerprint.
* The body is checked while it streams: its last piece is held back until the SHA-256 of what was
  read equals ``body_sha256``, so a damaged body never reaches the reader as a complete file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.crypt4gh import PublicKey, make_header
from levere.db.models import Delivery, Replica, SecureProject, SharedDisk, StoredFile, User
from levere.domain.errors import Conflict, NoIntactCopy, NotFound, ReleasedNoAccess
from levere.domain.paths import check_relative_path
from levere.domain.replicas import ReplicaState
from levere.domain.roles import Action, UserKind, allowed
from levere.domain.secure import SecureKind
from levere.domain.tiers import ProjectKind, Purpose, Tier, place
from levere.services import audit
from levere.services.secure import authorize_data, subject_for_secure
from levere.services.secure_disks import authorize_disk
from levere.services.zone_files import (
    ZoneFileView,
    body_replica,
    data_key,
    file_views,
    refuse_released_on_disk,
)
from levere.services.zone_files import released_words as _released_words

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZoneDownload:
    """A Crypt4GH file for one reader: ``header`` for their key, then the body as stored."""

    path: str  # DELIVERY/PATH
    header: bytes
    body_size: int
    body_sha256: str | None
    plaintext_size: int
    plaintext_md5: str
    plaintext_sha256: str
    tier: Tier
    key: str
    version: str | None
    ctx: Context

    @property
    def size(self) -> int:
        return len(self.header) + self.body_size

    def read(self) -> Iterator[bytes]:
        """The header, then the body, its last piece sent only once the body matches its checksum."""
        yield self.header
        digest = hashlib.sha256()
        held = b""
        count = 0
        for piece in self.ctx.backend(self.tier).read(self.key, version=self.version):
            if held:
                yield held
            digest.update(piece)
            count += len(piece)
            held = piece
        if count != self.body_size or (self.body_sha256 and digest.hexdigest() != self.body_sha256):
            log.warning(
                "%s: the stored body does not match its checksum; the download was broken off", self.path
            )
            raise NoIntactCopy(f"{self.path}: the stored body is damaged; nothing more was sent")
        if held:
            yield held


# --- through the shared disk (before release) ------------------------------------------------------


def _on_disk(
    session: Session, actor: User, disk_name: str, delivery_name: str
) -> tuple[SharedDisk, Delivery]:
    disk = authorize_disk(session, actor, disk_name, Action.DISK_DATA_READ)
    delivery = session.execute(
        select(Delivery).where(Delivery.shared_disk_id == disk.id, Delivery.name == delivery_name.strip())
    ).scalar()
    if delivery is None:
        raise NotFound(f"no delivery {delivery_name.strip()[:100]} on shared disk {disk.name}")
    refuse_released_on_disk(disk, delivery)
    return disk, delivery


def disk_download(
    ctx: Context, actor: User, disk_name: str, delivery_name: str, path: str, recipient: str
) -> ZoneDownload:
    """A file on a shared disk as a Crypt4GH file for ``recipient`` (a Crypt4GH public key)."""
    with ctx.tx() as session:
        disk, delivery = _on_disk(session, actor, disk_name, delivery_name)
        return _download(ctx, session, actor, disk, delivery, path, recipient)


# --- in the users' secure project (after release) --------------------------------------------------


def _released(session: Session, secure: SecureProject, delivery_name: str | None) -> list[Delivery]:
    query = (
        select(Delivery)
        .join(SharedDisk, SharedDisk.id == Delivery.shared_disk_id)
        .where(SharedDisk.users_secure_id == secure.id)
        .order_by(Delivery.name)
    )
    if delivery_name is not None:
        query = query.where(Delivery.name == delivery_name.strip())
    found = list(session.execute(query).scalars())
    if delivery_name is not None:
        if not found:
            raise NotFound(f"no delivery {delivery_name.strip()[:100]} in secure project {secure.identifier}")
        if found[0].released_at is None:
            disk = session.get(SharedDisk, found[0].shared_disk_id)
            raise Conflict(
                f"delivery {found[0].name} is not released yet: it is read on shared disk "
                f"{disk.name if disk else '?'} until the facility releases it",
                delivery=found[0].name,
                disk=disk.name if disk else None,
            )
    return [d for d in found if d.released_at is not None]


def _users_project(session: Session, actor: User, identifier: str) -> SecureProject:
    secure = authorize_data(session, actor, identifier)  # audited as secure.data_access
    if secure.kind != SecureKind.USERS:
        raise NotFound(f"secure project {secure.identifier} holds no released deliveries")
    return secure


def secure_files(
    ctx: Context, actor: User, identifier: str, delivery_name: str | None = None
) -> list[ZoneFileView]:
    """The released files of a users' secure project (of one delivery, if named)."""
    with ctx.tx() as session:
        secure = _users_project(session, actor, identifier)
        found = file_views(session, _released(session, secure, delivery_name))
        audit.record(
            session, actor, "zone.files_listed", "secure_project", secure.id,
            after={"delivery": delivery_name, "files": len(found)},
        )  # fmt: skip
        return found


def secure_download(
    ctx: Context, actor: User, identifier: str, delivery_name: str, path: str, recipient: str
) -> ZoneDownload:
    """A released file as a Crypt4GH file for ``recipient``, through the users' header."""
    with ctx.tx() as session:
        secure = _users_project(session, actor, identifier)
        (delivery,) = _released(session, secure, delivery_name)
        return _download(ctx, session, actor, secure, delivery, path, recipient)


# --- the ordinary delivery pages ------------------------------------------------------------------


def refuse_released(session: Session, actor: User, delivery: Delivery) -> None:
    """The gate of the ordinary delivery pages (a delivery's files, its manifest) for a released zone
    delivery: the facility, and anyone else outside the users' secure project, are refused with
    ``released_no_access``; the helpdesk keeps the metadata it sees of every project."""
    if delivery.shared_disk_id is None or delivery.released_at is None:
        return
    if UserKind(actor.kind) is UserKind.HELPDESK:
        return
    disk = session.get(SharedDisk, delivery.shared_disk_id)
    assert disk is not None
    if allowed(subject_for_secure(session, disk.users_secure, actor), Action.SECURE_DATA_READ):
        return
    raise ReleasedNoAccess(_released_words(disk, delivery), delivery=delivery.name, disk=disk.name,
                           secure_project=disk.users_secure.identifier)  # fmt: skip


def released_elsewhere(session: Session, actor: User, project_id: str) -> list[str]:
    """The ids of a project's released zone deliveries ``actor`` may not list (see
    :func:`refuse_released`), for project-wide listings to leave out."""
    if UserKind(actor.kind) is UserKind.HELPDESK:
        return []
    rows = session.execute(
        select(Delivery, SharedDisk)
        .join(SharedDisk, SharedDisk.id == Delivery.shared_disk_id)
        .where(Delivery.project_id == project_id, Delivery.released_at.is_not(None))
    ).all()
    return [
        d.id for d, disk in rows
        if not allowed(subject_for_secure(session, disk.users_secure, actor), Action.SECURE_DATA_READ)
    ]  # fmt: skip


# --- the download itself ---------------------------------------------------------------------------


def _download(
    ctx: Context,
    session: Session,
    actor: User,
    holder: SharedDisk | SecureProject,
    delivery: Delivery,
    path: str,
    recipient: str,
) -> ZoneDownload:
    reader = PublicKey.from_pem(recipient)  # invalid_public_key before anything else
    path = check_relative_path(path)
    file = session.execute(
        select(StoredFile).where(StoredFile.delivery_id == delivery.id, StoredFile.path == path)
    ).scalar()
    if file is None:
        raise NotFound(f"no file {delivery.name}/{path}")
    replica = _readable(session, file, holder)
    if replica.state != ReplicaState.PRESENT:
        raise NoIntactCopy(f"{delivery.name}/{path} has no intact copy in the secure zone ({replica.state})")
    header = make_header(data_key(ctx, session, file, holder), reader)
    audit.record(
        session, actor, "zone.file_read", "file", file.id,
        after={"path": f"{delivery.name}/{path}",
               "holder": f"disk:{holder.name}" if isinstance(holder, SharedDisk) else f"secure:{holder.identifier}",
               "recipient": reader.fingerprint},
    )  # fmt: skip
    return ZoneDownload(
        path=f"{delivery.name}/{path}",
        header=header,
        body_size=file.body_size
        if file.body_size is not None
        else _stored_size(ctx, Tier(replica.tier), replica.key, replica.version_id),
        body_sha256=file.body_sha256,
        plaintext_size=file.size,
        plaintext_md5=file.md5,
        plaintext_sha256=file.sha256,
        tier=Tier(replica.tier),
        key=replica.key,
        version=replica.version_id,
        ctx=ctx,
    )


def _readable(session: Session, file: StoredFile, holder: SharedDisk | SecureProject) -> Replica:
    """The body's copy to read: the first intact one where the placement lets readers look (a
    released file freed from the secure zone is read from its long-term copy, the same body), else
    the secure zone's, whose state says why it cannot be read."""
    purpose = Purpose.SHARED_DISK if isinstance(holder, SharedDisk) else Purpose.SECURE_ZONE
    reads = place(ProjectKind.SENSITIVE, purpose).reads
    copies = {
        r.tier: r
        for r in session.execute(
            select(Replica).where(Replica.file_id == file.id, Replica.tier.in_(reads))
        ).scalars()
    }
    for tier in reads:
        if tier in copies and copies[tier].state == ReplicaState.PRESENT:
            return copies[tier]
    return body_replica(session, file)


def _stored_size(ctx: Context, tier: Tier, key: str, version: str | None) -> int:
    info = ctx.backend(tier).stat(key, version=version)
    if info is None:
        raise NoIntactCopy("the stored body is missing")
    return info.size
