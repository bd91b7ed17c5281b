"""Transfer grants: a transfer started with a valid token finishes with it after the token expires.

Design notes
------------
Tokens from a federated sign-in are short-lived by intent, and even a month-long token runs out
during some week-long transfer. Rather than a second, longer-lived secret, the transfer itself
carries the grant: the client asks for one while its token is valid (:func:`issue`), naming exactly
one transfer, and sends the grant's id (``Levere-Grant``) with every request of that transfer. Once
the token has expired, a request that carries the grant is accepted (:func:`resolve`) only when

- the token is the one the grant was issued to (not revoked, its account active);
- the request is one the grant's kind covers, on the grant's own target: a ``delivery`` grant the
  uploads, tar batches, seal and file pages of one delivery; a ``download`` grant the listing and
  the bytes of one file or of the files of one delivery; a ``job`` grant reading one job;
- the transfer has not ended: the client has not ended the grant (:func:`end`), and
  ``transfer_grant_hours`` have not passed. A request that finds the transfer over (the delivery
  sealed or failed, the job finished) is the last the grant carries: a client reads the end of
  what it waited for, and a write is refused by the use case itself (a sealed delivery takes no
  files).

Anything else (another delivery, another file, a new delivery, the account, the secure zone) is
refused as an expired token is. While the token is still valid the grant is not consulted at all.
Issuing and ending are audit events; so is the end the service notices itself. The grant's id is no secret: without its token it opens nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import ApiToken, Delivery, JobRun, Project, TransferGrant, User, utcnow
from levere.domain.deliveries import DeliveryState
from levere.domain.errors import AuthenticationFailed, Conflict, NotFound, ValidationFailed
from levere.domain.jobruns import FINISHED
from levere.domain.roles import Action
from levere.services import audit
from levere.services.accounts import Scope, resolve_token, sha256
from levere.services.deliveries import get_delivery, open_for_upload
from levere.services.projects import authorize, get_project
from levere.services.views import TransferGrantView

#: how often a grant's ``used_at`` is written while it carries requests
_USE_RESOLUTION = timedelta(minutes=1)


class GrantKind(StrEnum):
    DELIVERY = "delivery"  # target: a delivery's name
    DOWNLOAD = "download"  # target: DELIVERY or DELIVERY/PATH
    JOB = "job"  # target: a job run's id


@dataclass(frozen=True)
class Wanted:
    """What one request touches, as a route sees it: compared with a grant's kind and target."""

    kind: GrantKind
    project: str | None  # the project's identifier; None where the route names none (a job by id)
    target: str


def _view(grant: TransferGrant, project: Project) -> TransferGrantView:
    return TransferGrantView(
        id=grant.id,
        kind=grant.kind,
        project=project.identifier,
        target=grant.target,
        created_at=grant.created_at,
        expires_at=grant.expires_at,
        ended_at=grant.ended_at,
    )


def _token_record(session: Session, token: str) -> ApiToken | None:
    return session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar()


def _check_target(session: Session, actor: User, kind: GrantKind, identifier: str, target: str) -> Project:
    """The project, once the caller may do this transfer now (as the transfer's own requests check)."""
    target = target.strip("/")
    if not target:
        raise ValidationFailed({"target": "name one delivery, one file (DELIVERY/PATH) or one job"})
    match kind:
        case GrantKind.DELIVERY:
            project = authorize(session, actor, identifier, Action.DELIVERY_UPLOAD)
            open_for_upload(session, project, target)
        case GrantKind.DOWNLOAD:
            project = authorize(session, actor, identifier, Action.DATA_READ)
            get_delivery(session, project, target.split("/", 1)[0])
        case GrantKind.JOB:
            project = authorize(session, actor, identifier, Action.DELIVERY_READ)
            run = session.get(JobRun, target)
            if run is None or run.project_id != project.id:
                raise NotFound(f"{project.identifier} has no job {target}")
            if run.state in FINISHED:
                raise Conflict(f"job {target} has already ended", state=run.state)
    return project


