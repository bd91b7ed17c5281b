"""What the use cases hand to every front end: frozen views, named for what people see.

Design notes
------------
A service's public function returns one of these, never an ORM row or a dict: a row outlives its
transaction only by accident (lazy loads after the session closed, changes that are silently not
saved), and a dict's shape is known only to whoever built it. Views are plain frozen dataclasses with
the names the API's schemas use, so a schema is built from a view by attribute (``from_attributes``),
and the CLI's and the portal's pages read the same fields. Collections are tuples, so that a view
cannot be changed by whoever receives it; a mapping inside a view (a delivery's metadata, a file's
state per tier) is a fresh copy made for that view.

The use cases a front end calls take the service context first and open their own transaction;
the building blocks that run inside another use case's transaction take a ``session`` and may pass
rows between them (``tests/test_service_returns.py`` holds the line). The ``*_view`` functions build
a view from the rows of an open transaction; they are the only place that knows both shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from levere.db.models import (
    ApiToken,
    Application,
    Delivery,
    Facility,
    FederatedIdentity,
    JobRun,
    Notification,
    ProjectMember,
    Quota,
    Upload,
    User,
)
from levere.domain.jobruns import JobKind, JobRunState

if TYPE_CHECKING:
    from levere.crypt4gh.keys import PublicKey

# --- people and facilities ----------------------------------------------------------------------


@dataclass(frozen=True)
class FacilityView:
    id: str
    name: str
    display_name: str
    contact_email: str
    #: every file this facility delivers must be listed in the run's checksum file
    require_checksum_file: bool


@dataclass(frozen=True)
class AccountView:
    """A user account as its owner and the helpdesk see it (no secrets)."""

    id: str
    email: str
    name: str
    kind: str
    facility_id: str | None
    totp_enabled: bool
    has_password: bool


@dataclass(frozen=True)
class TokenView:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    #: the sign-in that issued it proved a second factor
    second_factor: bool = False


@dataclass(frozen=True)
class IssuedTokenView:
    """A new token: ``token`` is shown this once and never stored."""

    token: str = field(repr=False)
    info: TokenView


@dataclass(frozen=True)
class SentInvitationView:
    """A fresh invitation link went out (or was handed over) to ``email``."""

    email: str
    expires_at: datetime


@dataclass(frozen=True)
class NotificationView:
    id: str
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None
    email_state: str


@dataclass(frozen=True)
class IdentityView:
    """A sign-in identity at an outside provider, linked to an account."""

    provider: str
    issuer: str
    subject: str
    email: str
    created_at: datetime
    last_used_at: datetime | None
    #: the Crypt4GH public keys (PEM) the provider released at the last sign-in, all valid
    crypt4gh_public_keys: tuple[str, ...] = ()


def identity_view(link: FederatedIdentity) -> IdentityView:
    return IdentityView(
        provider=link.provider,
        issuer=link.issuer,
        subject=link.subject,
        email=link.email,
        created_at=link.created_at,
        last_used_at=link.last_used_at,
        crypt4gh_public_keys=tuple(link.crypt4gh_public_keys or ()),
    )


@dataclass(frozen=True)
class RecipientKeyView:
    """A Crypt4GH public key a person's identity provider released for them: a default recipient
    of their secure-zone downloads (services/identity_keys.py)."""

    provider: str
    fingerprint: str
    #: the key as ``crypt4gh-keygen`` writes a ``.pub`` file
    pem: str

    def public_key(self) -> PublicKey:
        from levere.crypt4gh.keys import PublicKey

        return PublicKey.from_pem(self.pem)


@dataclass(frozen=True)
class TransferGrantView:
    """One transfer the token that started it may finish after it expires."""

    id: str
    kind: str
    project: str
    target: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None


def facility_view(facility: Facility) -> FacilityView:
    return FacilityView(
        id=facility.id,
        name=facility.name,
        display_name=facility.display_name,
        contact_email=facility.contact_email,
        require_checksum_file=bool(facility.require_checksum_file),
    )


def account_view(user: User) -> AccountView:
    return AccountView(
        id=user.id,
        email=user.email,
        name=user.name,
        kind=user.kind,
        facility_id=user.facility_id,
        totp_enabled=bool(user.totp_enabled),
        has_password=user.password_hash is not None,
    )


def token_view(token: ApiToken) -> TokenView:
    return TokenView(
        id=token.id,
        name=token.name,
        scopes=tuple(token.scopes),
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
        second_factor=bool(token.second_factor),
    )


def notification_view(note: Notification) -> NotificationView:
    return NotificationView(
        id=note.id,
        subject=note.subject,
        body=note.body,
        created_at=note.created_at,
        read_at=note.read_at,
        email_state=note.email_state,
    )


# --- applications -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedMemberView:
    email: str
    role: str


@dataclass(frozen=True)
class ApplicationView:
    id: str
    number: int
    state: str
    title: str
    pi_email: str
    data_ownership: str
    funding_source: str
    grant_id: str
    description: str
    #: the assisting facility's short name
    facility: str | None
    quota_area_bytes: int
    quota_longterm_bytes: int
    sensitive: bool
    secure_project_id: str
    members: tuple[RequestedMemberView, ...]
    author_id: str
    submitted_at: datetime | None
    decided_at: datetime | None
    review_comment: str
    granted_area_bytes: int | None
    granted_longterm_bytes: int | None
    #: the identifier of the project an approval made
    project: str | None
    created_at: datetime
    updated_at: datetime


def application_view(application: Application, project: str | None) -> ApplicationView:
    return ApplicationView(
        id=application.id,
        number=application.number,
        state=application.state,
        title=application.title,
        pi_email=application.pi_email,
        data_ownership=application.data_ownership,
        funding_source=application.funding_source,
        grant_id=application.grant_id,
        description=application.description,
        facility=application.facility.name if application.facility else None,
        quota_area_bytes=application.quota_area_bytes,
        quota_longterm_bytes=application.quota_longterm_bytes,
        sensitive=application.sensitive,
        secure_project_id=application.secure_project_id,
        members=tuple(RequestedMemberView(m["email"], m["role"]) for m in application.members or []),
        author_id=application.author_id,
        submitted_at=application.submitted_at,
        decided_at=application.decided_at,
        review_comment=application.review_comment,
        granted_area_bytes=application.granted_area_bytes,
        granted_longterm_bytes=application.granted_longterm_bytes,
        project=project,
        created_at=application.created_at,
        updated_at=application.updated_at,
    )


# --- projects -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaView:
    tier: str
    limit_bytes: int
    used_bytes: int
    reserved_bytes: int


@dataclass(frozen=True)
class MemberView:
    email: str
    name: str
    role: str
    has_account: bool
    added_at: datetime


@dataclass(frozen=True)
class ZoneDiskLine:
    """A shared disk of a sensitive project's users' secure project, as the project's views list it."""

    name: str
    state: str
    quota_bytes: int
    used_bytes: int
    ends_at: datetime


