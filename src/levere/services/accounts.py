"""Accounts: passwords (Argon2id), TOTP, scoped expiring API tokens, rate-limited sign-in, invitations.

Design notes
------------
API tokens look like ``lvr_<id>_<secret>``; only SHA-256 of the whole token is stored, so a database
leak reveals no usable token. Secrets are high-entropy, so a fast hash is enough there; passwords are
low-entropy and get Argon2id. A helpdesk operator without TOTP enrolled signs in to a token that can
only enrol TOTP (scope ``account``), nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from levere.db.models import ApiToken, Facility, Invitation, LoginAttempt, User, utcnow
from levere.domain.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    NotFound,
    TooManyAttempts,
    ValidationFailed,
)
from levere.domain.roles import Action, Subject, UserKind, require
from levere.services import audit
from levere.services.context import Context

_hasher = PasswordHasher()  # argon2-cffi's defaults are Argon2id with RFC 9106 low-memory parameters
MIN_PASSWORD = 10


class Scope(StrEnum):
    READ = "read"  # look at projects, applications, data
    WRITE = "write"  # apply, upload, manage members
    REVIEW = "review"  # helpdesk decisions and administration
    ACCOUNT = "account"  # manage one's own tokens and TOTP


ALL_SCOPES = frozenset(Scope)


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed({"password": f"must be at least {MIN_PASSWORD} characters"})
    return _hasher.hash(password)


def _password_ok(user: User, password: str) -> bool:
    if not user.password_hash:
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise ValidationFailed({"email": f"{email!r} is not an e-mail address"})
    return email


def subject_of(user: User) -> Subject:
    return Subject(kind=UserKind(user.kind))


# --- users and facilities -----------------------------------------------------------------------


def create_user(
    session: Session,
    actor: User | None,
    email: str,
    *,
    kind: UserKind = UserKind.USER,
    name: str = "",
    password: str | None = None,
    facility: Facility | None = None,
) -> User:
    email = normalise_email(email)
    if session.execute(select(User.id).where(User.email == email)).first():
        raise AlreadyExists(f"a user with e-mail {email} already exists")
    if kind is UserKind.FACILITY and facility is None:
        raise ValidationFailed({"facility": "facility staff must belong to a facility"})
    user = User(
        email=email,
        name=name,
        kind=kind.value,
        facility_id=facility.id if facility else None,
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.created", "user", user.id, after=public_user(user))
    return user


def public_user(user: User) -> dict[str, object]:
    return {"email": user.email, "name": user.name, "kind": user.kind, "facility_id": user.facility_id}


def get_user_by_email(session: Session, email: str) -> User:
    user = session.execute(select(User).where(User.email == email.strip().lower())).scalar()
    if user is None:
        raise NotFound(f"no user with e-mail {email}")
    return user


def get_or_create_invitee(session: Session, actor: User | None, email: str) -> tuple[User, bool]:
    """The user with this e-mail, or a new account without a password (to be set via invitation)."""
    email = normalise_email(email)
    user = session.execute(select(User).where(User.email == email)).scalar()
    if user is not None:
        return user, False
    return create_user(session, actor, email), True


# --- sign-in ------------------------------------------------------------------------------------


@dataclass
class IssuedToken:
    token: str  # shown once
    record: ApiToken


def _check_rate_limit(ctx: Context, session: Session, email: str, client: str) -> None:
    since = utcnow() - timedelta(seconds=ctx.settings.login_window_seconds)
    failures = session.execute(
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.at >= since, LoginAttempt.success.is_(False))
        .where(
            (LoginAttempt.email == email) | ((LoginAttempt.client == client) & (LoginAttempt.client != ""))
        )
    ).scalar_one()
    if failures >= ctx.settings.login_max_failures:
        raise TooManyAttempts(
            f"too many failed sign-ins; wait {ctx.settings.login_window_seconds // 60} minutes and try again"
        )


def login(
    ctx: Context,
    email: str,
    password: str,
    totp: str | None = None,
    *,
    client: str = "",
    token_name: str = "cli",
    scopes: frozenset[Scope] | None = None,
    lifetime_days: int | None = None,
) -> IssuedToken:
    """Check the password (and TOTP when required) and issue an API token."""
    email = email.strip().lower()
    with ctx.tx() as session:
        _check_rate_limit(ctx, session, email, client)
        user = session.execute(select(User).where(User.email == email)).scalar()
        ok = user is not None and user.active and _password_ok(user, password)
        if ok and user is not None and user.totp_enabled:
            ok = _totp_ok(session, user, totp)
        session.add(LoginAttempt(email=email, client=client, success=ok))
    if not ok or user is None:
        if user is not None and user.password_hash is None:
            raise AuthenticationFailed(
                f"{email} has not set a password yet: follow the link in the invitation"
            )
        if user is not None and user.totp_enabled and not totp:
            raise AuthenticationFailed("a one-time code from your authenticator app is required (--totp)")
        raise AuthenticationFailed("wrong e-mail, password or one-time code")
    with ctx.tx() as session:
        user = session.get(User, user.id)
        assert user is not None
        if user.kind == UserKind.HELPDESK and not user.totp_enabled:
            scopes = frozenset({Scope.ACCOUNT})  # must enrol TOTP before anything else
        issued = issue_token(ctx, session, user, token_name, scopes, lifetime_days)
        audit.record(session, user, "user.signed_in", "user", user.id, after={"token": issued.record.id})
        return issued


def issue_token(
    ctx: Context,
    session: Session,
    user: User,
    name: str,
    scopes: frozenset[Scope] | None = None,
    lifetime_days: int | None = None,
) -> IssuedToken:
    days = lifetime_days if lifetime_days is not None else ctx.settings.token_lifetime_days
    if not 0 < days <= 366:
        raise ValidationFailed({"lifetime_days": "must be between 1 and 366 days"})
    record_id = secrets.token_hex(8)
    token = f"lvr_{record_id}_{secrets.token_urlsafe(32)}"
    record = ApiToken(
        id=record_id,
        user_id=user.id,
        name=name[:100] or "token",
        secret_hash=_sha256(token),
        scopes=sorted(s.value for s in (scopes or ALL_SCOPES)),
        expires_at=utcnow() + timedelta(days=days),
    )
    session.add(record)
    session.flush()
    return IssuedToken(token=token, record=record)


def resolve_token(session: Session, token: str) -> tuple[User, frozenset[Scope]]:
    """The user and scopes behind a bearer token; expired, revoked or forged tokens are refused."""
    record = session.execute(select(ApiToken).where(ApiToken.secret_hash == _sha256(token))).scalar()
    if record is None:
        raise AuthenticationFailed("the token is not valid; sign in again with 'levere login'")
    now = utcnow()
    if record.revoked_at is not None:
        raise AuthenticationFailed("the token was revoked; sign in again with 'levere login'")
    if record.expires_at <= now:
        raise AuthenticationFailed("the token has expired; sign in again with 'levere login'")
    user = session.get(User, record.user_id)
    if user is None or not user.active:
        raise AuthenticationFailed("the account behind this token is disabled")
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=5):
        record.last_used_at = now  # coarse, to avoid a write on every request
    return user, frozenset(Scope(s) for s in record.scopes)


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.execute(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)
        ).scalars()
    )


def revoke_token(session: Session, user: User, token_id: str) -> ApiToken:
    record = session.get(ApiToken, token_id)
    if record is None or (record.user_id != user.id and user.kind != UserKind.HELPDESK):
        raise NotFound(f"no token {token_id}")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        audit.record(session, user, "token.revoked", "token", record.id, after={"name": record.name})
    return record


# --- TOTP ---------------------------------------------------------------------------------------


def _totp_ok(session: Session, user: User, code: str | None) -> bool:
    if not code or not user.totp_secret:
        return False
    totp = pyotp.TOTP(user.totp_secret)
    now = utcnow()
    for drift in (-1, 0, 1):
        at = now + timedelta(seconds=30 * drift)
        step = int(at.timestamp()) // 30
        if secrets.compare_digest(totp.at(at), code.strip()):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return False  # a code is good once
            user.totp_last_step = step
            return True
    return False


def totp_begin(session: Session, user: User) -> str:
    """Start enrolment: a new secret, returned as an otpauth:// URI for an authenticator app."""
    if user.totp_enabled:
        raise AlreadyExists("two-factor sign-in is already set up for this account")
    user.totp_secret = pyotp.random_base32()
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name="levere")


