"""Helpdesk administration: users, invitations, facilities, the audit log."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from levere.api.deps import CtxDep, ReadUser, ReviewUser, acts
from levere.api.openapi import DATA_WRITE, errors
from levere.api.routes.sync import JobOut
from levere.api.schemas import (
    AnchorOut,
    AuditEventOut,
    AuditVerifyOut,
    FacilityIn,
    FacilityOut,
    FacilityPatch,
    InvitedUserOut,
    PendingInvitationOut,
    ProjectSummaryOut,
    QuotaOut,
    ResentInvitationOut,
    StaffIn,
    UserIn,
    UserOut,
)
from levere.domain.roles import Action
from levere.services import accounts, audit_anchors, audit_listing, invitations, overview

router = APIRouter(tags=["administration"])


class DashboardOut(BaseModel):
    """The helpdesk's overview of every project and of the jobs that need attention."""

    projects: list[ProjectSummaryOut]
    #: the newest failed jobs
    failed_jobs: list[JobOut]
    #: queued, running or retrying jobs that no worker has been on for too long
    stalled_jobs: list[JobOut]
    #: limit, used and reserved over every project, per tier
    tiers: list[QuotaOut]


@router.get(
    "/dashboard",
    summary="Show every project's quota use per tier, and the failed and stalled jobs",
    operation_id="get_dashboard",
    openapi_extra=acts(Action.PROJECT_LIST_ALL),
)
def dashboard(actor: ReviewUser, ctx: CtxDep) -> DashboardOut:
    view = overview.dashboard(ctx, actor)
    return DashboardOut(
        projects=[ProjectSummaryOut.model_validate(p) for p in view.projects],
        failed_jobs=[JobOut.model_validate(j) for j in view.failed_jobs],
        stalled_jobs=[JobOut.model_validate(j) for j in view.stalled_jobs],
        tiers=[QuotaOut.model_validate(t) for t in view.tiers],
    )


@router.get(
    "/users",
    summary="List every user account",
    operation_id="list_users",
    openapi_extra=acts(Action.USER_LIST),
)
def list_users(actor: ReviewUser, ctx: CtxDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in accounts.list_users(ctx, actor)]


@router.post(
    "/users",
    summary="Create an account and e-mail its owner a link to set a password",
    operation_id="create_user",
    responses=errors(404, 409),
    openapi_extra=acts(Action.USER_CREATE),
    status_code=201,
)
def create_user(body: UserIn, actor: ReviewUser, ctx: CtxDep) -> InvitedUserOut:
    """Create an account and e-mail its owner a link to set a password (the link is in the answer
    instead while mail is off)."""
    with invitations.handover() as links:
        user = invitations.create_account(
            ctx, actor, body.email, kind=body.kind, name=body.name, facility_name=body.facility
        )
    return InvitedUserOut.extend(UserOut.model_validate(user), ctx.settings.smtp.enabled, links)


@router.get(
    "/facilities",
    summary="List the sequencing facilities",
    operation_id="list_facilities",
    openapi_extra=acts(Action.FACILITY_LIST),
)
def list_facilities(actor: ReadUser, ctx: CtxDep) -> list[FacilityOut]:
    return [FacilityOut.model_validate(f) for f in accounts.list_facilities(ctx, actor)]


@router.post(
    "/facilities",
    summary="Register a sequencing facility",
    operation_id="create_facility",
    responses=errors(409),
    openapi_extra=acts(Action.FACILITY_CREATE),
    status_code=201,
)
def create_facility(body: FacilityIn, actor: ReviewUser, ctx: CtxDep) -> FacilityOut:
    facility = accounts.register_facility(ctx, actor, body.name, body.display_name, body.contact_email)
    return FacilityOut.model_validate(facility)


@router.patch(
    "/facilities/{name}",
    summary="Change a facility's settings",
    operation_id="update_facility",
    responses=errors(404),
    openapi_extra=acts(Action.FACILITY_UPDATE),
)
def update_facility(name: str, body: FacilityPatch, actor: ReviewUser, ctx: CtxDep) -> FacilityOut:
    """Change a facility's settings (only the fields given)."""
    facility = accounts.change_facility(ctx, actor, name, require_checksum_file=body.require_checksum_file)
    return FacilityOut.model_validate(facility)


