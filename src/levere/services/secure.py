"""The secure zone's projects and members: registering secure projects, their keys, who may act.

Shared disks are in :mod:`levere.services.secure_disks`.

Design notes
------------
* Every secure project has an X25519 key pair made by :func:`new_key_pair`; the private key is
  stored only wrapped under the current master key (``[secure] master_key_file``), bound to the
  row it belongs to, and never leaves this module in clear: no view, log or audit event holds it.
* Who a user is for a secure project (:func:`subject_for_secure`): for a users' secure project,
  their role in its research project, or ``member`` while an admin's invitation into the zone runs;
  the staff of the facility assigned to the research project count as the assigned facility. For a
  facility's secure project, that facility's staff are the assigned facility.
* Every read and every change in the zone is an audit event (``secure.*``), reads included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.crypt4gh import MasterKeys, PrivateKey
from levere.db.models import Facility, Project, SecureMember, SecureProject, SharedDisk, User, utcnow
from levere.domain.errors import AlreadyExists, Conflict, NotFound, ValidationFailed
from levere.domain.roles import Action, ProjectRole, Subject, UserKind, allowed, require
from levere.domain.secure import (
    SecureKind,
    check_end_date,
    check_secure_identifier,
    membership_active,
)
from levere.services import accounts, audit, projects
from levere.services.counters import next_value
from levere.services.notify import notify

#: the first number of the secure projects levere makes itself (p5001, p5002, ...), above those
#: the national service is likely to have handed out already
FIRST_MADE = 5000


@dataclass(frozen=True)
class KeyPair:
    """A new key pair as stored: the public key in base64, the private key wrapped."""

    public_key: str
    wrapped_private_key: str
    master_key_id: str


def master_keys(ctx: Context) -> MasterKeys:
    return MasterKeys.from_setting(ctx.settings.secure.master_key_file)


def new_key_pair(ctx: Context, context: str) -> KeyPair:
    """A fresh X25519 key pair, its private key wrapped under the current master key and bound to
    ``context`` (the row it is stored on); the only place the zone makes keys."""
    keys = master_keys(ctx)
    private = PrivateKey.generate()
    return KeyPair(private.public_key.to_pem().splitlines()[1], keys.wrap(private, context), keys.current_id)


def key_context(kind: str, row_id: str) -> str:
    """What a wrapped private key is bound to: a copy on another row does not open."""
    return f"{kind}:{row_id}"


# --- looking up and checking ----------------------------------------------------------------


def get_secure(session: Session, identifier: str) -> SecureProject:
    found = session.execute(
        select(SecureProject).where(SecureProject.identifier == identifier.strip().lower())
    ).scalar()
    if found is None:
        raise NotFound(f"no secure project {identifier.strip()[:40]}")
    return found


def zone_membership(session: Session, secure: SecureProject, user: User) -> SecureMember | None:
    return session.get(SecureMember, (secure.id, user.id))


def subject_for_secure(session: Session, secure: SecureProject, user: User) -> Subject:
    kind = UserKind(user.kind)
    if secure.kind == SecureKind.FACILITY:
        staff = kind is UserKind.FACILITY and user.facility_id == secure.facility_id
        return Subject(kind=kind, facility_assigned=staff)
    role: ProjectRole | None = None
    assigned = False
    if secure.project is not None:
        base = projects.subject_for(session, secure.project, user)
        role, assigned = base.project_role, base.facility_assigned
    if role not in (ProjectRole.ADMIN, ProjectRole.MEMBER):
        invited = zone_membership(session, secure, user)
        if invited is not None and membership_active(invited.ends_at, invited.removed_at, utcnow()):
            role = ProjectRole.MEMBER
    return Subject(kind=kind, project_role=role, facility_assigned=assigned)


def authorize_secure(session: Session, user: User, identifier: str, action: Action) -> SecureProject:
    secure = get_secure(session, identifier)
    require(subject_for_secure(session, secure, user), action, f"in secure project {secure.identifier}")
    return secure


def authorize_data(session: Session, user: User, identifier: str) -> SecureProject:
    """The gate of every read of a users' secure project's data (listing, download): its admins and
    members, and staff only while an admin has let them in (until their end date)."""
    secure = authorize_secure(session, user, identifier, Action.SECURE_DATA_READ)
    audit.record(session, user, "secure.data_access", "secure_project", secure.id)
    return secure


# --- views ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureProjectView:
    identifier: str
    kind: str
    project: str | None  # the research project's identifier (users' secure projects)
    facility: str | None  # the facility's short name (a facility's secure project)
    public_key: str
    created_at: datetime


def view(secure: SecureProject) -> SecureProjectView:
    return SecureProjectView(
        identifier=secure.identifier,
        kind=secure.kind,
        project=secure.project.identifier if secure.project else None,
        facility=secure.facility.name if secure.facility else None,
        public_key=secure.public_key,
        created_at=secure.created_at,
    )


@dataclass(frozen=True)
class MemberView:
    email: str
    ends_at: datetime
    active: bool
    removed_at: datetime | None


def member_view(member: SecureMember, now: datetime) -> MemberView:
    return MemberView(
        email=member.user.email,
        ends_at=member.ends_at,
        active=membership_active(member.ends_at, member.removed_at, now),
        removed_at=member.removed_at,
    )


# --- secure projects ------------------------------------------------------------------------


def _make(
    ctx: Context,
    session: Session,
    actor: User,
    identifier: str,
    kind: SecureKind,
    *,
    project: Project | None = None,
    facility: Facility | None = None,
) -> SecureProject:
    if session.execute(select(SecureProject.id).where(SecureProject.identifier == identifier)).first():
        raise AlreadyExists(f"secure project {identifier} is already registered")
    secure = SecureProject(
        identifier=identifier,
        kind=kind.value,
        project_id=project.id if project else None,
        facility_id=facility.id if facility else None,
        public_key="",
        wrapped_private_key="",
        master_key_id="",
        created_by_id=actor.id,
    )
    session.add(secure)
    session.flush()
    keys = new_key_pair(ctx, key_context("secure-project", secure.id))
    secure.public_key = keys.public_key
    secure.wrapped_private_key = keys.wrapped_private_key
    secure.master_key_id = keys.master_key_id
    if project is not None:
        project.secure_project_id = identifier
    session.flush()
    audit.record(
        session, actor, "secure.registered", "secure_project", secure.id,
        after={"identifier": identifier, "kind": kind.value,
               "project": project.identifier if project else None,
               "facility": facility.name if facility else None,
               "master_key_id": keys.master_key_id},
    )  # fmt: skip
    return secure


def register(
    ctx: Context,
    actor: User,
    identifier: str,
    *,
    project: str | None = None,
    facility: str | None = None,
) -> SecureProjectView:
    """Register a secure project that exists at the national service: a users' one for a research
    project (``project``), or a facility's own (``facility``); exactly one of the two."""
    identifier = check_secure_identifier(identifier.lower())
    if (project is None) == (facility is None):
        raise ValidationFailed({"project": "give either the research project or the facility, not both"})
    with ctx.tx() as session:
        require(accounts.subject_of(actor), Action.SECURE_REGISTER)
        if project is not None:
            research = projects.get_project(session, project)
            if research.secure_project_id and research.secure_project_id != identifier:
                raise Conflict(
                    f"project {research.identifier} already has secure project {research.secure_project_id}"
                )
            secure = _make(ctx, session, actor, identifier, SecureKind.USERS, project=research)
        else:
            owner = accounts.get_facility(session, facility or "")
            taken = session.execute(
                select(SecureProject.identifier).where(
                    SecureProject.facility_id == owner.id, SecureProject.kind == SecureKind.FACILITY
                )
            ).scalar()
            if taken:
                raise Conflict(f"facility {owner.name} already has secure project {taken}")
            secure = _make(ctx, session, actor, identifier, SecureKind.FACILITY, facility=owner)
        return view(secure)


