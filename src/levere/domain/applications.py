"""Applications for a project area and quota: their fields, validation and state machine.

Design notes
------------
The transition table only says which state may follow which. Who may trigger a transition is the
permission table's business (:mod:`levere.domain.roles`), and e-mails and provisioning belong to the
services that call :func:`transition`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from levere.domain.errors import InvalidTransition, ValidationFailed
from levere.domain.roles import ProjectRole

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: a TSD-style secure project identifier
SECURE_PROJECT = re.compile(r"^p\d{1,6}$")


class ApplicationState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # by its PI or author, before the helpdesk decided


S = ApplicationState
TRANSITIONS: dict[ApplicationState, frozenset[ApplicationState]] = {
    S.DRAFT: frozenset({S.SUBMITTED, S.WITHDRAWN}),
    S.SUBMITTED: frozenset({S.APPROVED, S.REJECTED, S.CHANGES_REQUESTED, S.WITHDRAWN}),
    S.CHANGES_REQUESTED: frozenset({S.SUBMITTED, S.WITHDRAWN}),
    S.APPROVED: frozenset(),
    S.REJECTED: frozenset(),
    S.WITHDRAWN: frozenset(),
}
EDITABLE = frozenset({S.DRAFT, S.CHANGES_REQUESTED})

#: each state as the outcome of a step, for "... cannot be <step>"
STEPS = {
    S.DRAFT: "made a draft again",
    S.SUBMITTED: "submitted",
    S.CHANGES_REQUESTED: "sent back for changes",
    S.APPROVED: "approved",
    S.REJECTED: "rejected",
    S.WITHDRAWN: "withdrawn",
}


def transition(
    current: ApplicationState, target: ApplicationState, what: str = "the application"
) -> ApplicationState:
    """``target`` if an application in ``current`` may move there; else an :class:`InvalidTransition`
    that says in plain words what happened ("application 1 is already submitted")."""
    if target not in TRANSITIONS[current]:
        state = current.value.replace("_", " ")
        message = (
            f"{what} is already {state}"
            if current is target
            else f"{what} is {state} and cannot be {STEPS[target]}"
        )
        raise InvalidTransition(message, current=current.value, target=target.value)
    return target


@dataclass
class RequestedMember:
    email: str
    role: ProjectRole


@dataclass
class ApplicationForm:
    """Every field of the seed's form. Empty strings mean "not filled in yet" in a draft."""

    title: str = ""
    pi_email: str = ""
    data_ownership: str = ""
    funding_source: str = ""
    grant_id: str = ""
    description: str = ""
    facility: str = ""  # the assisting facility's short name
    quota_area_bytes: int = 0
    quota_longterm_bytes: int = 0
    sensitive: bool = False
    secure_project_id: str = ""
    members: list[RequestedMember] = field(default_factory=list)


REQUIRED_TEXT = {
    "title": "a project title",
    "pi_email": "the PI's e-mail address",
    "data_ownership": "who owns the data",
    "funding_source": "the funding source",
    "description": "a scientific description",
    "facility": "the assisting facility",
}
#: members one application may list (besides the PI); approving one at this size takes well under
#: 2 s (``make bench``, bench/bench_provision.py). Larger groups are added after approval.
MAX_MEMBERS = 1000
MAX_TEXT = {
    "title": 200,
    "pi_email": 320,
    "data_ownership": 500,
    "funding_source": 200,
    "grant_id": 100,
    "description": 10_000,
}


def check_draft(form: ApplicationForm) -> None:
    """Checks that hold for a draft too: what is filled in must be well-formed."""
    problems: dict[str, str] = {}
    for name, limit in MAX_TEXT.items():
        if len(getattr(form, name)) > limit:
            problems[name] = f"must be at most {limit} characters"
    pi_email = form.pi_email.strip()  # blank is "not filled in", which check_complete reports
    if pi_email and not EMAIL.match(pi_email) and "pi_email" not in problems:
        problems["pi_email"] = f"{pi_email!r} is not an e-mail address"
    for name in ("quota_area_bytes", "quota_longterm_bytes"):
        if getattr(form, name) < 0:
            problems[name] = "must not be negative"
    secure_project_id = form.secure_project_id.strip()
    if secure_project_id and not SECURE_PROJECT.match(secure_project_id):
        problems["secure_project_id"] = "must look like p1234 (a TSD project id)"
    if secure_project_id and not form.sensitive:
        problems["secure_project_id"] = "is only for sensitive data; set sensitive to true or leave it empty"
    if len(form.members) > MAX_MEMBERS:
        problems["members"] = (
            f"lists {len(form.members)} members; an application may list at most {MAX_MEMBERS} "
            "(add more to the project once it is approved)"
        )
    seen: set[str] = set()
    for i, member in enumerate(form.members[:MAX_MEMBERS]):
        key = f"members[{i}].email"
        email = member.email.strip().lower()
        if not EMAIL.match(email) or len(email) > MAX_TEXT["pi_email"]:
            problems[key] = f"{member.email[:80]!r} is not an e-mail address"
        elif email in seen:
            problems[key] = f"{email} is listed twice"
        seen.add(email)
    if problems:
        raise ValidationFailed(problems)


def check_complete(form: ApplicationForm) -> None:
    """Checks for submission: every required field is filled in and well-formed."""
    problems: dict[str, str] = {}
    try:
        check_draft(form)
    except ValidationFailed as exc:
        problems.update(exc.fields)
    for name, what in REQUIRED_TEXT.items():
        if not getattr(form, name).strip() and name not in problems:
            problems[name] = f"is required: give {what}"
    # a sensitive project has no working area: its area quota is not required, and one given is
    # not granted (the review and the approval say so)
    if not form.sensitive and form.quota_area_bytes <= 0 and "quota_area_bytes" not in problems:
        problems["quota_area_bytes"] = "is required: request a quota for the working area"
    if form.quota_longterm_bytes <= 0 and "quota_longterm_bytes" not in problems:
        problems["quota_longterm_bytes"] = "is required: request a quota for long-term storage"
    if problems:
        raise ValidationFailed(problems)
