"""Request and response bodies. Separate In/Out models so that no secret leaves by accident."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
)

from levere.domain.applications import MAX_MEMBERS
from levere.domain.errors import ValidationFailed
from levere.domain.roles import ProjectRole, UserKind
from levere.domain.units import MAX_SIZE, SIZE_HELP, parse_size


def _size(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return parse_size(value)
    except ValidationFailed as exc:
        raise ValueError(exc.fields["size"]) from exc


#: what ``parse_size`` reads: a number and an optional unit (500G, 1.5 TiB, 2000000 B)
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([bB]|[kKmMgGtTpP]([iI]?[bB])?)?\s*$"
Size = Annotated[
    int,
    BeforeValidator(_size),
    Field(ge=0, le=MAX_SIZE, strict=True),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_SIZE},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": f"bytes, or a size such as '500G'; {SIZE_HELP}",
        }
    ),
]
# lengths the database columns hold: longer input is a 422 naming the field, never a database error
Email = Annotated[str, Field(max_length=320)]
Name = Annotated[str, Field(max_length=200)]
Secret = Annotated[str, Field(max_length=1024, repr=False)]
TokenName = Annotated[str, Field(max_length=100)]
Short = Annotated[str, Field(max_length=100)]
FacilityName = Annotated[str, Field(max_length=64)]
SecureId = Annotated[str, Field(max_length=16)]
# every list a request may carry has a maximum: a longer one is a 422 naming it, before any work
Scopes = Annotated[list[Literal["read", "write", "review", "account"]], Field(max_length=4)]
Members = Annotated[list["MemberWanted"], Field(max_length=MAX_MEMBERS)]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class In(BaseModel):
    """A JSON request body: unknown fields are refused, not ignored, so that a misspelt field is
    an error rather than a silent default; booleans and numbers are never coerced from other types
    (``0`` is not ``false``, ``"5"`` is not 5)."""

    model_config = ConfigDict(extra="forbid")


#: days a token lives (the service refuses more than a year)
Lifetime = Annotated[StrictInt, Field(ge=1, le=366)]


# --- accounts -----------------------------------------------------------------------------------


class LoginIn(In):
    email: Email
    password: Secret
    totp: str | None = Field(default=None, max_length=16, repr=False)
    token_name: TokenName = "cli"
    scopes: Scopes | None = None
    lifetime_days: Lifetime | None = None


class TokenOut(Out):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    #: the sign-in that issued it passed a second factor (the secure zone needs that)
    second_factor: bool = False


class IssuedTokenOut(BaseModel):
    token: str
    info: TokenOut


class TokenIn(In):
    name: TokenName
    scopes: Scopes | None = None
    lifetime_days: Lifetime | None = None


class UserOut(Out):
    id: str
    email: str
    name: str
    kind: UserKind
    facility_id: str | None
    totp_enabled: bool
    has_password: bool = False


class TotpConfirmOut(UserOut):
    #: a full token replacing the enrol-only one the request was made with (helpdesk operators)
    token: IssuedTokenOut | None = None


class UserIn(In):
    email: Email
    name: Name = ""
    kind: UserKind = UserKind.USER
    facility: str | None = Field(default=None, max_length=64)


class StaffIn(In):
    email: Email
    name: Name = ""


class TotpBeginOut(BaseModel):
    otpauth_uri: str


class CodeIn(In):
    code: str = Field(max_length=16)


class AcceptInvitationIn(In):
    secret: Secret
    password: Secret
    name: Name = ""


class PasswordIn(In):
    current: Secret
    new: Secret


class NotificationOut(Out):
    id: str
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None
    email_state: str


# --- facilities ---------------------------------------------------------------------------------


class FacilityIn(In):
    name: str = Field(max_length=64)
    display_name: Name = ""
    contact_email: Email


class FacilityOut(Out):
    id: str
    name: str
    display_name: str
    contact_email: str
    #: every file this facility delivers must be listed in the run's checksum file
    require_checksum_file: bool = False


class FacilityPatch(In):
    require_checksum_file: StrictBool | None = None


# --- applications -------------------------------------------------------------------------------


class MemberWanted(In):
    email: Email
    role: ProjectRole = ProjectRole.MEMBER


class ApplicationIn(In):
    """All fields optional: a draft may be incomplete; submission checks completeness."""

    title: Name = ""
    pi_email: Email = ""
    data_ownership: str = ""
    funding_source: Name = ""
    grant_id: Short = ""
    description: str = ""
    facility: FacilityName = ""
    quota_area_bytes: Size = 0
    quota_longterm_bytes: Size = 0
    sensitive: StrictBool = False
    secure_project_id: SecureId = ""
    members: Members = []


class ApplicationPatch(In):
    title: Name | None = None
    pi_email: Email | None = None
    data_ownership: str | None = None
    funding_source: Name | None = None
    grant_id: Short | None = None
    description: str | None = None
    facility: FacilityName | None = None
    quota_area_bytes: Size | None = None
    quota_longterm_bytes: Size | None = None
    sensitive: StrictBool | None = None
    secure_project_id: SecureId | None = None
    members: Members | None = None


class RequestedMemberOut(Out):
    email: str
    role: ProjectRole


class ApplicationOut(Out):
    id: str
    number: int
    state: str
    title: str
    pi_email: str
    data_ownership: str
    funding_source: str
    grant_id: str
    description: str
    facility: str | None
    quota_area_bytes: int
    quota_longterm_bytes: int
    sensitive: bool
    secure_project_id: str
    members: list[RequestedMemberOut]
    author_id: str
    submitted_at: datetime | None
    decided_at: datetime | None
    review_comment: str
    granted_area_bytes: int | None
    granted_longterm_bytes: int | None
    project: str | None = None
    created_at: datetime
    updated_at: datetime


class ApproveIn(In):
    area_quota: Size | None = None
    longterm_quota: Size | None = None
    comment: str = ""


class ReasonIn(In):
    reason: str


# --- projects -----------------------------------------------------------------------------------


class QuotaOut(Out):
    tier: str
    limit_bytes: int
    used_bytes: int
    reserved_bytes: int


class MemberOut(Out):
    email: str
    name: str
    role: ProjectRole
    has_account: bool
    added_at: datetime


class ZoneDiskOut(Out):
    """A shared disk of a sensitive project's users' secure project."""

    name: str
    state: str
    quota_bytes: int
    used_bytes: int
    ends_at: datetime


class ProjectZoneOut(Out):
    """Where a sensitive project keeps its data (it has no working area): its users' secure project
    and shared disks; the disks only for a sign-in with a second factor (``disks_shown``)."""

    secure_project: str
    disks_shown: bool
    disks: list[ZoneDiskOut] = []
    #: disks of the project the caller's role does not let them see
    disks_hidden: int = 0


class ProjectOut(Out):
    id: str
    identifier: str
    title: str
    sensitive: bool
    secure_project_id: str
    sync_mode: str
    created_at: datetime
    quotas: list[QuotaOut] = []
    facilities: list[str] = []
    my_role: str | None = None
    #: a sensitive project's secure project and shared disks (null for other projects, and in lists)
    zone: ProjectZoneOut | None = None


class DeliverySummaryOut(Out):
    total: int
    open: int
    sealed: int
    failed: int
    files: int
    bytes: int


class ProjectSummaryOut(Out):
    """One project on the helpdesk's dashboard."""

    identifier: str
    title: str
    sensitive: bool
    sync_mode: str
    created_at: datetime
    quotas: list[QuotaOut]
    facilities: list[str]
    members: int
    deliveries: DeliverySummaryOut
    #: files with a failed or damaged copy on some tier
    problem_files: int


