"""Builders for the people and objects tests need, made through the services (never raw inserts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from levere.context import Context
from levere.db.models import Facility, User
from levere.domain.applications import ApplicationForm, RequestedMember
from levere.domain.roles import ProjectRole, UserKind
from levere.services import accounts, applications, invitations

PASSWORD = "correct horse battery"
GiB = 1024**3


def make_user(
    ctx: Context,
    email: str,
    kind: UserKind = UserKind.USER,
    facility: Facility | None = None,
    password: str | None = PASSWORD,
) -> User:
    """A user; ``password=None`` skips the Argon2 hash (~0.2 s) for users who only use tokens."""
    with ctx.tx() as session:
        return accounts.create_user(session, None, email, kind=kind, password=password, facility=facility)


def make_facility(ctx: Context, name: str = "norseq-oslo") -> Facility:
    with ctx.tx() as session:
        helpdesk = session.merge(_system_helpdesk(ctx, session))
        return accounts.create_facility(session, helpdesk, name, name.title(), f"contact@{name}.example.org")


def _system_helpdesk(ctx: Context, session: Any) -> User:
    from sqlalchemy import select

    found = session.execute(select(User).where(User.email == "root-helpdesk@levere.test")).scalar()
    if found:
        return found  # type: ignore[no-any-return]
    return accounts.create_user(session, None, "root-helpdesk@levere.test", kind=UserKind.HELPDESK)


def token_for(ctx: Context, user: User, scopes: frozenset[accounts.Scope] | None = None) -> str:
    with ctx.tx() as session:
        return accounts.issue_token(ctx, session, session.merge(user), "test", scopes).token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def complete_form(facility: str, pi: str, **changes: Any) -> ApplicationForm:
    form = ApplicationForm(
        title="Salmon lice transcriptomes",
        pi_email=pi,
        data_ownership="University of Bergen",
        funding_source="Research Council of Norway",
        grant_id="RCN-123456",
        description="RNA-seq of salmon lice across life stages.",
        facility=facility,
        quota_area_bytes=500 * GiB,
        quota_longterm_bytes=2000 * GiB,
        members=[RequestedMember("member@uib.example.org", ProjectRole.MEMBER)],
    )
    for key, value in changes.items():
        setattr(form, key, value)
    return form


@dataclass
class World:
    helpdesk: User
    facility: Facility
    staff: User
    pi: User


def basic_world(ctx: Context) -> World:
    """A helpdesk operator, a facility with a staff member, and a PI; they use tokens (``token_for``),
    so none has a password (each Argon2 hash costs ~0.2 s): use ``make_user`` for one that signs in."""
    facility = make_facility(ctx)
    return World(
        helpdesk=make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK, password=None),
        facility=facility,
        staff=make_user(ctx, "staff@norseq.example.org", UserKind.FACILITY, facility, password=None),
        pi=make_user(ctx, "pi@uib.example.org", password=None),
    )


def provisioned_project(ctx: Context, world: World, **form_changes: Any) -> str:
    """An approved application's project identifier: drafted by staff, submitted by the PI."""
    application = applications.create(
        ctx, world.staff, complete_form(world.facility.name, world.pi.email, **form_changes)
    )
    applications.submit(ctx, world.pi, str(application.number))
    _, project = applications.approve(ctx, world.helpdesk, str(application.number))
    return project.identifier


# --- the permission walk's world ------------------------------------------------------------------

#: every role the permission walk tries, as the test names them
ROLES = (
    "helpdesk",
    "facility_assigned",  # staff of the facility assigned to the project and named on the applications
    "facility_other",  # staff of another facility
    "admin",
    "member",
    "viewer",
    "pi",  # PI of the applications at hand (no relation to the project)
    "outsider",  # signed in, no relation to anything
    "anonymous",  # no token
)


