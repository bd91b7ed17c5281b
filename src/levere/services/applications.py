"""Applications for a project area and quota: drafting, the PI's submission, the helpdesk's review."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Application, Project, User, utcnow
from levere.domain.applications import (
    EDITABLE,
    ApplicationForm,
    ApplicationState,
    RequestedMember,
    check_complete,
    check_draft,
    transition,
)
from levere.domain.errors import InvalidTransition, NotFound, ValidationFailed
from levere.domain.roles import Action, ProjectRole, Subject, UserKind, allowed, require
from levere.domain.tiers import Tier
from levere.domain.units import format_size
from levere.services import accounts, audit, invitations, projects, secure
from levere.services.counters import next_value
from levere.services.notify import notify
from levere.services.views import ApplicationView, ProjectView, application_view

FORM_FIELDS = [f.name for f in fields(ApplicationForm)]
#: why an area quota cannot be granted to a sensitive application
NO_AREA_GRANT = (
    "a sensitive project has no working area, so no area quota is granted: its data lands on a "
    "shared disk in the secure zone, whose quota is set when the helpdesk creates the disk"
)


def subject_for(user: User, application: Application) -> Subject:
    return Subject(
        kind=UserKind(user.kind),
        is_pi=bool(application.pi_email) and user.email == application.pi_email,
        is_author=user.id == application.author_id,
        facility_assigned=user.kind == UserKind.FACILITY and user.facility_id == application.facility_id,
    )


def form_of(application: Application) -> ApplicationForm:
    return ApplicationForm(
        title=application.title,
        pi_email=application.pi_email,
        data_ownership=application.data_ownership,
        funding_source=application.funding_source,
        grant_id=application.grant_id,
        description=application.description,
        facility=application.facility.name if application.facility else "",
        quota_area_bytes=application.quota_area_bytes,
        quota_longterm_bytes=application.quota_longterm_bytes,
        sensitive=application.sensitive,
        secure_project_id=application.secure_project_id,
        members=[RequestedMember(m["email"], ProjectRole(m["role"])) for m in application.members],
    )


def _snapshot(application: Application) -> dict[str, Any]:
    data = asdict(form_of(application))
    data["state"] = application.state
    return data


def _apply_form(session: Session, application: Application, form: ApplicationForm) -> None:
    check_draft(form)
    if form.facility:
        try:
            application.facility_id = accounts.get_facility(session, form.facility).id
        except NotFound:
            raise ValidationFailed({"facility": f"there is no facility named {form.facility!r}"}) from None
    else:
        application.facility_id = None
    application.title = form.title.strip()
    application.pi_email = form.pi_email.strip().lower()
    application.data_ownership = form.data_ownership.strip()
    application.funding_source = form.funding_source.strip()
    application.grant_id = form.grant_id.strip()
    application.description = form.description.strip()
    application.quota_area_bytes = form.quota_area_bytes
    application.quota_longterm_bytes = form.quota_longterm_bytes
    application.sensitive = form.sensitive
    application.secure_project_id = form.secure_project_id.strip()
    application.members = [{"email": m.email.strip().lower(), "role": m.role.value} for m in form.members]
    session.flush()
    session.refresh(application)


def _views(session: Session, found: list[Application]) -> list[ApplicationView]:
    """Views of ``found``, with the identifiers of the projects approvals made (one query)."""
    session.flush()
    made = {a.project_id for a in found if a.project_id}
    identifiers: dict[str, str] = {}
    if made:
        rows = session.execute(select(Project.id, Project.identifier).where(Project.id.in_(made)))
        identifiers = {project_id: identifier for project_id, identifier in rows}
    return [application_view(a, identifiers.get(a.project_id) if a.project_id else None) for a in found]


def _view(session: Session, application: Application) -> ApplicationView:
    return _views(session, [application])[0]


def _name(application: Application) -> str:
    return f"application {application.number}"


def get(session: Session, user: User, ref: str, action: Action = Action.APPLICATION_READ) -> Application:
    query = select(Application)
    query = (
        query.where(Application.number == int(ref)) if ref.isdigit() else query.where(Application.id == ref)
    )
    application = session.execute(query).scalar()
    if application is None:
        raise NotFound(f"no application {ref}")
    require(subject_for(user, application), action, f"application {application.number}")
    return application


def create(ctx: Context, actor: User, form: ApplicationForm) -> ApplicationView:
    with ctx.tx() as session:
        require(accounts.subject_of(actor), Action.APPLICATION_CREATE)
        application = Application(number=next_value(session, "application"), author_id=actor.id)
        session.add(application)
        _apply_form(session, application, form)
        if not application.pi_email and actor.kind == UserKind.USER:
            application.pi_email = actor.email  # a PI applying for themselves
        audit.record(
            session, actor, "application.created", "application", application.id, after=_snapshot(application)
        )
        if application.pi_email and application.pi_email != actor.email:
            _tell_pi_to_confirm(ctx, session, actor, application)
        return _view(session, application)


def _tell_pi_to_confirm(ctx: Context, session: Session, actor: User, application: Application) -> None:
    pi, _created = accounts.get_or_create_invitee(session, actor, application.pi_email)
    link_text = ""
    if pi.password_hash is None:
        _, secret = invitations.create_invitation(ctx, session, actor, pi.email)
        link_text = "\nYou have no levere account yet. " + invitations.how_to_accept(
            ctx, invitations.invitation_link(ctx, secret)
        )
    notify(
        ctx, session, [pi],
        f"[levere] Please confirm application {application.number}: {application.title}",
        f"{actor.email} has drafted an application for a project area on your behalf:\n\n"
        f"  {application.title}\n\n"
        f"Check its details and submit it to the helpdesk when they are right:\n"
        f"  levere applications show {application.number}\n  levere applications submit {application.number}\n"
        f"{link_text}",
    )  # fmt: skip


def update(ctx: Context, actor: User, ref: str, changes: dict[str, Any]) -> ApplicationView:
    with ctx.tx() as session:
        application = get(session, actor, ref, Action.APPLICATION_EDIT)
        if ApplicationState(application.state) not in EDITABLE:
            raise InvalidTransition(
                f"application {application.number} is {application.state.replace('_', ' ')} and can no longer be edited"
            )
        unknown = sorted(set(changes) - set(FORM_FIELDS))
        if unknown:
            raise ValidationFailed({name: "is not a field of the application" for name in unknown})
        before = _snapshot(application)
        form = form_of(application)
        for name, value in changes.items():
            setattr(form, name, value)
        _apply_form(session, application, form)
        audit.record(
            session,
            actor,
            "application.edited",
            "application",
            application.id,
            before,
            _snapshot(application),
        )
        if application.pi_email and application.pi_email not in (before["pi_email"], actor.email):
            _tell_pi_to_confirm(ctx, session, actor, application)  # a new PI must confirm it too
        return _view(session, application)


def submit(ctx: Context, actor: User, ref: str) -> ApplicationView:
    """The PI submits (and so confirms) the application; it must be complete."""
    with ctx.tx() as session:
        application = get(session, actor, ref, Action.APPLICATION_SUBMIT)
        state = transition(
            ApplicationState(application.state), ApplicationState.SUBMITTED, _name(application)
        )
        check_complete(form_of(application))
        before = _snapshot(application)
        application.state = state.value
        application.pi_confirmed_at = utcnow()
        application.submitted_at = utcnow()
        audit.record(
            session,
            actor,
            "application.submitted",
            "application",
            application.id,
            before,
            _snapshot(application),
        )
        notify(
            ctx, session, accounts.helpdesk_operators(session),
            f"[levere] New application {application.number} to review: {application.title}",
            f"{application.pi_email} has submitted application {application.number}:\n\n"
            f"  {application.title}\n"
            + f"  area quota requested: {_area_asked(application)}\n"
            + f"  long-term quota requested: {format_size(application.quota_longterm_bytes)}\n"
            f"  sensitive: {'yes' if application.sensitive else 'no'}\n\n"
            f"Review it:  levere applications show {application.number}\n",
        )  # fmt: skip
        notify(
            ctx, session, _people(session, application),
            f"[levere] Application {application.number} was submitted",
            f"Application {application.number} ({application.title}) is now with the helpdesk for review.",
        )  # fmt: skip
        return _view(session, application)


def _people(session: Session, application: Application) -> list[User | str]:
    people: list[User | str] = [application.pi_email]
    author = session.get(User, application.author_id)
    if author is not None:
        people.append(author)
    return people


def queue(ctx: Context, actor: User) -> list[ApplicationView]:
    with ctx.tx() as session:
        require(accounts.subject_of(actor), Action.APPLICATION_QUEUE)
        found = session.execute(
            select(Application)
            .where(Application.state == ApplicationState.SUBMITTED)
            .order_by(Application.submitted_at)
        ).scalars()
        return _views(session, list(found))


def visible(ctx: Context, actor: User, state: str | None = None) -> list[ApplicationView]:
    with ctx.tx() as session:
        query = select(Application).order_by(Application.number)
        if state:
            query = query.where(Application.state == state)
        found = session.execute(query).scalars()
        return _views(session, [a for a in found if allowed(subject_for(actor, a), Action.APPLICATION_READ)])


def approve(
    ctx: Context,
    actor: User,
    ref: str,
    *,
    area_bytes: int | None = None,
    longterm_bytes: int | None = None,
    comment: str = "",
) -> tuple[ApplicationView, ProjectView]:
    """Approve and provision in one transaction, optionally granting other quotas than requested."""
    with ctx.tx() as session:
        application = get(session, actor, ref, Action.APPLICATION_REVIEW)
        state = transition(ApplicationState(application.state), ApplicationState.APPROVED, _name(application))
        for name, value in ((Tier.AREA, area_bytes), (Tier.LONGTERM, longterm_bytes)):
            if value is not None and value <= 0:
                raise ValidationFailed({f"{name}_quota": "a granted quota must be larger than zero"})
        if application.sensitive and area_bytes is not None:
            raise ValidationFailed({"area_quota": NO_AREA_GRANT})
        before = _snapshot(application)
        granted: dict[Tier, int] = {
            Tier.LONGTERM: longterm_bytes if longterm_bytes is not None else application.quota_longterm_bytes,
        }
        if not application.sensitive:
            # a sensitive project has no working area; an area quota an older form asked for is
            # not granted (the approval's mail says so)
            granted[Tier.AREA] = area_bytes if area_bytes is not None else application.quota_area_bytes
        pi, _ = accounts.get_or_create_invitee(session, actor, application.pi_email)
        identifier = projects.new_identifier(session, next_value(session, "project"))
        project = projects.provision(
            ctx, session, actor,
            identifier=identifier,
            title=application.title,
            quota_bytes=granted,
            pi=pi,
            members_wanted=[projects.NewMember(m["email"], ProjectRole(m["role"])) for m in application.members],
            facility=application.facility,
            sensitive=application.sensitive,
            secure_project_id=application.secure_project_id,
        )  # fmt: skip
        if application.sensitive:
            # the users' secure project: the one the application names, or a new one
            secure.attach_on_approval(ctx, session, actor, project, application.secure_project_id)
        application.state = state.value
        application.reviewer_id = actor.id
        application.decided_at = utcnow()
        application.review_comment = comment
        application.granted_area_bytes = granted.get(Tier.AREA)
        application.granted_longterm_bytes = granted[Tier.LONGTERM]
        application.project_id = project.id
        after = _snapshot(application) | {"project": identifier, "granted": granted}
        audit.record(session, actor, "application.approved", "application", application.id, before, after)
        quota_text = _granted_text(application, granted, project.secure_project_id)
        notify(
            ctx, session, _people(session, application),
            f"[levere] Application {application.number} approved: project {identifier}",
            f"Your application {application.number} ({application.title}) was approved.\n\n"
            f"Project identifier: {identifier}\nGranted quota:\n{quota_text}\n"
            + (f"\nComment from the helpdesk: {comment}\n" if comment else ""),
        )  # fmt: skip
        session.flush()
        return _views(session, [application])[0], projects.project_view(session, project, actor)


def _area_asked(application: Application) -> str:
    """The area quota asked for, in the review's words: for a sensitive application, that none is
    granted (the form is the same for both kinds, so an applicant may have filled it in)."""
    if not application.sensitive:
        return format_size(application.quota_area_bytes)
    asked = f"{format_size(application.quota_area_bytes)} asked, " if application.quota_area_bytes else ""
    return f"none ({asked}not granted: sensitive data has no working area)"


def _granted_text(application: Application, granted: dict[Tier, int], secure_project_id: str) -> str:
    """The granted quotas in the approval's mail, with what was asked for where it differs."""

    def line(words: str, tier: Tier, asked: int) -> str:
        note = f" (you asked for {format_size(asked)})" if granted[tier] != asked else ""
        return f"  {words}: {format_size(granted[tier])}{note}"

    longterm = line("long-term storage", Tier.LONGTERM, application.quota_longterm_bytes)
    if Tier.AREA in granted:
        return line("working area", Tier.AREA, application.quota_area_bytes) + "\n" + longterm
    return (
        f"{longterm}\n"
        f"  secure project (sensitive data): {secure_project_id}\n"
        "  no working area: sensitive data is kept encrypted in the secure zone, on a shared disk "
        "the helpdesk sets up with its own quota"
        + (f" (the {format_size(application.quota_area_bytes)} area quota asked for is not granted)"
           if application.quota_area_bytes else "")
    )  # fmt: skip


