"""Roles and the one permission table that decides every action.

Design notes
------------
A user has one *global* kind (helpdesk operator, facility staff, or ordinary user) and, per project,
at most one *project role* (admin, member, viewer). Facility staff additionally act for a project when
their facility is assigned to it. :func:`allowed` looks only at these facts, so the API, the CLI and
the portal all ask the same question and get the same answer; the test suite walks every endpoint with
every role against this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from levere.domain.errors import AccessDenied


class UserKind(StrEnum):
    HELPDESK = "helpdesk"
    FACILITY = "facility"
    USER = "user"


class ProjectRole(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Actor(StrEnum):
    """The role a user plays for one action: what the permission table is written in."""

    HELPDESK = "helpdesk"
    FACILITY_ASSIGNED = "facility_assigned"  # staff of a facility assigned to the project
    FACILITY = "facility"  # staff, not assigned to the project at hand
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"
    PI = "pi"  # the PI named on an application
    AUTHOR = "author"  # whoever drafted an application
    USER = "user"  # signed in, no relation to the object


class Action(StrEnum):
    # accounts and facilities
    USER_LIST = "user.list"
    USER_CREATE = "user.create"
    IDENTITY_LINK = "identity.link"  # link or unlink someone's federated identity (OpenID Connect)
    FACILITY_CREATE = "facility.create"
    FACILITY_LIST = "facility.list"
    FACILITY_ADD_STAFF = "facility.add_staff"
    INVITATION_LIST = "invitation.list"
    INVITATION_RESEND = "invitation.resend"
    FACILITY_UPDATE = "facility.update"
    # applications
    APPLICATION_CREATE = "application.create"
    APPLICATION_READ = "application.read"
    APPLICATION_EDIT = "application.edit"
    APPLICATION_SUBMIT = "application.submit"  # by the PI: confirms a draft made on their behalf
    APPLICATION_QUEUE = "application.queue"
    APPLICATION_REVIEW = "application.review"  # approve, reject, request changes
    APPLICATION_WITHDRAW = "application.withdraw"  # before a decision, by whoever may edit it
    # projects
    PROJECT_LIST_ALL = "project.list_all"
    PROJECT_READ = "project.read"
    PROJECT_ASSIGN_FACILITY = "project.assign_facility"
    PROJECT_SETTINGS = "project.settings"
    PROJECT_QUOTA = "project.quota"  # change a granted quota
    MEMBER_LIST = "member.list"
    MEMBER_MANAGE = "member.manage"
    # data
    DELIVERY_CREATE = "delivery.create"
    DELIVERY_UPLOAD = "delivery.upload"
    DELIVERY_READ = "delivery.read"
    DATA_READ = "data.read"
    DATA_FREE = "data.free"
    DATA_RESTORE = "data.restore"
    SYNC_RUN = "sync.run"
    VERIFY_RUN = "verify.run"
    JOB_READ_ALL = "job.read_all"  # see a job that spans every project (a verify of all)
    # the secure zone (every one needs a sign-in that passed a second factor)
    SECURE_REGISTER = "secure.register"  # register a secure project (existing, or a facility's)
    SECURE_READ = "secure.read"  # see a secure project: its identifier, public key, shared disks
    SECURE_DATA_READ = "secure.data_read"  # list and download a users' secure project's data
    SECURE_MEMBER_LIST = "secure.member_list"
    SECURE_MEMBER_MANAGE = "secure.member_manage"  # invite staff until an end date, remove them
    DISK_CREATE = "disk.create"
    DISK_READ = "disk.read"  # see a shared disk and list what is on it
    DISK_WRITE = "disk.write"  # upload to a shared disk (the facility's side only)
    DISK_DESTROY = "disk.destroy"
    ANALYSIS_READ = "analysis.read"  # read a shared disk's analysis reports (before release)
    DISK_RELEASE = "disk.release"  # hand a delivery on a shared disk to the users' secure project
    DISK_DATA_READ = "disk.data_read"  # list and download what is on a shared disk, not released yet
    # audit
    AUDIT_READ = "audit.read"
    PROJECT_AUDIT = "project.audit"  # read one project's audit trail (its admins and the helpdesk)
    AUDIT_ANCHOR = "audit.anchor"


A = Actor
#: The permission table. An action not listed for an actor is denied.
PERMISSIONS: dict[Action, frozenset[Actor]] = {
    Action.USER_LIST: frozenset({A.HELPDESK}),
    Action.USER_CREATE: frozenset({A.HELPDESK}),
    Action.IDENTITY_LINK: frozenset({A.HELPDESK}),
    Action.FACILITY_CREATE: frozenset({A.HELPDESK}),
    Action.FACILITY_LIST: frozenset({A.HELPDESK, A.FACILITY, A.FACILITY_ASSIGNED, A.USER}),
    Action.FACILITY_ADD_STAFF: frozenset({A.HELPDESK}),
    Action.INVITATION_LIST: frozenset({A.HELPDESK}),
    Action.INVITATION_RESEND: frozenset({A.HELPDESK}),
    Action.FACILITY_UPDATE: frozenset({A.HELPDESK}),
    Action.APPLICATION_CREATE: frozenset({A.HELPDESK, A.FACILITY, A.FACILITY_ASSIGNED, A.USER}),
    Action.APPLICATION_READ: frozenset({A.HELPDESK, A.PI, A.AUTHOR, A.FACILITY_ASSIGNED}),
    Action.APPLICATION_EDIT: frozenset({A.PI, A.AUTHOR}),
    Action.APPLICATION_SUBMIT: frozenset({A.PI}),
    Action.APPLICATION_QUEUE: frozenset({A.HELPDESK}),
    Action.APPLICATION_REVIEW: frozenset({A.HELPDESK}),
    Action.APPLICATION_WITHDRAW: frozenset({A.PI, A.AUTHOR}),
    Action.PROJECT_LIST_ALL: frozenset({A.HELPDESK}),
    Action.PROJECT_READ: frozenset({A.HELPDESK, A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER, A.VIEWER}),
    Action.PROJECT_ASSIGN_FACILITY: frozenset({A.HELPDESK, A.ADMIN}),
    Action.PROJECT_SETTINGS: frozenset({A.HELPDESK, A.ADMIN}),
    Action.PROJECT_QUOTA: frozenset({A.HELPDESK}),
    Action.MEMBER_LIST: frozenset({A.HELPDESK, A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER, A.VIEWER}),
    Action.MEMBER_MANAGE: frozenset({A.HELPDESK, A.ADMIN}),
    Action.DELIVERY_CREATE: frozenset({A.FACILITY_ASSIGNED}),
    Action.DELIVERY_UPLOAD: frozenset({A.FACILITY_ASSIGNED}),
    Action.DELIVERY_READ: frozenset({A.HELPDESK, A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER, A.VIEWER}),
    Action.DATA_READ: frozenset({A.HELPDESK, A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER, A.VIEWER}),
    Action.DATA_FREE: frozenset({A.HELPDESK, A.ADMIN}),
    Action.DATA_RESTORE: frozenset({A.HELPDESK, A.ADMIN}),
    Action.SYNC_RUN: frozenset({A.HELPDESK}),
    Action.VERIFY_RUN: frozenset({A.HELPDESK}),
    Action.JOB_READ_ALL: frozenset({A.HELPDESK}),
    Action.SECURE_REGISTER: frozenset({A.HELPDESK}),
    Action.SECURE_READ: frozenset({A.HELPDESK, A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER}),
    # the helpdesk and the facility read a users' secure project's data only while let in
    Action.SECURE_DATA_READ: frozenset({A.ADMIN, A.MEMBER}),
    Action.SECURE_MEMBER_LIST: frozenset({A.HELPDESK, A.ADMIN, A.MEMBER}),
    Action.SECURE_MEMBER_MANAGE: frozenset({A.ADMIN}),
    Action.DISK_CREATE: frozenset({A.HELPDESK}),
    Action.DISK_READ: frozenset({A.HELPDESK, A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER}),
    Action.DISK_WRITE: frozenset({A.FACILITY_ASSIGNED}),
    Action.DISK_DESTROY: frozenset({A.HELPDESK}),
    # the QC reports are the data's: the two sides of the disk read them, the helpdesk only if let in
    Action.ANALYSIS_READ: frozenset({A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER}),
    Action.DISK_RELEASE: frozenset({A.FACILITY_ASSIGNED}),
    # both sides read the disk's data until release; the helpdesk sees it only once let in
    Action.DISK_DATA_READ: frozenset({A.FACILITY_ASSIGNED, A.ADMIN, A.MEMBER}),
    Action.AUDIT_READ: frozenset({A.HELPDESK}),
    Action.PROJECT_AUDIT: frozenset({A.HELPDESK, A.ADMIN}),
    Action.AUDIT_ANCHOR: frozenset({A.HELPDESK}),
}


@dataclass(frozen=True)
class Subject:
    """What the permission check needs to know about the user, for one object."""

    kind: UserKind
    project_role: ProjectRole | None = None
    facility_assigned: bool = False
    is_pi: bool = False
    is_author: bool = False

    def actors(self) -> frozenset[Actor]:
        found: set[Actor] = {A.USER}
        if self.kind is UserKind.HELPDESK:
            found.add(A.HELPDESK)
        if self.kind is UserKind.FACILITY:
            found.add(A.FACILITY_ASSIGNED if self.facility_assigned else A.FACILITY)
        if self.project_role is not None:
            found.add(Actor(self.project_role.value))
        if self.is_pi:
            found.add(A.PI)
        if self.is_author:
            found.add(A.AUTHOR)
        return frozenset(found)


def allowed(subject: Subject, action: Action) -> bool:
    return bool(subject.actors() & PERMISSIONS[action])


#: what each action is, in the words of an error message ("you are not allowed to ...")
DESCRIPTIONS: dict[Action, str] = {
    Action.USER_LIST: "list accounts",
    Action.USER_CREATE: "create accounts",
    Action.IDENTITY_LINK: "link sign-in identities to other people's accounts (only the helpdesk can)",
    Action.FACILITY_CREATE: "register facilities",
    Action.FACILITY_LIST: "list facilities",
    Action.FACILITY_ADD_STAFF: "add facility staff",
    Action.INVITATION_LIST: "list pending invitations (only the helpdesk can)",
    Action.INVITATION_RESEND: "re-send invitations (only the helpdesk can)",
    Action.FACILITY_UPDATE: "change a facility's settings (only the helpdesk can)",
    Action.APPLICATION_CREATE: "file applications",
    Action.APPLICATION_READ: "see",
    Action.APPLICATION_EDIT: "edit",
    Action.APPLICATION_SUBMIT: "submit",
    Action.APPLICATION_QUEUE: "see the review queue",
    Action.APPLICATION_REVIEW: "review",
    Action.APPLICATION_WITHDRAW: "withdraw",
    Action.PROJECT_LIST_ALL: "list every project",
    Action.PROJECT_READ: "look",
    Action.PROJECT_ASSIGN_FACILITY: "assign facilities",
    Action.PROJECT_SETTINGS: "change the settings",
    Action.PROJECT_QUOTA: "change quotas",
    Action.MEMBER_LIST: "list the members",
    Action.MEMBER_MANAGE: "manage the members",
    Action.DELIVERY_CREATE: "open deliveries",
    Action.DELIVERY_UPLOAD: "upload",
    Action.DELIVERY_READ: "see the deliveries",
    Action.DATA_READ: "read the data",
    Action.DATA_FREE: "free space",
    Action.DATA_RESTORE: "restore data",
    Action.SYNC_RUN: "start a sync",
    Action.VERIFY_RUN: "verify storage",
    Action.JOB_READ_ALL: "see jobs that span every project",
    Action.SECURE_REGISTER: "register secure projects",
    Action.SECURE_READ: "see the secure project",
    Action.SECURE_DATA_READ: "read the data of the secure project (its admins and members can, and staff while let in)",
    Action.SECURE_MEMBER_LIST: "list the members of the secure project",
    Action.SECURE_MEMBER_MANAGE: "let people into the secure project or remove them",
    Action.DISK_CREATE: "create shared disks",
    Action.DISK_READ: "see the shared disk",
    Action.DISK_WRITE: "write to the shared disk (only the facility's side can)",
    Action.DISK_DESTROY: "destroy shared disks",
    Action.ANALYSIS_READ: "read the analysis reports on the shared disk (its two sides can)",
    Action.DISK_RELEASE: "release data from the shared disk (only the facility's side can)",
    Action.DISK_DATA_READ: "read the data on the shared disk",
    Action.AUDIT_READ: "read the audit log",
    Action.PROJECT_AUDIT: "read the project's audit trail",
    Action.AUDIT_ANCHOR: "anchor the audit log",
}

#: each actor in the words of "... can", in the order they are listed
WHO: dict[Actor, str] = {
    A.ADMIN: "project admins",
    A.MEMBER: "members",
    A.VIEWER: "viewers",
    A.PI: "its PI",
    A.AUTHOR: "whoever drafted it",
    A.FACILITY_ASSIGNED: "staff of an assigned facility",
    A.FACILITY: "facility staff",
    A.HELPDESK: "the helpdesk",
}


def who_can(action: Action) -> str:
    """Who may do ``action``, read from the permission table: "only the helpdesk can",
    "project admins and the helpdesk can"."""
    actors = PERMISSIONS[action]
    if A.USER in actors:
        return "anyone signed in can"
    if A.FACILITY in actors:  # staff of any facility, assigned or not
        actors = actors - {A.FACILITY_ASSIGNED}
    names = [words for actor, words in WHO.items() if actor in actors]
    if len(names) == 1:
        return f"only {names[0]} can"
    return f"{', '.join(names[:-1])} and {names[-1]} can"


def require(subject: Subject, action: Action, what: str = "") -> None:
    if not allowed(subject, action):
        target = f" {what}" if what else ""
        raise AccessDenied(
            f"you are not allowed to {DESCRIPTIONS[action]}{target} ({who_can(action)})",
            action=action.value,
            allowed=sorted(actor.value for actor in PERMISSIONS[action]),
        )
