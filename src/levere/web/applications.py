"""Applications in the portal: the form (draft, edit, submit), the PI's confirmation, and review."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from levere.domain.applications import MAX_MEMBERS, ApplicationForm, RequestedMember, check_draft
from levere.domain.errors import ValidationFailed
from levere.domain.roles import Action, ProjectRole, UserKind, require
from levere.domain.units import format_size, parse_size
from levere.http_deps import CtxDep, acts
from levere.services import accounts, applications, portal_views
from levere.services.views import ApplicationView
from levere.web.render import page, redirect
from levere.web.session import PREFIX, CsrfChecked, PortalUser

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form()]

TEXT_FIELDS = ("title", "pi_email", "data_ownership", "funding_source", "grant_id", "description", "facility")
SIZE_FIELDS = ("quota_area_bytes", "quota_longterm_bytes")
#: empty member rows the form offers below the filled ones (the page has no script to add rows)
SPARE_MEMBER_ROWS = 3
ROLES = [r.value for r in ProjectRole]


def _form_values(form: FormData) -> dict[str, Any]:
    """What the browser sent, as the form shows it again (sizes as typed)."""
    values: dict[str, Any] = {name: str(form.get(name, "")).strip() for name in (*TEXT_FIELDS, *SIZE_FIELDS)}
    values["secure_project_id"] = str(form.get("secure_project_id", "")).strip()
    values["sensitive"] = form.get("sensitive") == "yes"
    members = []
    rows = str(form.get("member_rows", "0"))
    for i in range(min(int(rows), MAX_MEMBERS + SPARE_MEMBER_ROWS) if rows.isdigit() else 0):
        email = str(form.get(f"member_email_{i}", "")).strip()
        role = str(form.get(f"member_role_{i}", "member"))
        if email:
            members.append({"email": email, "role": role})
    values["members"] = members
    return values


def _parsed(values: dict[str, Any]) -> ApplicationForm:
    """The application form from what was sent; every problem is reported next to its field."""
    problems: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for name in SIZE_FIELDS:
        text = values[name]
        try:
            sizes[name] = parse_size(text, name) if text else 0
        except ValidationFailed as exc:
            problems.update(exc.fields)
    members = []
    for i, member in enumerate(values["members"]):
        if member["role"] not in ROLES:
            problems[f"members[{i}].role"] = "choose admin, member or viewer"
            continue
        members.append(RequestedMember(member["email"], ProjectRole(member["role"])))
    form = ApplicationForm(
        **{name: values[name] for name in TEXT_FIELDS},
        quota_area_bytes=sizes.get("quota_area_bytes", 0),
        quota_longterm_bytes=sizes.get("quota_longterm_bytes", 0),
        sensitive=values["sensitive"],
        secure_project_id=values["secure_project_id"],
        members=members,
    )
    try:
        check_draft(form)
    except ValidationFailed as exc:
        problems = exc.fields | problems
    if problems:
        raise ValidationFailed(problems)
    return form


def _form_page(request: Request, values: dict[str, Any], errors: dict[str, str], *, number: int | None,
               may_submit: bool, status: int = 200) -> Response:  # fmt: skip
    """``may_submit``: the viewer is the PI (only the PI submits, and so confirms, an application)."""
    rows = list(values["members"]) + [{"email": "", "role": "member"}] * SPARE_MEMBER_ROWS
    return page(request, "application_form.html", status, values=values, errors=errors, number=number,
                member_rows=rows, roles=ROLES, may_submit=may_submit)  # fmt: skip


def _is_pi(viewer: PortalUser, values: dict[str, Any]) -> bool:
    pi = str(values.get("pi_email") or "").strip().lower()
    return viewer.user.kind == UserKind.USER and pi in ("", viewer.user.email)


def _values_of(view: ApplicationView) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(view, name) or "" for name in TEXT_FIELDS}
    for name in SIZE_FIELDS:
        size = getattr(view, name)
        values[name] = format_size(size).replace(" ", "") if size else ""
    values["sensitive"] = view.sensitive
    values["secure_project_id"] = view.secure_project_id
    values["members"] = [{"email": m.email, "role": m.role} for m in view.members]
    return values


def _empty_values() -> dict[str, Any]:
    return {name: "" for name in (*TEXT_FIELDS, *SIZE_FIELDS, "secure_project_id")} | {
        "sensitive": False,
        "members": [],
    }


@router.get("/applications/new", openapi_extra=acts(Action.APPLICATION_CREATE))
def new_application(request: Request, viewer: PortalUser) -> Response:
    require(accounts.subject_of(viewer.user), Action.APPLICATION_CREATE)
    values = _empty_values()
    if viewer.user.facility is not None:
        values["facility"] = viewer.user.facility.name
    return _form_page(request, values, {}, number=None, may_submit=_is_pi(viewer, values))


async def _save(request: Request, viewer: PortalUser, ctx: CtxDep, number: int | None) -> Response:
    form = await request.form()
    values = _form_values(form)
    submit = form.get("intent") == "submit"
    try:
        parsed = _parsed(values)
        if number is None:
            number = applications.create(ctx, viewer.user, parsed).number
        else:
            applications.update(ctx, viewer.user, str(number), dict(vars(parsed)))
        if submit:
            applications.submit(ctx, viewer.user, str(number))
    except ValidationFailed as exc:
        return _form_page(
            request, values, exc.fields, number=number, may_submit=_is_pi(viewer, values), status=422
        )
    return redirect(f"{PREFIX}/applications/{number}")


@router.post("/applications/new", openapi_extra=acts(Action.APPLICATION_CREATE), dependencies=[CsrfChecked])
async def create_application(request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    return await _save(request, viewer, ctx, None)


@router.get("/applications/{number}", openapi_extra=acts(Action.APPLICATION_READ))
def show_application(request: Request, number: int, viewer: PortalUser, ctx: CtxDep) -> Response:
    view = portal_views.application_page(ctx, viewer.user, str(number))
    return page(request, "application.html", application=view, errors={})


@router.get("/applications/{number}/edit", openapi_extra=acts(Action.APPLICATION_EDIT))
def edit_application(request: Request, number: int, viewer: PortalUser, ctx: CtxDep) -> Response:
    view = portal_views.application_page(ctx, viewer.user, str(number))
    if not view.may_edit:
        applications.update(ctx, viewer.user, str(number), {})  # says why: no access, or no longer editable
    return _form_page(request, _values_of(view.application), {}, number=number, may_submit=view.may_submit)


@router.post(
    "/applications/{number}/edit", openapi_extra=acts(Action.APPLICATION_EDIT), dependencies=[CsrfChecked]
)
async def save_application(request: Request, number: int, viewer: PortalUser, ctx: CtxDep) -> Response:
    return await _save(request, viewer, ctx, number)


def _with_errors(
    request: Request, ctx: CtxDep, viewer: PortalUser, number: int, exc: ValidationFailed
) -> Response:
    view = portal_views.application_page(ctx, viewer.user, str(number))
    return page(request, "application.html", 422, application=view, errors=exc.fields)


@router.post(
    "/applications/{number}/submit", openapi_extra=acts(Action.APPLICATION_SUBMIT), dependencies=[CsrfChecked]
)
def submit_application(request: Request, number: int, viewer: PortalUser, ctx: CtxDep) -> Response:
    """The PI's confirmation: submits the application for review."""
    try:
        applications.submit(ctx, viewer.user, str(number))
    except ValidationFailed as exc:
        return _with_errors(request, ctx, viewer, number, exc)
    return redirect(f"{PREFIX}/applications/{number}")


