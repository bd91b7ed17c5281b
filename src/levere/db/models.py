"""SQLAlchemy tables. Every schema change ships with an Alembic migration in ``db/migrations``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from levere.domain.jobruns import JobRunState
from levere.domain.replicas import ReplicaState

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


#: characters that the ids made by one :func:`new_ids` call share; a counter follows
ID_STEM = 28


def new_id() -> str:
    return new_ids(1)[0]


def new_ids(count: int) -> list[str]:
    """``count`` time-ordered UUIDs (version 7, RFC 9562), in the form ``str(uuid.UUID)`` has.

    Time-ordered rather than random (version 4) because of what an insert costs: a new random id
    lands on a random page of every index it is in, so recording a chunk of a delivery's files
    would rewrite pages all over each table's indexes (several times the writes and the time; see
    docs/benchmarks.md). A new version 7 id sorts after every older one, so new rows fill the last
    pages.

    The ids of one call share their first :data:`ID_STEM` characters (the time and 42 random bits)
    and end in a counter of 8 hex digits from a random start, so they are also in order among
    themselves: a lone id has 64 random bits, the ids of one call follow each other.
    """
    if count <= 0:
        return []
    bits = int.from_bytes(os.urandom(8), "big")
    start = bits & 0x3F_FFFF  # 22 bits: the counter cannot run into the bits above it
    first = (
        (time.time_ns() // 1_000_000) << 80  # unix time in milliseconds
        | 0x7 << 76  # the version
        | (bits >> 52) << 64  # 12 random bits
        | 0b10 << 62  # the variant
        | ((bits >> 22) & 0x3FFF_FFFF) << 32  # 30 random bits
        | start
    )
    text = f"{first:032x}"
    stem = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:24]}"
    return [f"{stem}{counter:08x}" for counter in range(start, start + count)]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC times on every database (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


Id = String(36)


class Facility(Base):
    __tablename__ = "facilities"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # short name, e.g. "norseq-oslo"
    display_name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: every file this facility delivers must be listed in the run's checksum file
    require_checksum_file: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16), default="user")
    facility_id: Mapped[str | None] = mapped_column(ForeignKey("facilities.id"), default=None)
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    totp_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    facility: Mapped[Facility | None] = relationship(lazy="joined")

    def __repr__(self) -> str:  # never show hashes or secrets
        return f"User(email={self.email!r}, kind={self.kind!r})"


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    #: SHA-256 of the secret part; the secret itself is shown once and never stored
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    #: the sign-in that made this token proved a second factor (levere's TOTP, or MFA asserted by an
    #: OpenID Connect provider); the helpdesk's actions need it
    second_factor: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, name={self.name!r})"


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    client: Mapped[str] = mapped_column(String(64), default="")
    success: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Invitation(Base):
    __tablename__ = "invitations"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    role: Mapped[str | None] = mapped_column(String(16))
    invited_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None] = mapped_column(default=None)


class FederatedIdentity(Base):
    """An identity at an OpenID Connect provider (issuer + subject) that signs in as a levere account."""

    __tablename__ = "federated_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: the configured provider's name when the link was made (the issuer is what identifies it)
    provider: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    #: the e-mail address the provider released when the link was made, for people to read only
    email: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    #: the Crypt4GH public keys (PEM) the provider released at the last sign-in, each checked to be
    #: a usable X25519 key; the default recipients of secure-zone downloads
    crypt4gh_public_keys: Mapped[list[str]] = mapped_column(JSON, default=list)


class TransferGrant(Base):
    """One transfer (a delivery's uploads, a download, a job being waited on) that the token which
    started it may finish after it expires (services/transfer_grants.py)."""

    __tablename__ = "transfer_grants"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: delivery (its uploads and seal), download (one file or one delivery), job (following it)
    kind: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    #: the delivery's name, the download's DELIVERY or DELIVERY/PATH, or the job's id
    target: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    #: the last request the grant carried after its token expired
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)


class SignInFlow(Base):
    """A federated sign-in under way: what its callback or polls must match, used once."""

    __tablename__ = "sign_in_flows"
    #: SHA-256 of the flow's secret handle (the OAuth ``state`` of a browser flow, the handle a
    #: device flow is polled with)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "browser" or "device"
    nonce: Mapped[str] = mapped_column(String(100))
    code_verifier: Mapped[str | None] = mapped_column(String(200), default=None)
    redirect_uri: Mapped[str | None] = mapped_column(String(500), default=None)
    device_code: Mapped[str | None] = mapped_column(String(500), default=None)
    mfa_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: SHA-256 of an invitation's secret, when this sign-in accepts that invitation
    invitation_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Application(Base):
    __tablename__ = "applications"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    number: Mapped[int] = mapped_column(Integer, unique=True)  # short, human-friendly reference
    state: Mapped[str] = mapped_column(String(24), default="draft", index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    pi_email: Mapped[str] = mapped_column(String(320), default="")
    data_ownership: Mapped[str] = mapped_column(Text, default="")
    funding_source: Mapped[str] = mapped_column(String(200), default="")
    grant_id: Mapped[str] = mapped_column(String(100), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    facility_id: Mapped[str | None] = mapped_column(ForeignKey("facilities.id"), default=None)
    quota_area_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    quota_longterm_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    secure_project_id: Mapped[str] = mapped_column(String(16), default="")
    members: Mapped[list[Any]] = mapped_column(default=list)  # [{"email": ..., "role": ...}]
    author_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    pi_confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    submitted_at: Mapped[datetime | None] = mapped_column(default=None)
    reviewer_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    review_comment: Mapped[str] = mapped_column(Text, default="")
    granted_area_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    granted_longterm_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    facility: Mapped[Facility | None] = relationship(lazy="joined")


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    identifier: Mapped[str] = mapped_column(String(32), unique=True)  # e.g. LEV-2026-0001
    title: Mapped[str] = mapped_column(String(200))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    secure_project_id: Mapped[str] = mapped_column(String(16), default="")
    #: "auto": sealed deliveries go to long-term storage at once; "manual": when helpdesk asks
    sync_mode: Mapped[str] = mapped_column(String(16), default="auto")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectMember(Base):
    __tablename__ = "project_members"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class ProjectFacility(Base):
    __tablename__ = "project_facilities"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    facility_id: Mapped[str] = mapped_column(ForeignKey("facilities.id"), primary_key=True)
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)
    assigned_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))

    facility: Mapped[Facility] = relationship(lazy="joined")


class Quota(Base):
    """Limit and usage of one tier for one project. ``used + reserved <= limit`` always holds."""

    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)
    limit_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Notification(Base):
    __tablename__ = "notifications"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(default=None)
    #: e-mail delivery: "pending", "sent", "failed", "disabled" (recorded while mail was off: sent
    #: once it is on) or "expired" (waited longer than smtp.max_age_hours: never sent)
    email_state: Mapped[str] = mapped_column(String(16), default="pending")
    email_error: Mapped[str] = mapped_column(Text, default="")


class AuditEvent(Base):
    """Append-only; each event's hash covers its content and the previous event's hash."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[str | None] = mapped_column(String(36))
    actor_email: Mapped[str] = mapped_column(String(320), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Counter(Base):
    """Named counters (application numbers, project identifiers), incremented under a row lock."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    facility_id: Mapped[str | None] = mapped_column(ForeignKey("facilities.id"))
    name: Mapped[str] = mapped_column(String(255))
    #: "open" (accepting files), "sealed" (immutable) or "failed"
    state: Mapped[str] = mapped_column(String(16), default="open")
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sealed_at: Mapped[datetime | None] = mapped_column(default=None)
    failure_reason: Mapped[str] = mapped_column(Text, default="")
    #: SHA-256 of the manifest in md5sum format, a short fingerprint for receipts
    manifest_sha256: Mapped[str] = mapped_column(String(64), default="")
    #: the last long-term outcome people were told about: "", "failed" or "synced" (once each)
    sync_notified: Mapped[str] = mapped_column(String(16), default="")
    #: at sealing, which files the run's checksum file listed (see domain.deliveries.ChecksumCoverage);
    #: none for deliveries not sealed yet, or sealed before levere recorded it
    checksum_coverage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: the shared disk a sensitive project's delivery lands on (None: a non-sensitive delivery)
    shared_disk_id: Mapped[str | None] = mapped_column(
        ForeignKey("shared_disks.id"), default=None, index=True
    )
    #: when the facility released it to the users' secure project (its headers moved to them)
    released_at: Mapped[datetime | None] = mapped_column(default=None)


class StoredFile(Base):
    """A complete, verified file of a delivery (one row per path; copies per tier are replicas)."""

    __tablename__ = "files"
    # the constraint is also the index by delivery
    __table_args__ = (UniqueConstraint("delivery_id", "path"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: for a file stored as a Crypt4GH body (secure zone): the stored body's SHA-256 and size, which
    #: copies are checked against; ``size``, ``md5`` and ``sha256`` stay the plaintext's
    body_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    body_size: Mapped[int | None] = mapped_column(BigInteger, default=None)


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


class Replica(Base):
    """One copy of a file on one tier, with its sync/verification state."""

    __tablename__ = "replicas"
    # the constraint is also the index by file
    __table_args__ = (UniqueConstraint("file_id", "tier"), Index("ix_replicas_tier_state", "tier", "state"))
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    tier: Mapped[str] = mapped_column(String(16))
    backend_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(4200))
    #: the version of ``key`` this copy is, on a store that keeps versions (S3 with object lock);
    #: reads and verify ask for it, so what others write over the key later does not matter
    version_id: Mapped[str | None] = mapped_column(String(1024), default=None)
    #: a :class:`~levere.domain.replicas.ReplicaState`; its transitions are that module's table
    state: Mapped[str] = mapped_column(String(16), default=ReplicaState.PENDING.value)
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Upload(Base):
    """A tus upload in progress, or a batch of small files being received. While active, ``length``
    bytes are reserved against the quota (for a batch: what it still holds reserved)."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_delivery_state", "delivery_id", "state"),
        Index("ix_uploads_state_expires", "state", "expires_at"),
    )
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(4096))
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    #: expected checksums given by the client (Upload-Metadata), checked on completion
    expect_md5: Mapped[str] = mapped_column(String(32), default="")
    expect_sha256: Mapped[str] = mapped_column(String(64), default="")
    backend_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(4200))
    session: Mapped[str] = mapped_column(Text, default="")
    #: "active", "complete", "failed", "expired", "terminated"
    state: Mapped[str] = mapped_column(String(16), default="active", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"), default=None)
    #: "tus" (one file) or "batch" (a tar of small files)
    kind: Mapped[str] = mapped_column(String(16), default="tus", server_default="tus")
    #: saved MD5/SHA-256 state at durable offsets (JSON), so any process can continue after a crash
    hash_state: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: the request currently writing to this upload, so two never interleave bytes
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: the API token the upload was created with: it may finish this upload after it expires
    #: (services/upload_grants.py)
    token_id: Mapped[str | None] = mapped_column(String(36), default=None)
    #: an encrypting upload's data key, wrapped under the master key, so any process can resume it
    wrapped_data_key: Mapped[str | None] = mapped_column(Text, default=None)


class JobRun(Base):
    """A background job people asked for (sync, restore, verify), with its progress and report."""

    __tablename__ = "job_runs"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    #: a :class:`~levere.domain.jobruns.JobKind`
    kind: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[str | None] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    #: a :class:`~levere.domain.jobruns.JobRunState`; its transitions are that module's table
    state: Mapped[str] = mapped_column(String(16), default=JobRunState.QUEUED.value, index=True)
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    files_failed: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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


#: the plain tables behind some models, for inserts of thousands of rows at once: a Core
#: ``executemany`` costs a fraction of the ORM's bulk path per row
files_table = cast(Table, StoredFile.__table__)
users_table = cast(Table, User.__table__)
members_table = cast(Table, ProjectMember.__table__)
invitations_table = cast(Table, Invitation.__table__)
notifications_table = cast(Table, Notification.__table__)
audit_table = cast(Table, AuditEvent.__table__)
replicas_table = cast(Table, Replica.__table__)
headers_table = cast(Table, FileHeader.__table__)
