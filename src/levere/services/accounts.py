"""Accounts: passwords (Argon2id), TOTP, scoped expiring API tokens, rate-limited sign-in, facilities.

Invitations and the accounts the helpdesk makes are in :mod:`levere.services.invitations`.

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
from functools import cache

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import ApiToken, Facility, LoginAttempt, User, utcnow
from levere.domain.applications import EMAIL
from levere.domain.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    Conflict,
    NotFound,
    OneTimeCodeUsed,
    OneTimeCodeWrong,
    TooManyAttempts,
    ValidationFailed,
)
from levere.domain.roles import Action, Subject, UserKind, require
from levere.services import audit
from levere.services.views import (
    AccountView,
    FacilityView,
    IssuedTokenView,
    TokenView,
    account_view,
    facility_view,
    token_view,
)

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


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _password_ok(user: User, password: str) -> bool:
    return bool(user.password_hash) and _verify(user.password_hash or "", password)


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL.match(email) or len(email) > 320:
        raise ValidationFailed({"email": f"{email[:80]!r} is not an e-mail address"})
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

    def view(self) -> IssuedTokenView:
        return IssuedTokenView(token=self.token, info=token_view(self.record))


def _check_rate_limit(ctx: Context, session: Session, email: str, client: str) -> None:
    since = utcnow() - timedelta(seconds=ctx.settings.login_window_seconds)
    recent_failures = (
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.at >= since, LoginAttempt.success.is_(False))
    )
    by_account = session.execute(recent_failures.where(LoginAttempt.email == email)).scalar_one()
    by_client = 0
    if client:
        by_client = session.execute(recent_failures.where(LoginAttempt.client == client)).scalar_one()
    if by_account >= ctx.settings.login_max_failures or by_client >= ctx.settings.login_max_client_failures:
        window = ctx.settings.login_window_seconds
        wait = f"{window} seconds" if window < 120 else f"{-(-window // 60)} minutes"
        raise TooManyAttempts(f"too many failed sign-ins; wait {wait} and try again")


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
) -> IssuedTokenView:
    """Check the password (and TOTP when required) and issue an API token.

    The Argon2 check (~0.2 s by design) runs between two short transactions, never inside one: on
    SQLite a transaction holds the write lock, and every sign-in would stall every writer.
    """
    email = email.strip().lower()
    with ctx.tx() as session:
        _check_rate_limit(ctx, session, email, client)
        found = session.execute(select(User).where(User.email == email)).scalar()
        known_hash = found.password_hash if found is not None and found.active else None
    # an unknown account costs the same time, so timing does not tell which e-mails exist
    password_ok = _verify(known_hash or _dummy_hash(), password) and known_hash is not None
    issued: IssuedTokenView | None = None
    code = CodeCheck.WRONG
    with ctx.tx() as session:
        # locked, so that two sign-ins racing with the same one-time code cannot both use it
        user = session.execute(select(User).where(User.email == email).with_for_update(of=User)).scalar()
        ok = password_ok and user is not None and user.active and user.password_hash == known_hash
        if ok and user is not None and user.totp_enabled:
            code = check_totp(user, totp)
            ok = code is CodeCheck.OK
        session.add(LoginAttempt(email=email, client=client[:64], success=ok))
        if ok and user is not None:
            if user.kind == UserKind.HELPDESK and not user.totp_enabled:
                scopes = frozenset({Scope.ACCOUNT})  # must enrol TOTP before anything else
            made = issue_token(ctx, session, user, token_name, scopes, lifetime_days)
            made.record.second_factor = user.totp_enabled  # the one-time code was checked above
            audit.record(session, user, "user.signed_in", "user", user.id, after={"token": made.record.id})
            issued = made.view()
    if issued is not None:
        return issued
    if found is not None and found.active and found.password_hash is None:
        raise AuthenticationFailed(f"{email} has not set a password yet: follow the link in the invitation")
    if not password_ok:
        # nothing about the code: a wrong password must not learn whether the code was right
        raise AuthenticationFailed("wrong e-mail or password")
    if not (totp or "").strip():
        raise AuthenticationFailed(
            "this account uses two-factor sign-in: give the one-time code from your authenticator app",
            reason="one_time_code_missing",
        )
    if code is CodeCheck.USED:
        raise OneTimeCodeUsed(CODE_USED)
    raise OneTimeCodeWrong(
        "the one-time code is wrong or has expired: give the code your authenticator app shows now "
        "(if it keeps failing, check the clock of your device)"
    )


def create_token(
    ctx: Context,
    session: Session,
    user: User,
    name: str,
    scopes: frozenset[Scope] | None,
    lifetime_days: int | None,
    caller_scopes: frozenset[Scope],
) -> IssuedToken:
    """Another token for the signed-in user, never with more scopes than the token asking for it.

    A helpdesk operator without two-factor sign-in only ever gets the ``account`` scope; the full
    token comes from confirming enrolment (:func:`totp_confirm`) or a sign-in with a one-time code.
    """
    wanted = scopes if scopes else caller_scopes
    if user.kind == UserKind.HELPDESK and not user.totp_enabled:
        wanted = frozenset({Scope.ACCOUNT})
    beyond = sorted(s.value for s in wanted - caller_scopes)
    if beyond:
        raise AccessDenied(
            f"the token you are using lacks the scope(s) {', '.join(beyond)}, "
            "so it cannot create a token that has them",
            reason="scope_missing",
            scopes=beyond,
        )
    issued = issue_token(ctx, session, user, name, wanted, lifetime_days)
    audit.record(
        session, user, "token.created", "token", issued.record.id,
        after={"name": issued.record.name, "scopes": issued.record.scopes},
    )  # fmt: skip
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
        secret_hash=sha256(token),
        scopes=sorted(s.value for s in (scopes or ALL_SCOPES)),
        expires_at=utcnow() + timedelta(days=days),
    )
    session.add(record)
    session.flush()
    return IssuedToken(token=token, record=record)


def resolve_token(session: Session, token: str) -> tuple[User, frozenset[Scope]]:
    """The user and scopes behind a bearer token; expired, revoked or forged tokens are refused."""
    record = session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar()
    if record is None:
        raise AuthenticationFailed("the token is not valid", reason="token_invalid")
    now = utcnow()
    if record.revoked_at is not None:
        raise AuthenticationFailed("the token was revoked", reason="token_revoked")
    if record.expires_at <= now:
        raise AuthenticationFailed("the token has expired", reason="token_expired")
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


#: the shortest start of a token's id that ``revoke_token`` looks up
MIN_TOKEN_PREFIX = 4


def revoke_token(session: Session, user: User, token_id: str) -> ApiToken:
    """Revoke a token by its id or a unique start of it (as the token lists show ids)."""
    token_id = token_id.strip()
    record = session.get(ApiToken, token_id)
    if record is None and len(token_id) >= MIN_TOKEN_PREFIX:
        query = select(ApiToken).where(ApiToken.id.startswith(token_id, autoescape=True)).limit(2)
        if user.kind != UserKind.HELPDESK:
            query = query.where(ApiToken.user_id == user.id)
        found = list(session.execute(query).scalars())
        if len(found) > 1:
            raise ValidationFailed(
                {"token": f"more than one token's id starts with {token_id}; give more of it"}
            )
        record = found[0] if found else None
    if record is None or (record.user_id != user.id and user.kind != UserKind.HELPDESK):
        raise NotFound(f"no token {token_id}")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        audit.record(session, user, "token.revoked", "token", record.id, after={"name": record.name})
    return record


# --- TOTP ---------------------------------------------------------------------------------------


CODE_USED = "this code was already used; wait for the next one"


class CodeCheck(StrEnum):
    OK = "ok"
    USED = "used"  # right, but already used once (codes are single-use, also across sign-ins)
    WRONG = "wrong"  # wrong, or from a 30-second step more than one step away


def check_totp(user: User, code: str | None) -> CodeCheck:
    """Check a one-time code against the current step and one step either side (clock drift).

    A good code moves ``totp_last_step`` on (the caller holds the user's row locked), so the same
    code, or an older one, never works twice.
    """
    if not code or not user.totp_secret:
        return CodeCheck.WRONG
    totp = pyotp.TOTP(user.totp_secret)
    now = utcnow()
    for drift in (-1, 0, 1):
        at = now + timedelta(seconds=30 * drift)
        step = int(at.timestamp()) // 30
        # as bytes: compare_digest refuses str with non-ASCII characters, which a typed code may hold
        if secrets.compare_digest(totp.at(at).encode(), code.strip().encode()):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return CodeCheck.USED
            user.totp_last_step = step
            return CodeCheck.OK
    return CodeCheck.WRONG


def totp_begin(session: Session, user: User) -> str:
    """Start enrolment: a new secret, returned as an otpauth:// URI for an authenticator app."""
    if user.totp_enabled:
        raise AlreadyExists("two-factor sign-in is already set up for this account")
    user.totp_secret = pyotp.random_base32()
    audit.record(session, user, "user.totp_enrolment_started", "user", user.id)
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name="levere")