@dataclass(frozen=True)
class ProjectZoneView:
    """Where a sensitive project keeps its data instead of a working area: its users' secure
    project and the shared disks the facility delivers to. The disks are looked up only for a
    viewer whose sign-in passed a second factor (as everything in the secure zone needs) and who
    may see them; ``disks_shown`` says whether they were, ``disks_hidden`` how many the viewer's
    role does not let them see."""

    secure_project: str
    disks_shown: bool
    disks: tuple[ZoneDiskLine, ...] = ()
    disks_hidden: int = 0


@dataclass(frozen=True)
class ProjectView:
    id: str
    identifier: str
    title: str
    sensitive: bool
    secure_project_id: str
    sync_mode: str
    created_at: datetime
    quotas: tuple[QuotaView, ...] = ()
    #: short names of the facilities that may deliver into it
    facilities: tuple[str, ...] = ()
    #: the viewer's role in it (None: not a member, e.g. the helpdesk or an assigned facility)
    my_role: str | None = None
    #: a sensitive project's secure project and shared disks (None: not looked up, or not sensitive)
    zone: ProjectZoneView | None = None

    def quota(self, tier: str) -> QuotaView | None:
        return next((q for q in self.quotas if q.tier == tier), None)


def quota_view(quota: Quota) -> QuotaView:
    return QuotaView(
        tier=quota.tier,
        limit_bytes=quota.limit_bytes,
        used_bytes=quota.used_bytes,
        reserved_bytes=quota.reserved_bytes,
    )


def member_view(member: ProjectMember) -> MemberView:
    return MemberView(
        email=member.user.email,
        name=member.user.name,
        role=member.role,
        has_account=member.user.password_hash is not None,
        added_at=member.added_at,
    )


# --- deliveries and files -----------------------------------------------------------------------


@dataclass(frozen=True)
class FileView:
    path: str
    size: int
    md5: str
    sha256: str
    created_at: datetime
    #: the replica's state on each tier that holds (or is to hold) the file
    tiers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenUploadView:
    """A resumable upload in flight."""

    id: str
    path: str
    length: int
    offset: int
    expires_at: datetime


@dataclass(frozen=True)
class DeliveryView:
    id: str
    name: str
    #: the project's identifier
    project: str
    state: str
    metadata: dict[str, Any]
    created_at: datetime
    sealed_at: datetime | None
    failure_reason: str
    manifest_sha256: str
    file_count: int
    total_bytes: int
    #: what the run's checksum file covered, recorded at sealing
    checksum_coverage: dict[str, Any] | None = None
    #: filled by the functions that show one delivery in full
    files: tuple[FileView, ...] | None = None
    uploads: tuple[OpenUploadView, ...] | None = None


