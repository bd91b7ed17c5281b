"""Projects, their members and facilities."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from levere.api.deps import CtxDep, ReadUser, ReviewUser, WriteUser, acts, second_factor
from levere.api.openapi import errors
from levere.api.routes.deliveries import DeliveryOut, delivery_out
from levere.api.routes.sync import JobOut
from levere.api.schemas import (
    AddedMemberOut,
    DeliverySummaryOut,
    FacilityAssignIn,
    FacilityOut,
    MemberIn,
    MemberOut,
    ProjectOut,
    ProjectPatch,
    QuotaIn,
    QuotaOut,
    RoleIn,
)
from levere.domain.roles import Action
from levere.services import invitations, overview, project_zone, projects

router = APIRouter(prefix="/projects", tags=["projects"])


class ProjectPageOut(BaseModel):
    """A project's page: the project with its quota use per tier, members, deliveries and jobs."""

    project: ProjectOut
    members: list[MemberOut]
    deliveries: list[DeliveryOut]
    summary: DeliverySummaryOut
    recent_jobs: list[JobOut]


@router.get(
    "", summary="List the projects you may see", operation_id="list_projects", openapi_extra=acts(None)
)
def list_projects(actor: ReadUser, ctx: CtxDep) -> list[ProjectOut]:
    return [ProjectOut.model_validate(p) for p in projects.list_projects(ctx, actor)]


@router.get(
    "/{identifier}",
    summary="Show a project with its quotas and facilities",
    operation_id="get_project",
    responses=errors(404),
    openapi_extra=acts(Action.PROJECT_READ),
)
def show(identifier: str, request: Request, actor: ReadUser, ctx: CtxDep) -> ProjectOut:
    """A sensitive project's ``zone`` names its secure project and, for a sign-in with a second
    factor, lists its shared disks."""
    view = project_zone.show_project(ctx, actor, identifier, second_factor=second_factor(request, ctx))
    return ProjectOut.model_validate(view)


@router.get(
    "/{identifier}/overview",
    summary="Show a project's page: quota use per tier, members, deliveries and recent jobs",
    operation_id="get_project_overview",
    responses=errors(404),
    openapi_extra=acts(Action.PROJECT_READ),
)
def show_overview(identifier: str, request: Request, actor: ReadUser, ctx: CtxDep) -> ProjectPageOut:
    page = overview.project_page(ctx, actor, identifier, second_factor=second_factor(request, ctx))
    return ProjectPageOut(
        project=ProjectOut.model_validate(page.project),
        members=[MemberOut.model_validate(m) for m in page.members],
        deliveries=[delivery_out(d) for d in page.deliveries],
        summary=DeliverySummaryOut.model_validate(page.summary),
        recent_jobs=[JobOut.model_validate(j) for j in page.recent_jobs],
    )


@router.patch(
    "/{identifier}",
    summary="Change a project's settings",
    operation_id="update_project",
    responses=errors(404),
    openapi_extra=acts(Action.PROJECT_SETTINGS),
)
def update(identifier: str, body: ProjectPatch, actor: WriteUser, ctx: CtxDep) -> ProjectOut:
    return ProjectOut.model_validate(
        projects.update_settings(ctx, actor, identifier, sync_mode=body.sync_mode)
    )


@router.put(
    "/{identifier}/quotas/{tier}",
    summary="Set a project's quota on one tier",
    operation_id="set_project_quota",
    responses=errors(404, 409),
    openapi_extra=acts(Action.PROJECT_QUOTA),
)
def set_quota(identifier: str, tier: str, body: QuotaIn, actor: ReviewUser, ctx: CtxDep) -> QuotaOut:
    return QuotaOut.model_validate(projects.set_quota(ctx, actor, identifier, tier, body.limit))


@router.get(
    "/{identifier}/members",
    summary="List a project's members",
    operation_id="list_project_members",
    responses=errors(404),
    openapi_extra=acts(Action.MEMBER_LIST),
)
def list_members(identifier: str, actor: ReadUser, ctx: CtxDep) -> list[MemberOut]:
    return [MemberOut.model_validate(m) for m in projects.list_members(ctx, actor, identifier)]


@router.post(
    "/{identifier}/members",
    summary="Add a member to a project (invited by e-mail if new)",
    operation_id="add_project_member",
    responses=errors(404, 409),
    openapi_extra=acts(Action.MEMBER_MANAGE),
    status_code=201,
)
def add_member(identifier: str, body: MemberIn, actor: WriteUser, ctx: CtxDep) -> AddedMemberOut:
    """Give someone access; someone without an account is invited (the link is in the answer while
    mail is off)."""
    with invitations.handover() as links:
        member = projects.add_member(ctx, actor, identifier, body.email, body.role)
    return AddedMemberOut.extend(MemberOut.model_validate(member), ctx.settings.smtp.enabled, links)


@router.put(
    "/{identifier}/members/{email}",
    summary="Change a member's role",
    operation_id="set_member_role",
    responses=errors(404, 409),
    openapi_extra=acts(Action.MEMBER_MANAGE),
)
def set_role(identifier: str, email: str, body: RoleIn, actor: WriteUser, ctx: CtxDep) -> MemberOut:
    return MemberOut.model_validate(projects.set_role(ctx, actor, identifier, email, body.role))


@router.delete(
    "/{identifier}/members/{email}",
    summary="Remove a member from a project",
    operation_id="remove_project_member",
    responses=errors(404, 409),
    openapi_extra=acts(Action.MEMBER_MANAGE),
    status_code=204,
)
def remove_member(identifier: str, email: str, actor: WriteUser, ctx: CtxDep) -> None:
    projects.remove_member(ctx, actor, identifier, email)


@router.post(
    "/{identifier}/facilities",
    summary="Let a facility deliver into a project",
    operation_id="assign_facility",
    responses=errors(404, 409),
    openapi_extra=acts(Action.PROJECT_ASSIGN_FACILITY),
    status_code=201,
)
def assign_facility(identifier: str, body: FacilityAssignIn, actor: WriteUser, ctx: CtxDep) -> FacilityOut:
    return FacilityOut.model_validate(projects.assign_facility(ctx, actor, identifier, body.facility))