def totp_confirm(ctx: Context, session: Session, user: User, code: str, token: str) -> IssuedToken | None:
    """Finish enrolment. A helpdesk operator's enrol-only token (``token``, the one the request was
    made with) is then replaced by a full one, returned here: the code just given is the second
    factor a sign-in would ask for, and it cannot be given twice, so a second sign-in would have to
    wait for the next code."""
    if user.totp_enabled:
        raise AlreadyExists("two-factor sign-in is already set up for this account")
    if not user.totp_secret:
        raise NotFound("two-factor enrolment has not been started", reason="totp_not_started")
    # you are signed in, so these are wrong input rather than a failed sign-in (401)
    match check_totp(user, code):
        case CodeCheck.USED:
            raise ValidationFailed({"code": CODE_USED})
        case CodeCheck.WRONG:
            raise ValidationFailed(
                {"code": "the one-time code does not match or has expired; check the clock of your device"}
            )
    user.totp_enabled = True
    audit.record(session, user, "user.totp_enabled", "user", user.id)
    record = session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar()
    enrol_only = record is not None and record.user_id == user.id and record.scopes == [Scope.ACCOUNT.value]
    if record is None or not enrol_only or user.kind != UserKind.HELPDESK:
        return None
    record.revoked_at = utcnow()
    issued = issue_token(ctx, session, user, record.name, lifetime_days=ctx.settings.token_lifetime_days)
    issued.record.second_factor = True  # the code just given
    audit.record(
        session, user, "token.upgraded", "token", issued.record.id,
        before={"token": record.id, "scopes": record.scopes}, after={"scopes": issued.record.scopes},
    )  # fmt: skip
    return issued