class ProjectPatch(In):
    sync_mode: Literal["auto", "manual"] | None = None


class QuotaIn(In):
    limit: Size


class MemberIn(In):
    email: Email
    role: ProjectRole = ProjectRole.MEMBER


class RoleIn(In):
    role: ProjectRole


class FacilityAssignIn(In):
    facility: str = Field(max_length=64)


# --- audit --------------------------------------------------------------------------------------


class AuditEventOut(Out):
    seq: int
    at: datetime
    actor_email: str
    action: str
    object_type: str
    object_id: str
    #: the object as people name it: "LEV-2026-0001", "application 3", an e-mail, "LEV-2026-0001/RUN42"
    object_label: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AnchorOut(BaseModel):
    """The head of the audit chain as stored outside the database."""

    seq: int
    hash: str
    at: datetime
    written_at: datetime
    #: backend id of the storage that holds it
    where: str


class AuditVerifyOut(BaseModel):
    ok: bool
    events: int
    first_bad_seq: int | None
    problem: str
    #: the newest anchor found in each anchor place (none yet: empty)
    anchors: list[AnchorOut] = []


class ErrorOut(BaseModel):
    """levere's error body, for every error of every route."""

    error: str = Field(description="a stable code, e.g. not_found, access_denied, validation_failed")
    message: str = Field(description="what went wrong, in the user's words")
    details: dict[str, Any] = Field(
        description="more about it: for validation_failed, `fields` maps each field to its reason"
    )


# --- invitations --------------------------------------------------------------------------------


class HandedOverOut(BaseModel):
    """An invitation link that was not e-mailed (mail is off): pass it on to ``email``."""

    email: str
    link: str
    expires_at: datetime


class Handover(BaseModel):
    """Part of every answer to a request that may invite people. ``invitation_links`` is filled only
    while mail is off; otherwise the links went out by e-mail and are not shown to the inviter."""

    mail_enabled: bool = True
    invitation_links: list[HandedOverOut] = []

    @classmethod
    def extend(cls, out: BaseModel, mail_enabled: bool, links: Iterable[Any]) -> Self:
        """``out`` (the answer without links) with the mail state and the links handed over."""
        handed = [HandedOverOut.model_validate(link, from_attributes=True) for link in links]
        return cls.model_validate(
            out.model_dump() | {"mail_enabled": mail_enabled, "invitation_links": handed}
        )


class InvitedUserOut(UserOut, Handover):
    pass


class AddedMemberOut(MemberOut, Handover):
    pass


class ApprovedProjectOut(ProjectOut, Handover):
    pass


class DraftedApplicationOut(ApplicationOut, Handover):
    pass


class PendingInvitationOut(Out):
    email: str
    name: str
    invited_by: str
    project: str
    created_at: datetime
    expires_at: datetime
    expired: bool


class ResentInvitationOut(Handover):
    email: str
    expires_at: datetime
