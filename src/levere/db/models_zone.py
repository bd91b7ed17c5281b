"""The secure zone's tables: secure projects, shared disks, the staff let into a users' secure project,
and the Crypt4GH headers of stored bodies. ``models`` names them too, so that every table can be
imported from there, and Alembic sees them through the one ``Base.metadata``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from levere.db.base import Base, Id, new_id, utcnow

if TYPE_CHECKING:
    from levere.db.models import Facility, Project, User


class FileHeader(Base):
    """A Crypt4GH header of a stored body, for one holder's key: a shared disk's (``disk``) or a
    secure project's (``secure``). The body is stored once; readers come and go as headers."""

    __tablename__ = "file_headers"
    __table_args__ = (Index("ix_file_headers_holder", "holder_kind", "holder_id"),)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    #: "disk" or "secure" (see domain.secure.HeaderHolder)
    holder_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    holder_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    header: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"FileHeader(file_id={self.file_id!r}, holder={self.holder_kind}:{self.holder_id})"


class SecureProject(Base):
    """A project in the secure zone (``p1234``): the users' (of a research project) or a facility's.

    The private key is stored only wrapped under a master key (``master_key_id``); the repr shows
    neither key."""

    __tablename__ = "secure_projects"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    identifier: Mapped[str] = mapped_column(String(16), unique=True)
    #: "users" or "facility"
    kind: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), default=None, index=True)
    facility_id: Mapped[str | None] = mapped_column(ForeignKey("facilities.id"), default=None)
    #: the X25519 public key, base64
    public_key: Mapped[str] = mapped_column(String(64))
    wrapped_private_key: Mapped[str] = mapped_column(Text)
    master_key_id: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    project: Mapped[Project | None] = relationship(lazy="joined")
    facility: Mapped[Facility | None] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"SecureProject(identifier={self.identifier!r}, kind={self.kind!r})"


class SharedDisk(Base):
    """A temporary disk between a facility's secure project and a users' one (see domain.secure)."""

    __tablename__ = "shared_disks"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    facility_secure_id: Mapped[str] = mapped_column(ForeignKey("secure_projects.id"))
    users_secure_id: Mapped[str] = mapped_column(ForeignKey("secure_projects.id"))
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    ends_at: Mapped[datetime]
    #: "open", "released", "expired" or "destroyed"
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    #: dropped (None) when the disk is destroyed: nothing on it can be opened again
    wrapped_private_key: Mapped[str | None] = mapped_column(Text, default=None)
    master_key_id: Mapped[str | None] = mapped_column(String(64), default=None)
    #: the notices already sent, as days before the end date
    notices_sent: Mapped[list[Any]] = mapped_column(default=list)
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(default=None)
    expired_at: Mapped[datetime | None] = mapped_column(default=None)
    destroyed_at: Mapped[datetime | None] = mapped_column(default=None)

    facility_secure: Mapped[SecureProject] = relationship(foreign_keys=[facility_secure_id], lazy="joined")
    users_secure: Mapped[SecureProject] = relationship(foreign_keys=[users_secure_id], lazy="joined")

    def __repr__(self) -> str:
        return f"SharedDisk(name={self.name!r}, state={self.state!r})"


class SecureMember(Base):
    """Staff a project admin let into a users' secure project, until ``ends_at``."""

    __tablename__ = "secure_members"
    secure_project_id: Mapped[str] = mapped_column(
        ForeignKey("secure_projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    ends_at: Mapped[datetime]
    added_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    #: when the sweep recorded that the end date had passed
    ended_recorded_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(lazy="joined", foreign_keys=[user_id])