@dataclass(frozen=True)
class FilePage:
    """One page of a delivery's files, for runs too large to show at once."""

    delivery: DeliveryView
    files: tuple[FileView, ...]
    #: files that match ``search`` in all (the page holds at most ``limit`` of them)
    matching: int
    offset: int
    limit: int
    search: str
    #: the delivery's resumable uploads in flight
    uploads: tuple[OpenUploadView, ...] = ()
    #: whether the viewer may upload into it now (it is open, and they may upload to the project)
    may_upload: bool = False


def delivery_view(
    delivery: Delivery,
    project: str,
    file_count: int,
    total_bytes: int,
    *,
    files: tuple[FileView, ...] | None = None,
    uploads: tuple[OpenUploadView, ...] | None = None,
) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        name=delivery.name,
        project=project,
        state=delivery.state,
        metadata=dict(delivery.meta or {}),
        created_at=delivery.created_at,
        sealed_at=delivery.sealed_at,
        failure_reason=delivery.failure_reason,
        manifest_sha256=delivery.manifest_sha256,
        file_count=file_count,
        total_bytes=total_bytes,
        checksum_coverage=dict(delivery.checksum_coverage) if delivery.checksum_coverage else None,
        files=files,
        uploads=uploads,
    )


def upload_view(upload: Upload) -> OpenUploadView:
    return OpenUploadView(
        id=upload.id,
        path=upload.path,
        length=upload.length,
        offset=upload.offset,
        expires_at=upload.expires_at,
    )


# --- background jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRunView:
    """A background job (sync, restore or verify): progress, retries and its final report."""

    id: str
    kind: JobKind
    project: str | None
    delivery: str | None
    state: JobRunState
    files_total: int
    files_done: int
    files_failed: int
    bytes_total: int
    bytes_done: int
    attempt: int
    next_attempt_at: datetime | None
    error: str
    report: dict[str, Any]
    #: the e-mail of whoever asked for it, or "levere" for the service's own
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None = None


def job_run_view(
    run: JobRun, project: str | None, delivery: str | None, created_by: str | None
) -> JobRunView:
    return JobRunView(
        id=run.id,
        kind=JobKind(run.kind),
        project=project,
        delivery=delivery,
        state=JobRunState(run.state),
        files_total=run.files_total,
        files_done=run.files_done,
        files_failed=run.files_failed,
        bytes_total=run.bytes_total,
        bytes_done=run.bytes_done,
        attempt=run.attempt,
        next_attempt_at=run.next_attempt_at,
        error=run.error,
        report=dict(run.report or {}),
        created_by=created_by or "levere",
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        updated_at=run.updated_at,
    )


# --- pages a front end shows --------------------------------------------------------------------


@dataclass(frozen=True)
class DeliverySummary:
    """A project's deliveries counted by state."""

    total: int
    open: int
    sealed: int
    failed: int
    files: int
    bytes: int


@dataclass(frozen=True)
class ProjectPage:
    """Everything a project's page shows: the project, its use of each tier, who is in it, and its
    deliveries (newest last) with their counts."""

    project: ProjectView
    members: tuple[MemberView, ...]
    deliveries: tuple[DeliveryView, ...]
    summary: DeliverySummary
    recent_jobs: tuple[JobRunView, ...]


@dataclass(frozen=True)
class ProjectSummary:
    """One line of the helpdesk's dashboard."""

    identifier: str
    title: str
    sensitive: bool
    sync_mode: str
    created_at: datetime
    quotas: tuple[QuotaView, ...]
    facilities: tuple[str, ...]
    members: int
    deliveries: DeliverySummary
    #: files with a failed or damaged copy on some tier
    problem_files: int


@dataclass(frozen=True)
class SyncProblem:
    """A delivery with copies that failed or were found damaged, on one tier."""

    project: str
    delivery: str
    tier: str
    failed: int
    damaged: int


@dataclass(frozen=True)
class OpenDiskView:
    """A shared disk still open for the facility's uploads, and when it closes."""

    name: str
    facility_project: str
    users_project: str
    used_bytes: int
    quota_bytes: int
    ends_at: datetime


@dataclass(frozen=True)
class Dashboard:
    """The helpdesk's overview: a page of the projects with their quota use per tier, the syncs
    that need someone's attention (jobs failed, or running without progress for too long, and
    deliveries with failed or damaged copies) and the shared disks still open."""

    projects: tuple[ProjectSummary, ...]
    failed_jobs: tuple[JobRunView, ...]
    stalled_jobs: tuple[JobRunView, ...]
    #: limit, used and reserved summed over every project, per tier
    tiers: tuple[QuotaView, ...]
    sync_problems: tuple[SyncProblem, ...] = ()
    open_disks: tuple[OpenDiskView, ...] = ()
    #: whether ``open_disks`` was looked up (only for a sign-in that passed a second factor)
    disks_shown: bool = False
    #: the projects whose identifier or title contains ``search``, and which page of them this is
    matching: int = 0
    search: str = ""
    page: int = 1
    pages: int = 1