def totp_confirm(session: Session, user: User, code: str) -> None:
    if user.totp_enabled:
        raise AlreadyExists("two-factor sign-in is already set up for this account")
    if not user.totp_secret:
        raise NotFound("start enrolment first ('levere account totp-enrol')")
    if not _totp_ok(session, user, code):
        raise AuthenticationFailed("the one-time code does not match; check the clock of your device")
    user.totp_enabled = True
    audit.record(session, user, "user.totp_enabled", "user", user.id)


# --- invitations --------------------------------------------------------------------------------


def create_invitation(
    ctx: Context,
    session: Session,
    actor: User | None,
    email: str,
    project_id: str | None = None,
    role: str | None = None,
) -> tuple[Invitation, str]:
    secret = secrets.token_urlsafe(32)
    invitation = Invitation(
        email=normalise_email(email),
        secret_hash=_sha256(secret),
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
    return invitation, secret


def invitation_link(ctx: Context, secret: str) -> str:
    return f"{ctx.settings.public_url.rstrip('/')}/invite/{secret}"


def accept_invitation(ctx: Context, secret: str, password: str, name: str = "") -> User:
    """Set the password of the invited account. The link works once and only until it expires."""
    with ctx.tx() as session:
        invitation = session.execute(
            select(Invitation).where(Invitation.secret_hash == _sha256(secret)).with_for_update()
        ).scalar()
        if invitation is None:
            raise NotFound("this invitation link is not valid")
        if invitation.accepted_at is not None:
            raise AccessDenied("this invitation link was already used; sign in with your password instead")
        if invitation.expires_at <= utcnow():
            raise AccessDenied("this invitation link has expired; ask the project admin to invite you again")
        user = session.execute(select(User).where(User.email == invitation.email)).scalar()
        if user is None:
            user = create_user(session, None, invitation.email)
        if user.password_hash is None:
            user.password_hash = hash_password(password)
        if name:
            user.name = name
        invitation.accepted_at = utcnow()
        audit.record(
            session, user, "invitation.accepted", "invitation", invitation.id, after={"email": user.email}
        )
        return user


def change_password(session: Session, user: User, old: str, new: str) -> None:
    if not _password_ok(user, old):
        raise AuthenticationFailed("the current password is wrong")
    user.password_hash = hash_password(new)
    audit.record(session, user, "user.password_changed", "user", user.id)


def create_facility(
    session: Session, actor: User, name: str, display_name: str, contact_email: str
) -> Facility:
    require(subject_of(actor), Action.FACILITY_CREATE)
    name = name.strip().lower()
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValidationFailed({"name": "use letters, digits, '-' and '_' only (e.g. norseq-oslo)"})
    if session.execute(select(Facility.id).where(Facility.name == name)).first():
        raise AlreadyExists(f"a facility named {name} already exists")
    facility = Facility(
        name=name, display_name=display_name or name, contact_email=normalise_email(contact_email)
    )
    session.add(facility)
    session.flush()
    audit.record(session, actor, "facility.created", "facility", facility.id, after={"name": name})
    return facility


def get_facility(session: Session, name_or_id: str) -> Facility:
    facility = session.execute(
        select(Facility).where((Facility.name == name_or_id.lower()) | (Facility.id == name_or_id))
    ).scalar()
    if facility is None:
        raise NotFound(f"no facility named {name_or_id}")
    return facility


def facility_staff(session: Session, facility_id: str) -> list[User]:
    return list(
        session.execute(
            select(User).where(User.facility_id == facility_id, User.kind == UserKind.FACILITY)
        ).scalars()
    )


def helpdesk_operators(session: Session) -> list[User]:
    return list(session.execute(select(User).where(User.kind == UserKind.HELPDESK, User.active)).scalars())
