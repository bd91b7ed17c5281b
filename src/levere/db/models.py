"""SQLAlchemy tables. Every schema change ships with an Alembic migration in ``db/migrations``.

The declarative base, UTC times and ids are in ``db/base.py``, the secure zone's tables in
``db/models_zone.py``; both are named here too, so that ``from levere.db.models import X`` finds every
table and helper."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from levere.db.base import ID_STEM as ID_STEM
from levere.db.base import Base as Base
from levere.db.base import Id
from levere.db.base import UTCDateTime as UTCDateTime
from levere.db.base import new_id as new_id
from levere.db.base import new_ids as new_ids
from levere.db.base import utcnow as utcnow
from levere.db.models_zone import FileHeader as FileHeader
from levere.db.models_zone import SecureMember as SecureMember
from levere.db.models_zone import SecureProject as SecureProject
from levere.db.models_zone import SharedDisk as SharedDisk
from levere.domain.jobruns import JobRunState
from levere.domain.replicas import ReplicaState


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