@router.post(
    "/applications/{number}/withdraw",
    openapi_extra=acts(Action.APPLICATION_WITHDRAW),
    dependencies=[CsrfChecked],
)
def withdraw_application(number: int, viewer: PortalUser, ctx: CtxDep) -> Response:
    applications.withdraw(ctx, viewer.user, str(number))
    return redirect(f"{PREFIX}/applications/{number}")


@router.post(
    "/applications/{number}/approve",
    openapi_extra=acts(Action.APPLICATION_REVIEW),
    dependencies=[CsrfChecked],
)
def approve_application(
    request: Request, number: int, viewer: PortalUser, ctx: CtxDep,
    area: Text = "", longterm: Text = "", comment: Text = "",
) -> Response:  # fmt: skip
    """Approve, optionally granting other quotas than those requested (sizes like 50G)."""
    try:
        granted = {
            name: parse_size(text.strip(), f"granted_{name}") if text.strip() else None
            for name, text in (("area", area), ("longterm", longterm))
        }
        applications.approve(
            ctx, viewer.user, str(number),
            area_bytes=granted["area"], longterm_bytes=granted["longterm"], comment=comment.strip(),
        )  # fmt: skip
    except ValidationFailed as exc:
        return _with_errors(request, ctx, viewer, number, exc)
    return redirect(f"{PREFIX}/applications/{number}")


@router.post(
    "/applications/{number}/request-changes",
    openapi_extra=acts(Action.APPLICATION_REVIEW),
    dependencies=[CsrfChecked],
)
def request_changes(
    request: Request, number: int, viewer: PortalUser, ctx: CtxDep, reason: Text = ""
) -> Response:
    try:
        applications.request_changes(ctx, viewer.user, str(number), reason)
    except ValidationFailed as exc:
        return _with_errors(request, ctx, viewer, number, exc)
    return redirect(f"{PREFIX}/applications/{number}")


@router.post(
    "/applications/{number}/reject", openapi_extra=acts(Action.APPLICATION_REVIEW), dependencies=[CsrfChecked]
)
def reject(request: Request, number: int, viewer: PortalUser, ctx: CtxDep, reason: Text = "") -> Response:
    try:
        applications.reject(ctx, viewer.user, str(number), reason)
    except ValidationFailed as exc:
        return _with_errors(request, ctx, viewer, number, exc)
    return redirect(f"{PREFIX}/applications/{number}")


@router.get("/review", openapi_extra=acts(Action.APPLICATION_QUEUE))
def review_queue(request: Request, viewer: PortalUser, ctx: CtxDep) -> Response:
    return page(request, "review.html", queue=applications.queue(ctx, viewer.user))