@router.post(
    "/facilities/{name}/staff",
    summary="Make someone staff of a facility",
    operation_id="add_facility_staff",
    responses=errors(404, 409),
    openapi_extra=acts(Action.FACILITY_ADD_STAFF),
    status_code=201,
)
def add_staff(name: str, body: StaffIn, actor: ReviewUser, ctx: CtxDep) -> InvitedUserOut:
    """Make someone staff of a facility (a new account gets a link to set a password)."""
    with invitations.handover() as links:
        user = invitations.add_facility_staff(ctx, actor, name, body.email, body.name)
    return InvitedUserOut.extend(UserOut.model_validate(user), ctx.settings.smtp.enabled, links)


@router.get(
    "/invitations",
    summary="List everyone invited who has not set a password yet",
    operation_id="list_invitations",
    openapi_extra=acts(Action.INVITATION_LIST),
)
def list_invitations(actor: ReviewUser, ctx: CtxDep) -> list[PendingInvitationOut]:
    """Everyone invited who has not set a password yet, with their newest link's dates."""
    return [PendingInvitationOut.model_validate(p) for p in invitations.list_pending(ctx, actor)]


@router.post(
    "/invitations/{email}/resend",
    summary="Send someone a fresh invitation link",
    operation_id="resend_invitation",
    responses=errors(404, 409),
    openapi_extra=acts(Action.INVITATION_RESEND),
)
def resend_invitation(email: str, actor: ReviewUser, ctx: CtxDep) -> ResentInvitationOut:
    """A fresh link for someone who has not set a password yet; their earlier links stop working."""
    with invitations.handover() as links:
        invitation = invitations.resend(ctx, actor, email)
    plain = ResentInvitationOut.model_validate(invitation, from_attributes=True)
    return ResentInvitationOut.extend(plain, ctx.settings.smtp.enabled, links)


@router.get(
    "/audit",
    summary="Read the audit log, newest first",
    operation_id="list_audit_events",
    openapi_extra=acts(Action.AUDIT_READ),
)
def audit_events(
    actor: ReviewUser, ctx: CtxDep, object_id: str | None = None, limit: int = 100
) -> list[AuditEventOut]:
    """The newest events first; ``object_id`` is an object's id or the identifier people know it by
    (``LEV-2026-0001``, an application number, an e-mail, a facility name)."""
    events = audit_listing.list_events(ctx, actor, about=object_id, limit=limit)
    return [AuditEventOut.model_validate(e) for e in events]


@router.get(
    "/audit/verify",
    summary="Check the audit log's hash chain",
    operation_id="verify_audit_log",
    openapi_extra=acts(Action.AUDIT_READ),
)
def audit_verify(actor: ReviewUser, ctx: CtxDep) -> AuditVerifyOut:
    """Check the hash chain, and that it still holds the newest anchors stored outside the database."""
    report, anchors = audit_anchors.verify_log(ctx, actor)
    return AuditVerifyOut(
        ok=report.ok,
        events=report.events,
        first_bad_seq=report.first_bad_seq,
        problem=report.problem,
        anchors=[AnchorOut.model_validate(a, from_attributes=True) for a in anchors],
    )


@router.post(
    "/audit/anchor",
    summary="Anchor the head of the audit log outside the database, write-once",
    operation_id="anchor_audit_log",
    responses=errors(*DATA_WRITE),
    openapi_extra=acts(Action.AUDIT_ANCHOR),
)
def audit_anchor(actor: ReviewUser, ctx: CtxDep) -> list[AnchorOut]:
    """Write the head of the audit chain, write-once, to long-term storage (and the anchor sink)."""
    return [AnchorOut.model_validate(a, from_attributes=True) for a in audit_anchors.anchor_now(ctx, actor)]