def attach_on_approval(
    ctx: Context, session: Session, actor: User, project: Project, named: str
) -> SecureProject:
    """The users' secure project of a sensitive project just provisioned, in the approval's
    transaction: the one the application names (registered now if levere does not know it yet),
    or a new one."""
    if named:
        identifier = check_secure_identifier(named.lower(), "secure_project_id")
        found = session.execute(select(SecureProject).where(SecureProject.identifier == identifier)).scalar()
        if found is None:
            return _make(ctx, session, actor, identifier, SecureKind.USERS, project=project)
        if found.kind != SecureKind.USERS:
            raise ValidationFailed(
                {"secure_project_id": f"{identifier} is a facility's secure project, not a users' one"}
            )
        if found.project_id is not None and found.project_id != project.id:
            raise Conflict(f"secure project {identifier} already belongs to another research project")
        found.project_id = project.id
        project.secure_project_id = identifier
        audit.record(
            session, actor, "secure.linked", "secure_project", found.id,
            after={"identifier": identifier, "project": project.identifier},
        )  # fmt: skip
        return found
    while True:
        identifier = f"p{FIRST_MADE + next_value(session, 'secure_project')}"
        if not session.execute(
            select(SecureProject.id).where(SecureProject.identifier == identifier)
        ).first():
            return _make(ctx, session, actor, identifier, SecureKind.USERS, project=project)