def issue(
    ctx: Context, actor: User, token: str, kind: GrantKind, identifier: str, target: str
) -> TransferGrantView:
    """A grant for one transfer, to the (valid) token the request was made with."""
    with ctx.tx() as session:
        project = _check_target(session, actor, kind, identifier, target)
        record = _token_record(session, token)
        if record is None:  # the caller's token was resolved a moment ago
            raise AuthenticationFailed("the token is not valid", reason="token_invalid")
        grant = TransferGrant(
            token_id=record.id,
            user_id=actor.id,
            kind=kind.value,
            project_id=project.id,
            target=target.strip("/"),
            expires_at=utcnow() + timedelta(hours=ctx.settings.transfer_grant_hours),
        )
        session.add(grant)
        session.flush()
        audit.record(
            session, actor, "transfer_grant.issued", "transfer_grant", grant.id,
            after={"kind": grant.kind, "project": project.identifier, "target": grant.target,
                   "token": record.id, "expires_at": grant.expires_at.isoformat()},
        )  # fmt: skip
        return _view(grant, project)


def _end(session: Session, actor: User | None, grant: TransferGrant, reason: str) -> None:
    grant.ended_at = utcnow()
    audit.record(
        session, actor, "transfer_grant.ended", "transfer_grant", grant.id,
        after={"kind": grant.kind, "target": grant.target, "reason": reason},
    )  # fmt: skip


def end(ctx: Context, token: str, grant_id: str) -> None:
    """The client's transfer is over: the grant carries nothing more. The token may have expired."""
    with ctx.tx() as session:
        record = _token_record(session, token)
        if record is None:
            raise AuthenticationFailed("the token is not valid", reason="token_invalid")
        if record.revoked_at is not None:
            raise AuthenticationFailed("the token was revoked", reason="token_revoked")
        grant = session.get(TransferGrant, grant_id)
        if grant is None or grant.token_id != record.id:
            raise NotFound(f"no transfer grant {grant_id} for this token")
        if grant.ended_at is None:
            _end(session, session.get(User, grant.user_id), grant, "finished")


def _covers(grant: TransferGrant, wanted: Wanted) -> bool:
    if grant.kind != wanted.kind.value:
        return False
    target = wanted.target.strip("/")
    if wanted.kind is GrantKind.DOWNLOAD:
        return target == grant.target or target.startswith(grant.target + "/")
    return target == grant.target


_REFUSED = (
    "the token has expired; a transfer started with it can be finished with it, but this request is "
    "not part of that transfer: sign in again"
)


def resolve(
    session: Session, token: str, grant_id: str | None, wanted: Wanted
) -> tuple[User, frozenset[Scope]]:
    """The caller of a request that is part of one transfer: a valid token, or the expired one the
    transfer's grant was issued to (see the module notes)."""
    try:
        return resolve_token(session, token)
    except AuthenticationFailed as exc:
        if exc.details.get("reason") != "token_expired" or not grant_id:
            raise
    record = _token_record(session, token)
    grant = session.execute(
        select(TransferGrant).where(TransferGrant.id == grant_id).with_for_update()
    ).scalar()
    if record is None or grant is None or grant.token_id != record.id or not _covers(grant, wanted):
        raise AuthenticationFailed(_REFUSED, reason="token_expired")
    if wanted.project is not None and get_project(session, wanted.project).id != grant.project_id:
        raise AuthenticationFailed(_REFUSED, reason="token_expired")
    user = session.get(User, record.user_id)
    if user is None or not user.active:
        raise AuthenticationFailed("the account behind this token is disabled")
    now = utcnow()
    if grant.ended_at is not None or grant.expires_at <= now:
        raise AuthenticationFailed(
            "the token has expired, and the transfer it started has ended: sign in again",
            reason="token_expired",
        )
    if _ended(session, grant):  # this request sees the end (a sealed delivery, a finished job): the last
        _end(session, user, grant, f"{grant.kind}_ended")
    if grant.used_at is None or now - grant.used_at > _USE_RESOLUTION:
        grant.used_at = now
    return user, frozenset(Scope(s) for s in record.scopes)


def _ended(session: Session, grant: TransferGrant) -> bool:
    """Whether the service can see that the grant's transfer is over."""
    match grant.kind:
        case GrantKind.DELIVERY:
            state = session.execute(
                select(Delivery.state).where(
                    Delivery.project_id == grant.project_id, Delivery.name == grant.target
                )
            ).scalar()
            return state != DeliveryState.OPEN
        case GrantKind.JOB:
            run = session.get(JobRun, grant.target)
            return run is None or run.state in FINISHED
    return False
