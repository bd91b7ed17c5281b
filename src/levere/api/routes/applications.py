"""Applications: drafting, submission by the PI, review by the helpdesk."""

from __future__ import annotations

from fastapi import APIRouter

from levere.api.deps import CtxDep, ReadUser, ReviewUser, WriteUser, acts
from levere.api.openapi import errors
from levere.api.schemas import (
    ApplicationIn,
    ApplicationOut,
    ApplicationPatch,
    ApprovedProjectOut,
    ApproveIn,
    DraftedApplicationOut,
    ProjectOut,
    ReasonIn,
)
from levere.domain.applications import ApplicationForm, ApplicationState, RequestedMember
from levere.domain.roles import Action
from levere.services import applications, invitations

router = APIRouter(prefix="/applications", tags=["applications"])


def _form(body: ApplicationIn) -> ApplicationForm:
    data = body.model_dump()
    data["members"] = [RequestedMember(m.email, m.role) for m in body.members]
    return ApplicationForm(**data)


@router.post(
    "",
    summary="Draft an application for a project",
    operation_id="create_application",
    responses=errors(404),
    openapi_extra=acts(Action.APPLICATION_CREATE),
    status_code=201,
)
def create(body: ApplicationIn, actor: WriteUser, ctx: CtxDep) -> DraftedApplicationOut:
    """A draft; a PI without an account is invited to confirm it (the link is in the answer while
    mail is off)."""
    with invitations.handover() as links:
        application = applications.create(ctx, actor, _form(body))
    return DraftedApplicationOut.extend(
        ApplicationOut.model_validate(application), ctx.settings.smtp.enabled, links
    )


@router.get(
    "",
    summary="List the applications you may see",
    operation_id="list_applications",
    openapi_extra=acts(None),
)
def list_visible(actor: ReadUser, ctx: CtxDep, state: ApplicationState | None = None) -> list[ApplicationOut]:
    return [ApplicationOut.model_validate(a) for a in applications.visible(ctx, actor, state)]


@router.get(
    "/queue",
    summary="List the applications waiting for review",
    operation_id="list_review_queue",
    openapi_extra=acts(Action.APPLICATION_QUEUE),
)
def review_queue(actor: ReviewUser, ctx: CtxDep) -> list[ApplicationOut]:
    return [ApplicationOut.model_validate(a) for a in applications.queue(ctx, actor)]


@router.get(
    "/{ref}",
    summary="Show an application",
    operation_id="get_application",
    responses=errors(404),
    openapi_extra=acts(Action.APPLICATION_READ),
)
def show(ref: str, actor: ReadUser, ctx: CtxDep) -> ApplicationOut:
    return ApplicationOut.model_validate(applications.show(ctx, actor, ref))


@router.patch(
    "/{ref}",
    summary="Change a draft application",
    operation_id="edit_application",
    responses=errors(404, 409),
    openapi_extra=acts(Action.APPLICATION_EDIT),
)
def edit(ref: str, body: ApplicationPatch, actor: WriteUser, ctx: CtxDep) -> ApplicationOut:
    changes = body.model_dump(exclude_unset=True)
    if "members" in changes and body.members is not None:
        changes["members"] = [RequestedMember(m.email, m.role) for m in body.members]
    return ApplicationOut.model_validate(applications.update(ctx, actor, ref, changes))


@router.post(
    "/{ref}/submit",
    summary="Submit an application for review (the PI)",
    operation_id="submit_application",
    responses=errors(404, 409),
    openapi_extra=acts(Action.APPLICATION_SUBMIT),
)
def submit(ref: str, actor: WriteUser, ctx: CtxDep) -> ApplicationOut:
    return ApplicationOut.model_validate(applications.submit(ctx, actor, ref))


@router.post(
    "/{ref}/approve",
    summary="Approve an application: the project is created",
    operation_id="approve_application",
    responses=errors(404, 409),
    openapi_extra=acts(Action.APPLICATION_REVIEW),
)
def approve(ref: str, body: ApproveIn, actor: ReviewUser, ctx: CtxDep) -> ApprovedProjectOut:
    """Approve and provision; members without an account are invited (the links are in the answer
    while mail is off)."""
    with invitations.handover() as links:
        _, project = applications.approve(
            ctx,
            actor,
            ref,
            area_bytes=body.area_quota,
            longterm_bytes=body.longterm_quota,
            comment=body.comment,
        )
    return ApprovedProjectOut.extend(ProjectOut.model_validate(project), ctx.settings.smtp.enabled, links)


@router.post(
    "/{ref}/reject",
    summary="Reject an application, with a reason",
    operation_id="reject_application",
    responses=errors(404, 409),
    openapi_extra=acts(Action.APPLICATION_REVIEW),
)
def reject(ref: str, body: ReasonIn, actor: ReviewUser, ctx: CtxDep) -> ApplicationOut:
    return ApplicationOut.model_validate(applications.reject(ctx, actor, ref, body.reason))


@router.post(
    "/{ref}/request-changes",
    summary="Send an application back for changes, with a reason",
    operation_id="request_application_changes",
    responses=errors(404, 409),
    openapi_extra=acts(Action.APPLICATION_REVIEW),
)
def request_changes(ref: str, body: ReasonIn, actor: ReviewUser, ctx: CtxDep) -> ApplicationOut:
    return ApplicationOut.model_validate(applications.request_changes(ctx, actor, ref, body.reason))


@router.post(
    "/{ref}/withdraw",
    summary="Withdraw a draft or an undecided application",
    operation_id="withdraw_application",
    responses=errors(404, 409),
    openapi_extra=acts(Action.APPLICATION_WITHDRAW),
)
def withdraw(ref: str, actor: WriteUser, ctx: CtxDep) -> ApplicationOut:
    """Take back a draft, or a submitted application the helpdesk has not decided on."""
    return ApplicationOut.model_validate(applications.withdraw(ctx, actor, ref))