def _decide(
    ctx: Context, actor: User, ref: str, target: ApplicationState, reason: str, action_name: str
) -> ApplicationView:
    with ctx.tx() as session:
        application = get(session, actor, ref, Action.APPLICATION_REVIEW)
        state = transition(ApplicationState(application.state), target, _name(application))
        if not reason.strip():
            raise ValidationFailed({"reason": "is required: tell the applicant why"})
        before = _snapshot(application)
        application.state = state.value
        application.reviewer_id = actor.id
        application.review_comment = reason.strip()
        if target is ApplicationState.REJECTED:
            application.decided_at = utcnow()
        audit.record(
            session,
            actor,
            action_name,
            "application",
            application.id,
            before,
            _snapshot(application) | {"reason": reason},
        )
        if target is ApplicationState.REJECTED:
            subject = f"[levere] Application {application.number} was rejected"
            body = f"The helpdesk rejected application {application.number} ({application.title}).\n\nReason: {reason}\n"
        else:
            subject = f"[levere] Application {application.number} needs changes"
            body = (
                f"The helpdesk asks for changes to application {application.number} ({application.title}):\n\n"
                f"  {reason}\n\nEdit it and submit it again:  levere applications submit {application.number}\n"
            )
        notify(ctx, session, _people(session, application), subject, body)
        return _view(session, application)