def change_password(ctx: Context, user: User, old: str, new: str) -> AccountView:
    """Argon2 runs outside the transaction (see :func:`login`)."""
    if not _password_ok(user, old):
        raise ValidationFailed({"current": "the current password is wrong"})
    new_hash = hash_password(new)
    with ctx.tx() as session:
        locked = session.execute(select(User).where(User.id == user.id).with_for_update(of=User)).scalar_one()
        if locked.password_hash != user.password_hash:
            raise Conflict("the password was changed meanwhile; sign in again and retry")
        locked.password_hash = new_hash
        audit.record(session, locked, "user.password_changed", "user", locked.id)
        return account_view(locked)


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


def update_facility(
    session: Session, actor: User, name: str, *, require_checksum_file: bool | None = None
) -> Facility:
    """Change a facility's settings; only what is given changes."""
    require(subject_of(actor), Action.FACILITY_UPDATE)
    facility = get_facility(session, name)
    before = {"require_checksum_file": facility.require_checksum_file}
    if require_checksum_file is not None:
        facility.require_checksum_file = require_checksum_file
    after = {"require_checksum_file": facility.require_checksum_file}
    if after != before:
        audit.record(session, actor, "facility.updated", "facility", facility.id, before=before, after=after)
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


# --- the use cases front ends call, each its own transaction -------------------------------------


def show_account(user: User) -> AccountView:
    return account_view(user)


def list_users(ctx: Context, actor: User) -> list[AccountView]:
    require(subject_of(actor), Action.USER_LIST)
    with ctx.tx() as session:
        return [account_view(u) for u in session.execute(select(User).order_by(User.email)).scalars()]


def list_facilities(ctx: Context, actor: User) -> list[FacilityView]:
    require(subject_of(actor), Action.FACILITY_LIST)
    with ctx.tx() as session:
        return [facility_view(f) for f in session.execute(select(Facility).order_by(Facility.name)).scalars()]


def register_facility(
    ctx: Context, actor: User, name: str, display_name: str, contact_email: str
) -> FacilityView:
    with ctx.tx() as session:
        return facility_view(create_facility(session, actor, name, display_name, contact_email))


def change_facility(
    ctx: Context, actor: User, name: str, *, require_checksum_file: bool | None = None
) -> FacilityView:
    with ctx.tx() as session:
        return facility_view(
            update_facility(session, actor, name, require_checksum_file=require_checksum_file)
        )


def my_tokens(ctx: Context, actor: User) -> list[TokenView]:
    with ctx.tx() as session:
        return [token_view(t) for t in list_tokens(session, actor)]


def new_token(
    ctx: Context,
    actor: User,
    name: str,
    scopes: frozenset[Scope] | None,
    lifetime_days: int | None,
    caller_scopes: frozenset[Scope],
) -> IssuedTokenView:
    with ctx.tx() as session:
        user = session.merge(actor)
        return create_token(ctx, session, user, name, scopes, lifetime_days, caller_scopes).view()


def withdraw_token(ctx: Context, actor: User, token_id: str) -> TokenView:
    with ctx.tx() as session:
        return token_view(revoke_token(session, session.merge(actor), token_id))


def start_totp(ctx: Context, actor: User) -> str:
    """An otpauth:// URI with a new secret, for an authenticator app."""
    with ctx.tx() as session:
        return totp_begin(session, session.merge(actor))


def finish_totp(
    ctx: Context, actor: User, code: str, token: str
) -> tuple[AccountView, IssuedTokenView | None]:
    """The account with two-factor sign-in on, and the full token replacing a helpdesk operator's
    enrol-only one (None for everyone else)."""
    with ctx.tx() as session:
        user = session.merge(actor)
        issued = totp_confirm(ctx, session, user, code, token)
        return account_view(user), issued.view() if issued is not None else None