def show(ctx: Context, actor: User, identifier: str) -> SecureProjectView:
    with ctx.tx() as session:
        secure = authorize_secure(session, actor, identifier, Action.SECURE_READ)
        audit.record(session, actor, "secure.read", "secure_project", secure.id)
        return view(secure)


def visible(ctx: Context, actor: User) -> list[SecureProjectView]:
    """The secure projects ``actor`` may see."""
    with ctx.tx() as session:
        rows = session.execute(select(SecureProject).order_by(SecureProject.identifier)).scalars()
        found = [s for s in rows if allowed(subject_for_secure(session, s, actor), Action.SECURE_READ)]
        audit.record(
            session, actor, "secure.listed", "secure_project", "*",
            after={"count": len(found)},
        )  # fmt: skip
        return [view(s) for s in found]


# --- members --------------------------------------------------------------------------------


def invite_member(ctx: Context, actor: User, identifier: str, email: str, ends_at: datetime) -> MemberView:
    """Let a helpdesk operator or facility staff member into a users' secure project until
    ``ends_at`` (again, with a new end date, if they were in it before)."""
    now = utcnow()
    ends_at = check_end_date(ends_at, now)
    with ctx.tx() as session:
        secure = authorize_secure(session, actor, identifier, Action.SECURE_MEMBER_MANAGE)
        if secure.kind != SecureKind.USERS:
            raise ValidationFailed({"identifier": "members are let into a users' secure project only"})
        user = accounts.get_user_by_email(session, accounts.normalise_email(email))
        if user.kind not in (UserKind.HELPDESK, UserKind.FACILITY):
            raise ValidationFailed(
                {"email": "only helpdesk operators and facility staff are invited into the zone; "
                          "the project's own members are managed in the research project"}
            )  # fmt: skip
        member = zone_membership(session, secure, user)
        before = None
        if member is None:
            member = SecureMember(
                secure_project_id=secure.id, user_id=user.id, ends_at=ends_at, added_by_id=actor.id
            )
            session.add(member)
        else:
            before = {"ends_at": member.ends_at.isoformat(), "removed": member.removed_at is not None}
            member.ends_at, member.removed_at, member.ended_recorded_at = ends_at, None, None
            member.added_by_id = actor.id
        session.flush()
        session.refresh(member)
        audit.record(
            session, actor, "secure.member_invited", "secure_project", secure.id,
            before=before, after={"email": user.email, "ends_at": ends_at.isoformat()},
        )  # fmt: skip
        notify(
            ctx, session, [user],
            f"[levere] You have access to secure project {secure.identifier}",
            f"You were let into secure project {secure.identifier} until {ends_at:%Y-%m-%d %H:%M} UTC.\n"
            "Every action in the secure zone needs a sign-in with your one-time code.\n",
        )  # fmt: skip
        return member_view(member, now)


