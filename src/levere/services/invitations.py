"""Invitations: single-use links to set a password, the accounts the helpdesk makes, and re-sending.

Design notes
------------
An invitation is a row holding the SHA-256 of a random secret; the link carries the secret. The link
goes out by e-mail. When mail is off (``LEVERE_SMTP__ENABLED=false``, the default) nobody would ever
see it, so the link is *handed over* instead: while a front end runs a use case inside
:func:`handover`, every invitation the use case makes is also collected there, and the front end
gives the links to the person who made the invitations (the helpdesk, a project admin) to pass on.
This happens only when mail is off, and links are never logged. The collector is a context
variable so that the use cases deep inside provisioning (members of an approved application, the PI
of a drafted one) need no extra parameter to report their links.

Re-sending makes a new link and makes every earlier unused link of that address stop working, so
only the newest link in anyone's hands is good.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import Invitation, Notification, Project, User, utcnow
from levere.domain.errors import (
    AccessDenied,
    AlreadyExists,
    AlreadyInvited,
    Conflict,
    NotFound,
    ValidationFailed,
)
from levere.domain.roles import Action, UserKind, require
from levere.services import audit
from levere.services.accounts import (
    create_user,
    get_facility,
    hash_password,
    normalise_email,
    public_user,
    sha256,
    subject_of,
)
from levere.services.notify import notify
from levere.services.views import AccountView, SentInvitationView, account_view


@dataclass(frozen=True)
class HandedOver:
    """An invitation link that could not be e-mailed, for the inviting person to pass on."""

    email: str
    link: str
    expires_at: datetime


_handed_over: ContextVar[list[HandedOver] | None] = ContextVar("levere_handed_over", default=None)


@contextmanager
def handover() -> Iterator[list[HandedOver]]:
    """Collect the links of the invitations made inside the block while mail is off (see the notes)."""
    links: list[HandedOver] = []
    token = _handed_over.set(links)
    try:
        yield links
    finally:
        _handed_over.reset(token)


def create_invitation(
    ctx: Context,
    session: Session,
    actor: User | None,
    email: str,
    project_id: str | None = None,
    role: str | None = None,
) -> tuple[Invitation, str]:
    secret, digest = new_secret()
    invitation = Invitation(
        email=normalise_email(email),
        secret_hash=digest,
        project_id=project_id,
        role=role,
        invited_by_id=actor.id if actor else None,
        expires_at=utcnow() + timedelta(hours=ctx.settings.invitation_lifetime_hours),
    )
    session.add(invitation)
    session.flush()
    audit.record(
        session, actor, "invitation.created", "invitation", invitation.id,
        after={"email": invitation.email, "project_id": project_id, "role": role},
    )  # fmt: skip
    hand_over(ctx, invitation.email, invitation_link(ctx, secret), invitation.expires_at)
    return invitation, secret


def new_secret() -> tuple[str, str]:
    """A new invitation secret and the hash that is stored in its place."""
    secret = secrets.token_urlsafe(32)
    return secret, sha256(secret)


def hand_over(ctx: Context, email: str, link: str, expires_at: datetime) -> None:
    """Give ``link`` to the block collecting links (see :func:`handover`), when mail is off."""
    collected = _handed_over.get()
    if collected is not None and not ctx.settings.smtp.enabled:
        collected[:] = [h for h in collected if h.email != email]  # the newest link is the good one
        collected.append(HandedOver(email, link, expires_at))


def invitation_link(ctx: Context, secret: str) -> str:
    return f"{ctx.settings.public_url.rstrip('/')}/invite/{secret}"


def how_to_accept(ctx: Context, link: str) -> str:
    """The lines of an invitation e-mail that say how to use the link."""
    hours = ctx.settings.invitation_lifetime_hours
    return (
        f"Set your password with the levere command-line client (the link works once, for {hours} hours):\n"
        f"  levere account accept-invite {link}\n"
    )


# --- the state of a link ------------------------------------------------------------------------


class LinkState(StrEnum):
    VALID = "valid"
    USED = "used"
    EXPIRED = "expired"
    REPLACED = "replaced"  # a newer link was sent to the same address
    UNKNOWN = "unknown"


def _replaced(session: Session, invitation: Invitation) -> bool:
    newer = session.execute(
        select(Invitation.id).where(
            Invitation.email == invitation.email,
            Invitation.created_at > invitation.created_at,
            Invitation.id != invitation.id,
        )
    ).first()
    return newer is not None


def _state(session: Session, invitation: Invitation | None) -> LinkState:
    if invitation is None:
        return LinkState.UNKNOWN
    if invitation.accepted_at is not None:
        return LinkState.USED
    if invitation.expires_at <= utcnow():
        return LinkState.REPLACED if _replaced(session, invitation) else LinkState.EXPIRED
    return LinkState.VALID


def link_state(ctx: Context, secret: str) -> LinkState:
    """Whether a link still works (for the page a browser shows; says nothing about whose it is)."""
    with ctx.tx() as session:
        invitation = session.execute(
            select(Invitation).where(Invitation.secret_hash == sha256(secret))
        ).scalar()
        return _state(session, invitation)


def accept_invitation(ctx: Context, secret: str, password: str, name: str = "") -> AccountView:
    """Set the password of the invited account. The link works once and only until it expires."""
    new_hash = hash_password(password)  # before the transaction: Argon2 is slow by design
    with ctx.tx() as session:
        invitation = session.execute(
            select(Invitation).where(Invitation.secret_hash == sha256(secret)).with_for_update()
        ).scalar()
        match _state(session, invitation):
            case LinkState.UNKNOWN:
                raise NotFound("this invitation link is not valid")
            case LinkState.USED:
                raise AccessDenied(
                    "this invitation link was already used; sign in with your password instead"
                )
            case LinkState.REPLACED:
                raise AccessDenied("a newer invitation link was sent to you; use that one")
            case LinkState.EXPIRED:
                raise AccessDenied("this invitation link has expired; ask the helpdesk to send you a new one")
        assert invitation is not None  # _state said it is valid
        user = session.execute(select(User).where(User.email == invitation.email)).scalar()
        if user is None:
            user = create_user(session, None, invitation.email)
        if user.password_hash is not None:
            # an older link (e.g. a second invitation) must not reset a password that is already set
            raise Conflict(
                f"{user.email} already has a password: sign in with it",
                email=user.email,
                reason="has_password",
            )
        user.password_hash = new_hash
        if name:
            user.name = name
        invitation.accepted_at = utcnow()
        audit.record(
            session, user, "invitation.accepted", "invitation", invitation.id, after={"email": user.email}
        )
        return account_view(user)


# --- pending invitations (helpdesk) -------------------------------------------------------------


@dataclass(frozen=True)
class PendingInvitation:
    """Someone invited who has not set a password yet, with their newest invitation."""

    email: str
    name: str
    invited_by: str
    project: str  # the project identifier the invitation came with, or ""
    created_at: datetime
    expires_at: datetime
    expired: bool


def list_pending(ctx: Context, actor: User) -> list[PendingInvitation]:
    """Everyone with an invitation and no password yet, whether their link still works or not
    (four queries, however many people)."""
    with ctx.tx() as session:
        require(subject_of(actor), Action.INVITATION_LIST)
        open_links = Invitation.accepted_at.is_(None)
        waiting = User.password_hash.is_(None) & User.active
        people = list(
            session.execute(
                select(User)
                .where(waiting, User.email.in_(select(Invitation.email).where(open_links)))
                .order_by(User.email)
            ).scalars()
        )
        newest: dict[str, Invitation] = {}
        for link in session.execute(
            select(Invitation)
            .where(open_links, Invitation.email.in_(select(User.email).where(waiting)))
            .order_by(Invitation.created_at)
        ).scalars():
            newest[link.email] = link  # a later one replaces an earlier
        names: dict[str, str] = {}
        inviters = {i.invited_by_id for i in newest.values() if i.invited_by_id}
        if inviters:
            for user_id, email in session.execute(select(User.id, User.email).where(User.id.in_(inviters))):
                names[user_id] = email
        made_for = {i.project_id for i in newest.values() if i.project_id}
        if made_for:
            for project_id, identifier in session.execute(
                select(Project.id, Project.identifier).where(Project.id.in_(made_for))
            ):
                names[project_id] = identifier
        now = utcnow()
        found = []
        for user in people:
            invitation = newest.get(user.email)
            if invitation is None:
                continue
            found.append(
                PendingInvitation(
                    email=user.email, name=user.name, invited_by=names.get(invitation.invited_by_id or "", ""),
                    project=names.get(invitation.project_id or "", ""), created_at=invitation.created_at,
                    expires_at=invitation.expires_at, expired=invitation.expires_at <= now,
                )
            )  # fmt: skip
        return found


def resend(ctx: Context, actor: User, email: str) -> SentInvitationView:
    """A fresh link for someone who has not set a password yet; every earlier link stops working."""
    with ctx.tx() as session:
        require(subject_of(actor), Action.INVITATION_RESEND)
        email = normalise_email(email)
        user = session.execute(select(User).where(User.email == email)).scalar()
        if user is None or not user.active:
            raise NotFound(f"nobody with e-mail {email} is invited")
        if user.password_hash is not None:
            raise Conflict(f"{email} has already set a password and can sign in", email=email)
        previous = (
            session.execute(
                select(Invitation)
                .where(Invitation.email == email, Invitation.accepted_at.is_(None))
                .order_by(Invitation.created_at)
                .with_for_update()
            )
            .scalars()
            .all()
        )
        now = utcnow()
        for old in previous:
            old.expires_at = min(old.expires_at, now)
        # e-mails still waiting to go out (mail off or unreachable) carry the links just ended:
        # they are never sent, so the person gets only the fresh link
        session.execute(
            update(Notification)
            .where(
                Notification.email == email,
                Notification.email_state.in_(("disabled", "pending")),
                Notification.body.contains(invitation_link(ctx, "")),
            )
            .values(email_state="expired", email_error="not sent: a newer invitation link replaced it")
        )
        last = previous[-1] if previous else None
        invitation, secret = create_invitation(
            ctx, session, actor, email, last.project_id if last else None, last.role if last else None
        )
        audit.record(
            session, actor, "invitation.resent", "invitation", invitation.id,
            after={"email": email, "replaces": [old.id for old in previous]},
        )  # fmt: skip
        opening = f"{actor.email} has sent you a new invitation to levere; earlier links no longer work."
        _mail_link(ctx, session, user, "[levere] Your levere invitation", opening, secret)
        return SentInvitationView(email=invitation.email, expires_at=invitation.expires_at)


# --- accounts made by the helpdesk ---------------------------------------------------------------


def _mail_link(ctx: Context, session: Session, user: User, subject: str, opening: str, secret: str) -> None:
    notify(
        ctx, session, [user], subject,
        f"{opening}\n\n"
        + how_to_accept(ctx, invitation_link(ctx, secret))
        + f"\nThen sign in:  levere login --url {ctx.settings.public_url} --email {user.email}\n",
    )  # fmt: skip


def _send_account_link(ctx: Context, session: Session, actor: User, user: User, what: str) -> None:
    _, secret = create_invitation(ctx, session, actor, user.email)
    opening = f"{actor.email} has made you a levere account{what}."
    _mail_link(ctx, session, user, "[levere] Your levere account", opening, secret)


def _refuse_existing(user: User) -> None:
    if user.password_hash is None and user.active:
        raise AlreadyInvited(
            f"{user.email} is already invited and has not set a password yet", email=user.email
        )


def create_account(
    ctx: Context,
    actor: User,
    email: str,
    *,
    kind: UserKind = UserKind.USER,
    name: str = "",
    facility_name: str | None = None,
) -> AccountView:
    """The helpdesk makes an account; its owner gets an e-mail with a link to set a password."""
    with ctx.tx() as session:
        require(subject_of(actor), Action.USER_CREATE)
        facility = None
        if facility_name:
            try:
                facility = get_facility(session, facility_name)
            except NotFound:
                raise ValidationFailed(
                    {"facility": f"there is no facility named {facility_name!r}"}
                ) from None
        if facility is not None and kind is not UserKind.FACILITY:
            raise ValidationFailed({"facility": "only facility staff belong to a facility"})
        existing = session.execute(select(User).where(User.email == normalise_email(email))).scalar()
        if existing is not None:
            _refuse_existing(existing)
        user = create_user(session, actor, email, kind=kind, name=name, facility=facility)
        what = {
            UserKind.HELPDESK: " as a helpdesk operator",
            UserKind.FACILITY: f" as staff of {facility.display_name if facility else ''}",
            UserKind.USER: "",
        }[kind]
        _send_account_link(ctx, session, actor, user, what)
        return account_view(user)


def add_facility_staff(
    ctx: Context, actor: User, facility_name: str, email: str, name: str = ""
) -> AccountView:
    """Make someone staff of a facility: a new account (with an invitation), or an existing plain user."""
    with ctx.tx() as session:
        require(subject_of(actor), Action.FACILITY_ADD_STAFF)
        facility = get_facility(session, facility_name)
        email = normalise_email(email)
        user = session.execute(select(User).where(User.email == email)).scalar()
        if user is None:
            user = create_user(session, actor, email, kind=UserKind.FACILITY, name=name, facility=facility)
            _send_account_link(ctx, session, actor, user, f" as staff of {facility.display_name}")
            return account_view(user)
        if user.kind == UserKind.FACILITY and user.facility_id == facility.id:
            _refuse_existing(user)
            raise AlreadyExists(f"{email} is already staff of {facility.name}")
        if user.kind != UserKind.USER:
            where = f"staff of {user.facility.name}" if user.facility else f"a {user.kind} account"
            raise Conflict(f"{email} is {where} and cannot also be staff of {facility.name}")
        before = public_user(user)
        user.kind = UserKind.FACILITY.value
        user.facility_id = facility.id
        if name and not user.name:
            user.name = name
        session.flush()
        audit.record(session, actor, "user.facility_staff_added", "user", user.id, before, public_user(user))
        notify(
            ctx, session, [user], f"[levere] You are now staff of {facility.display_name}",
            f"{actor.email} has made you staff of {facility.display_name} in levere: you can draft "
            f"applications with PIs and deliver data into the projects {facility.name} is assigned to.\n",
        )  # fmt: skip
        return account_view(user)