@dataclass
class PermissionWorld:
    """One of everything a route can act on, and a user (with a token) for each role.

    ``extra`` is for sample modules (``tests/permission_samples_*.py``): their ``extend_world`` hook
    adds objects (e.g. a sealed delivery in ``project``) and records their ids there.
    """

    users: dict[str, User]
    tokens: dict[str, str]
    #: a second token per role, for the route that revokes a token (revoking the one in use would
    #: turn every later request of that role into a 401)
    spare_token_ids: dict[str, str]
    facility: str  # assigned to ``project``, named on the applications
    other_facility: str
    project: str  # identifier
    draft_application: str  # number; drafted by facility staff on the PI's behalf
    #: numbers of applications submitted by the PI, one per review route (approve, reject,
    #: request-changes), so that each can succeed for the helpdesk
    submitted: dict[str, str]
    target_email: str  # a plain member of ``project`` for the member-management routes
    new_member_email: str  # someone not yet in ``project``
    password_user_email: str  # the one account with a password (hashing is slow), for sign-in
    invitation_secret: str  # an open invitation (for someone without an account yet)
    extra: dict[str, Any]

    def headers(self, role: str) -> dict[str, str]:
        return auth(self.tokens[role]) if role in self.tokens else {}


def permission_world(ctx: Context) -> PermissionWorld:
    """Built through the services; only one password is hashed, so a world costs well under a second."""
    helpdesk = make_user(ctx, "helpdesk@levere.test", UserKind.HELPDESK, password=None)
    with ctx.tx() as session:
        actor = session.merge(helpdesk)
        seq_a = accounts.create_facility(session, actor, "seq-a", "Sequencing A", "contact@seq-a.example.org")
        seq_b = accounts.create_facility(session, actor, "seq-b", "Sequencing B", "contact@seq-b.example.org")
    users = {
        "helpdesk": helpdesk,
        "facility_assigned": make_user(ctx, "staff@seq-a.example.org", UserKind.FACILITY, seq_a, None),
        "facility_other": make_user(ctx, "staff@seq-b.example.org", UserKind.FACILITY, seq_b, None),
        "admin": make_user(ctx, "admin@uni.example.org", password=None),
        "member": make_user(ctx, "member@uni.example.org", password=None),
        "viewer": make_user(ctx, "viewer@uni.example.org", password=None),
        "pi": make_user(ctx, "pi@uni.example.org", password=None),
        "outsider": make_user(ctx, "outsider@uni.example.org", password=PASSWORD),
    }
    staff = users["facility_assigned"]
    first = applications.create(
        ctx,
        staff,
        complete_form(
            "seq-a",
            "admin@uni.example.org",
            members=[
                RequestedMember("member@uni.example.org", ProjectRole.MEMBER),
                RequestedMember("viewer@uni.example.org", ProjectRole.VIEWER),
                RequestedMember("target@uni.example.org", ProjectRole.MEMBER),
            ],
        ),
    )
    applications.submit(ctx, users["admin"], str(first.number))
    _, project = applications.approve(ctx, helpdesk, str(first.number))
    draft = applications.create(ctx, staff, complete_form("seq-a", "pi@uni.example.org", title="Draft"))
    submitted: dict[str, str] = {}
    for review in ("approve", "reject", "request-changes"):
        sent = applications.create(ctx, staff, complete_form("seq-a", "pi@uni.example.org", title=review))
        applications.submit(ctx, users["pi"], str(sent.number))
        submitted[review] = str(sent.number)
    tokens: dict[str, str] = {}
    spare: dict[str, str] = {}
    with ctx.tx() as session:
        for role, user in users.items():
            merged = session.merge(user)
            tokens[role] = accounts.issue_token(ctx, session, merged, "walk").token
            spare[role] = accounts.issue_token(ctx, session, merged, "spare").record.id
        invited = accounts.create_user(session, None, "invited@uni.example.org")
        _, invitation_secret = invitations.create_invitation(ctx, session, None, invited.email)
    return PermissionWorld(
        users=users,
        tokens=tokens,
        spare_token_ids=spare,
        facility="seq-a",
        other_facility="seq-b",
        project=project.identifier,
        draft_application=str(draft.number),
        submitted=submitted,
        target_email="target@uni.example.org",
        new_member_email="newcomer@uni.example.org",
        password_user_email="outsider@uni.example.org",
        invitation_secret=invitation_secret,
        extra={},
    )
