"""Adding people to a project: accounts for newcomers, memberships, invitations and welcome notes.

Design notes
------------
Approving an application adds every member it lists (up to
:data:`levere.domain.applications.MAX_MEMBERS`) in the approving transaction, which holds the
database's write lock (SQLite) and the audit chain's lock (both databases) until it ends. Done one
person at a time that cost several round trips per person (52 s for 10,000 people, with every
other write waiting). Here everything is done for all of them at once: one query per chunk of
addresses finds who already has an account, and the new accounts, memberships, invitations,
notifications and audit events each go in with one ``executemany``. A project admin adding one
person goes the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.bulk import insert_rows
from levere.db.models import (
    Project,
    ProjectMember,
    User,
    invitations_table,
    members_table,
    new_ids,
    users_table,
    utcnow,
)
from levere.domain.errors import Conflict
from levere.domain.roles import ProjectRole
from levere.services import accounts, audit, invitations
from levere.services.notify import Note, notify_each

#: addresses per ``IN (...)`` query, well inside every driver's limit on parameters
CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def add_members(
    ctx: Context, session: Session, actor: User, project: Project, people: Sequence[tuple[str, ProjectRole]]
) -> None:
    """Add ``people`` (e-mail, role) to ``project``, each welcomed by a notification; people without
    a password get an account (if they have none) and an invitation link in their welcome."""
    wanted = [(accounts.normalise_email(email), role) for email, role in people]
    emails = [email for email, _ in wanted]
    seen: set[str] = set()
    for email in emails:
        if email in seen:
            raise Conflict(f"{email} is already a member of {project.identifier}")
        seen.add(email)
    now = utcnow()
    changes: list[audit.Change] = []
    users = _users(session, emails)  # e-mail -> (id, has a password)
    newcomers = [email for email in emails if email not in users]
    new_user_ids = new_ids(len(newcomers))
    fresh = {"name": "", "kind": "user", "facility_id": None}
    insert_rows(
        session, users_table, ("id", "email"), list(zip(new_user_ids, newcomers, strict=True)),
        same=fresh | {"password_hash": None, "totp_secret": None, "totp_enabled": False,
                      "totp_last_step": None, "active": True, "created_at": now},
    )  # fmt: skip
    for user_id, email in zip(new_user_ids, newcomers, strict=True):
        users[email] = (user_id, False)
        changes.append(("user.created", "user", user_id, None, {"email": email, **fresh}))

    _refuse_members(session, project, [users[email][0] for email in emails])
    insert_rows(
        session, members_table, ("user_id", "role"),
        [(users[email][0], role.value) for email, role in wanted],
        same={"project_id": project.id, "added_at": now},
    )  # fmt: skip
    changes += [
        ("member.added", "project", project.id, None, {"email": email, "role": role.value})
        for email, role in wanted
    ]

    invited = [(email, role) for email, role in wanted if not users[email][1]]
    invitation_ids = new_ids(len(invited))
    expires_at = now + timedelta(hours=ctx.settings.invitation_lifetime_hours)
    secrets = [invitations.new_secret() for _ in invited]
    insert_rows(
        session, invitations_table, ("id", "email", "secret_hash", "role"),
        [(id_, email, digest, role.value)
         for id_, (email, role), (_, digest) in zip(invitation_ids, invited, secrets, strict=True)],
        same={"project_id": project.id, "invited_by_id": actor.id, "created_at": now, "accepted_at": None,
              "expires_at": expires_at},
    )  # fmt: skip
    links: dict[str, str] = {}
    for id_, (email, role), (secret, _) in zip(invitation_ids, invited, secrets, strict=True):
        links[email] = invitations.invitation_link(ctx, secret)
        invitations.hand_over(ctx, email, links[email], expires_at)
        after = {"email": email, "project_id": project.id, "role": role.value}
        changes.append(("invitation.created", "invitation", id_, None, after))
    audit.record_many(session, actor, changes)

    notes: list[Note] = [
        (users[email][0], email, f"[levere] You have joined project {project.identifier} as {role.value}",
         welcome_text(ctx, project, role, links.get(email)))
        for email, role in wanted
    ]  # fmt: skip
    notify_each(ctx, session, notes)


def _users(session: Session, emails: Sequence[str]) -> dict[str, tuple[str, bool]]:
    found: dict[str, tuple[str, bool]] = {}
    for chunk in _chunks(emails):
        rows = session.execute(
            select(User.email, User.id, User.password_hash.is_not(None)).where(User.email.in_(chunk))
        )
        found.update({email: (user_id, bool(has_password)) for email, user_id, has_password in rows})
    return found


def _refuse_members(session: Session, project: Project, user_ids: Sequence[str]) -> None:
    for chunk in _chunks(user_ids):
        already = session.execute(
            select(User.email)
            .join(ProjectMember, ProjectMember.user_id == User.id)
            .where(ProjectMember.project_id == project.id, ProjectMember.user_id.in_(chunk))
            .limit(1)
        ).scalar()
        if already is not None:
            raise Conflict(f"{already} is already a member of {project.identifier}")


def welcome_text(ctx: Context, project: Project, role: ProjectRole, link: str | None) -> str:
    can = {
        ProjectRole.ADMIN: "read and write its data and manage its members",
        ProjectRole.MEMBER: "read and write its data",
        ProjectRole.VIEWER: "read and download its data",
    }[role]
    if link:
        first = "1. " + invitations.how_to_accept(ctx, link).replace("\n  ", "\n   ")
    else:
        first = "1. You already have an account: sign in with your e-mail and password.\n"
    return (
        f"You have been given access to the project {project.identifier} ({project.title}) "
        f"as {role.value}: you can {can}.\n\n"
        f"How to get started:\n{first}"
        f"2. Install the levere client and sign in:  levere login --url {ctx.settings.public_url} --email YOUR_EMAIL\n"
        f"3. Find the project:  levere projects show {project.identifier}\n"
        f"4. See its data:  levere ls {project.identifier}\n"
        f"5. Download it, checksums verified:  levere download {project.identifier} --to DIR\n"
    )