def reject(ctx: Context, actor: User, ref: str, reason: str) -> ApplicationView:
    return _decide(ctx, actor, ref, ApplicationState.REJECTED, reason, "application.rejected")


def request_changes(ctx: Context, actor: User, ref: str, comment: str) -> ApplicationView:
    return _decide(
        ctx, actor, ref, ApplicationState.CHANGES_REQUESTED, comment, "application.changes_requested"
    )


def withdraw(ctx: Context, actor: User, ref: str) -> ApplicationView:
    """Its PI or author takes an application back before the helpdesk decided (a draft made by
    mistake, or one no longer wanted); the helpdesk is told if it was waiting in their queue."""
    with ctx.tx() as session:
        application = get(session, actor, ref, Action.APPLICATION_WITHDRAW)
        was = ApplicationState(application.state)
        state = transition(was, ApplicationState.WITHDRAWN, _name(application))
        before = _snapshot(application)
        application.state = state.value
        application.decided_at = utcnow()
        audit.record(
            session,
            actor,
            "application.withdrawn",
            "application",
            application.id,
            before,
            _snapshot(application),
        )
        if was is ApplicationState.SUBMITTED:
            notify(
                ctx, session, accounts.helpdesk_operators(session),
                f"[levere] Application {application.number} was withdrawn",
                f"{actor.email} withdrew application {application.number} ({application.title}) before it "
                "was reviewed; it has left the review queue.",
            )  # fmt: skip
        people = [
            p for p in _people(session, application) if (p if isinstance(p, str) else p.email) != actor.email
        ]
        if people:
            notify(
                ctx, session, people,
                f"[levere] Application {application.number} was withdrawn",
                f"{actor.email} withdrew application {application.number} ({application.title}).",
            )  # fmt: skip
        return _view(session, application)


def show(ctx: Context, actor: User, ref: str) -> ApplicationView:
    with ctx.tx() as session:
        return _view(session, get(session, actor, ref))
