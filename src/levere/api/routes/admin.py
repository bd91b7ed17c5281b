"""Helpdesk administration: users, facilities, the audit log."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from levere.api.deps import CtxDep, ReadUser, ReviewUser, acts
from levere.api.routes.accounts import user_out
from levere.api.schemas import AuditEventOut, AuditVerifyOut, FacilityIn, FacilityOut, UserIn, UserOut
from levere.db.models import AuditEvent, Facility, User
from levere.domain.roles import Action, UserKind, require
from levere.services import accounts, audit
from levere.services.notify import notify

router = APIRouter(tags=["administration"])


@router.get("/users", openapi_extra=acts(Action.USER_LIST))
def list_users(actor: ReviewUser, ctx: CtxDep) -> list[UserOut]:
    require(accounts.subject_of(actor), Action.USER_LIST)
    with ctx.tx() as session:
        return [user_out(u) for u in session.execute(select(User).order_by(User.email)).scalars()]


@router.post("/users", openapi_extra=acts(Action.USER_CREATE), status_code=201)
def create_user(body: UserIn, actor: ReviewUser, ctx: CtxDep) -> UserOut:
    """Create an account and e-mail its owner a link to set a password."""
    require(accounts.subject_of(actor), Action.USER_CREATE)
    with ctx.tx() as session:
        facility = accounts.get_facility(session, body.facility) if body.facility else None
        user = accounts.create_user(
            session, actor, body.email, kind=body.kind, name=body.name, facility=facility
        )
        _, secret = accounts.create_invitation(ctx, session, actor, user.email)
        role = {
            UserKind.HELPDESK: "a helpdesk operator",
            UserKind.FACILITY: f"staff of {facility.display_name if facility else ''}",
        }
        notify(
            ctx, session, [user], "[levere] Your levere account",
            f"{actor.email} has made you a levere account"
            + (f" as {role[body.kind]}" if body.kind in role else "")
            + f".\n\nSet your password with this link (it works once, for {ctx.settings.invitation_lifetime_hours} hours):\n"
            f"  {accounts.invitation_link(ctx, secret)}\n\nThen sign in:  levere login --url {ctx.settings.public_url} --email {user.email}\n",
        )  # fmt: skip
        return user_out(user)


@router.get("/facilities", openapi_extra=acts(Action.FACILITY_LIST))
def list_facilities(actor: ReadUser, ctx: CtxDep) -> list[FacilityOut]:
    require(accounts.subject_of(actor), Action.FACILITY_LIST)
    with ctx.tx() as session:
        return [
            FacilityOut.model_validate(f)
            for f in session.execute(select(Facility).order_by(Facility.name)).scalars()
        ]


@router.post("/facilities", openapi_extra=acts(Action.FACILITY_CREATE), status_code=201)
def create_facility(body: FacilityIn, actor: ReviewUser, ctx: CtxDep) -> FacilityOut:
    with ctx.tx() as session:
        facility = accounts.create_facility(session, actor, body.name, body.display_name, body.contact_email)
        return FacilityOut.model_validate(facility)


@router.get("/audit", openapi_extra=acts(Action.AUDIT_READ))
def audit_events(
    actor: ReviewUser, ctx: CtxDep, object_id: str | None = None, limit: int = 100
) -> list[AuditEventOut]:
    require(accounts.subject_of(actor), Action.AUDIT_READ)
    with ctx.tx() as session:
        query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(min(max(limit, 1), 1000))
        if object_id:
            query = query.where(AuditEvent.object_id == object_id)
        return [AuditEventOut.model_validate(e) for e in session.execute(query).scalars()]


@router.get("/audit/verify", openapi_extra=acts(Action.AUDIT_READ))
def audit_verify(actor: ReviewUser, ctx: CtxDep) -> AuditVerifyOut:
    require(accounts.subject_of(actor), Action.AUDIT_READ)
    with ctx.tx() as session:
        report = audit.verify_chain(session)
    return AuditVerifyOut(
        ok=report.ok, events=report.events, first_bad_seq=report.first_bad_seq, problem=report.problem
    )