def remove_member(ctx: Context, actor: User, identifier: str, email: str) -> MemberView:
    now = utcnow()
    with ctx.tx() as session:
        secure = authorize_secure(session, actor, identifier, Action.SECURE_MEMBER_MANAGE)
        user = accounts.get_user_by_email(session, email)
        member = zone_membership(session, secure, user)
        if member is None or member.removed_at is not None:
            raise NotFound(f"{user.email} is not a member of secure project {secure.identifier}")
        member.removed_at = now
        audit.record(
            session, actor, "secure.member_removed", "secure_project", secure.id, after={"email": user.email}
        )
        return member_view(member, now)


def list_members(ctx: Context, actor: User, identifier: str) -> list[MemberView]:
    now = utcnow()
    with ctx.tx() as session:
        secure = authorize_secure(session, actor, identifier, Action.SECURE_MEMBER_LIST)
        rows = session.execute(
            select(SecureMember)
            .where(SecureMember.secure_project_id == secure.id)
            .order_by(SecureMember.added_at)
        ).scalars()
        audit.record(session, actor, "secure.members_listed", "secure_project", secure.id)
        return [member_view(m, now) for m in rows]


def record_ended_memberships(ctx: Context) -> int:
    """The sweep: record each zone membership whose end date has passed (access already ended at
    that moment, as every access checks the end date); returns how many it recorded."""
    now = utcnow()
    with ctx.tx() as session:
        ended = list(
            session.execute(
                select(SecureMember).where(
                    SecureMember.ends_at <= now,
                    SecureMember.removed_at.is_(None),
                    SecureMember.ended_recorded_at.is_(None),
                )
            ).scalars()
        )
        for member in ended:
            member.ended_recorded_at = now
            audit.record(
                session, None, "secure.member_ended", "secure_project", member.secure_project_id,
                after={"email": member.user.email, "ends_at": member.ends_at.isoformat()},
            )  # fmt: skip
        return len(ended)


# --- master key rotation --------------------------------------------------------------------


@dataclass(frozen=True)
class RewrapView:
    """What re-wrapping the stored private keys under the current master key did."""

    master_key_id: str
    rewrapped: int
    already_current: int


def rewrap_keys(ctx: Context) -> RewrapView:
    """Re-wrap every stored private key (secure projects, shared disks not destroyed) under the
    current master key, so that older master keys can be removed from the key file. Rows already
    under it are left alone; one audit event says how many moved."""
    keys = master_keys(ctx)
    moved = current = 0
    with ctx.tx() as session:
        rows: list[tuple[SecureProject | SharedDisk, str]] = [
            (row, key_context("secure-project", row.id))
            for row in session.execute(select(SecureProject)).scalars()
        ]
        rows += [
            (row, key_context("shared-disk", row.id))
            for row in session.execute(
                select(SharedDisk).where(SharedDisk.wrapped_private_key.is_not(None))
            ).scalars()
        ]
        for row, context in rows:
            wrapped = row.wrapped_private_key
            assert wrapped is not None  # destroyed disks are not selected
            if not keys.needs_rewrap(wrapped):
                current += 1
                continue
            row.wrapped_private_key = keys.rewrap(wrapped, context)
            row.master_key_id = keys.current_id
            moved += 1
        if moved:
            audit.record(
                session,
                None,
                "secure.keys_rewrapped",
                "master_key",
                keys.current_id,
                after={"rewrapped": moved},
            )
    return RewrapView(keys.current_id, moved, current)
