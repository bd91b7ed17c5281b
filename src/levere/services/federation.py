"""Federated sign-in: OpenID Connect providers (Life Science Login, Feide, ...) beside local accounts.

Design notes
------------
levere is the relying party for every flow, the CLI's included: the CLI never talks to the provider's
token endpoint, so a client secret stays on the server and the CLI needs nothing but levere's address.

- Browser flow (the portal, and ``levere login --provider`` on a machine without the device grant):
  :func:`start_browser` keeps the flow server-side (state, nonce, PKCE verifier, redirect URI) and
  returns the provider's authorization URL; :func:`finish_browser` takes the ``code`` and ``state``
  the provider sent to the redirect URI. The redirect URI is the portal's callback or a loopback
  address (RFC 8252, section 7.3); any other is refused, so levere never sends a code elsewhere.
- Device flow: :func:`start_device` asks the provider for a user code and returns it with an opaque
  handle; :func:`poll_device` polls the provider once per call.
- A flow is used once: its row is marked finished in its own transaction *before* the code is
  exchanged, so a replayed ``state`` (or handle) is refused even if the first use failed halfway.
- After verification the identity (issuer + subject) must be linked to an account: by accepting an
  invitation with it (:func:`start_browser` with ``invitation``) or by the helpdesk
  (:func:`link_identity`). An e-mail address from the provider never links anything.
- levere then issues its own API token, which records whether the provider asserted a second factor
  (``acr``). A helpdesk operator without it gets a token that can only manage the account, as after
  a password sign-in without TOTP, and is told how to get a full one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from authlib.common.security import generate_token
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from levere.auth import oidc
from levere.config import OidcProviderSettings
from levere.context import Context
from levere.db.models import ApiToken, FederatedIdentity, Invitation, SignInFlow, User, utcnow
from levere.domain.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    Conflict,
    NotFound,
    OneTimeCodeUsed,
    OneTimeCodeWrong,
    ValidationFailed,
)
from levere.domain.roles import Action, UserKind, require
from levere.services import audit, identity_keys
from levere.services.accounts import (
    CODE_USED,
    CodeCheck,
    IssuedToken,
    Scope,
    check_totp,
    create_user,
    issue_token,
    sha256,
    subject_of,
)
from levere.services.views import IdentityView, identity_view

#: the portal's callback path under ``public_url``
PORTAL_CALLBACK = "/auth/oidc/callback"


def _hash(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


def provider(ctx: Context, name: str) -> OidcProviderSettings:
    for p in ctx.settings.oidc.providers:
        if p.name == name:
            return p
    known = ", ".join(p.name for p in ctx.settings.oidc.providers) or "none are configured"
    raise NotFound(f"no sign-in provider named {name!r} (known: {known})")


def _provider_by_issuer(ctx: Context, issuer: str) -> OidcProviderSettings | None:
    return next((p for p in ctx.settings.oidc.providers if p.issuer == issuer.rstrip("/")), None)


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    title: str
    device_grant: bool


def list_providers(ctx: Context) -> list[ProviderInfo]:
    """The providers people may sign in with, for sign-in buttons (no provider is contacted)."""
    return [ProviderInfo(p.name, p.title or p.name, p.device_grant) for p in ctx.settings.oidc.providers]


def _check_redirect(ctx: Context, redirect_uri: str) -> None:
    portal = ctx.settings.public_url.rstrip("/") + PORTAL_CALLBACK
    if redirect_uri == portal:
        return
    parts = urlsplit(redirect_uri)
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1") and not parts.query:
        return  # a native client's loopback listener (RFC 8252, section 7.3)
    raise ValidationFailed(
        {"redirect_uri": f"must be {portal} or a loopback address such as http://127.0.0.1:PORT/callback"}
    )


def _invitation_hash(ctx: Context, invitation: str | None) -> str | None:
    if not invitation:
        return None
    from levere.services import invitations

    state = invitations.link_state(ctx, invitation)
    if state is not invitations.LinkState.VALID:
        raise AccessDenied(f"this invitation link cannot be used: it is {state.value}")
    return sha256(invitation)


@dataclass(frozen=True)
class BrowserStart:
    authorization_url: str
    state: str


def start_browser(
    ctx: Context, provider_name: str, redirect_uri: str, *, mfa: bool = False, invitation: str | None = None
) -> BrowserStart:
    """Begin a sign-in in a browser: the URL to send the person to."""
    p = provider(ctx, provider_name)
    _check_redirect(ctx, redirect_uri)
    invitation_hash = _invitation_hash(ctx, invitation)
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(24), generate_token(64)
    url = oidc.authorization_url(
        p, redirect_uri=redirect_uri, state=state, nonce=nonce, code_verifier=verifier, mfa=mfa
    )
    with ctx.tx() as session:
        _add_flow(
            session,
            SignInFlow(
                id=_hash(state), provider=p.name, kind="browser", nonce=nonce, code_verifier=verifier,
                redirect_uri=redirect_uri, mfa_requested=mfa, invitation_hash=invitation_hash,
                expires_at=utcnow() + timedelta(minutes=ctx.settings.oidc.flow_lifetime_minutes),
            )
        )  # fmt: skip
    return BrowserStart(authorization_url=url, state=state)


def _add_flow(session: Session, flow: SignInFlow) -> None:
    """Keep a new flow, and drop flows that ended long enough ago that nobody can mean them."""
    session.execute(delete(SignInFlow).where(SignInFlow.expires_at < utcnow() - timedelta(days=1)))
    session.add(flow)


def _claim_flow(ctx: Context, handle: str, kind: str, *, finish: bool) -> SignInFlow:
    """The flow behind a handle, refused when unknown, used or expired; ``finish`` marks it used."""
    with ctx.tx() as session:
        flow = session.execute(
            select(SignInFlow).where(SignInFlow.id == _hash(handle)).with_for_update()
        ).scalar()
        if flow is None or flow.kind != kind:
            raise NotFound(
                "this sign-in is not known to levere (a link from elsewhere?); start the sign-in again",
                reason="unknown_state",
            )
        if flow.finished_at is not None:
            raise Conflict("this sign-in was already used once; start the sign-in again", reason="state_used")
        if flow.expires_at <= utcnow():
            raise Conflict("this sign-in took too long and expired; start again", reason="expired")
        if finish:
            flow.finished_at = utcnow()
            session.flush()  # before the row leaves the session, or the change would not be written
        session.expunge(flow)
        return flow


@dataclass
class SignedIn:
    issued: IssuedToken
    user: User
    provider: str
    second_factor: bool
    #: the provider asserted no second factor and the account needs one: the token only manages it
    needs_second_factor: bool


def finish_browser(
    ctx: Context, state: str, code: str, *, iss: str | None = None, token_name: str = "cli"
) -> SignedIn:
    """Finish a browser sign-in with what the provider sent to the redirect URI."""
    flow = _claim_flow(ctx, state, "browser", finish=True)
    p = provider(ctx, flow.provider)
    if iss is not None and iss.rstrip("/") != p.issuer:
        # RFC 9207: a response from another provider than the one this flow went to (mix-up attack)
        raise AuthenticationFailed(
            f"the answer came from {iss}, not from {p.issuer} where this sign-in went", reason="wrong_issuer"
        )
    assert flow.redirect_uri is not None and flow.code_verifier is not None  # browser flows have both
    tokens = oidc.exchange_code(
        p, code=code, redirect_uri=flow.redirect_uri, code_verifier=flow.code_verifier
    )
    identity = oidc.verify_id_token(p, tokens, flow.nonce)
    return _sign_in(ctx, p, _with_userinfo(p, identity, tokens), flow, token_name)


@dataclass(frozen=True)
class DeviceStart:
    handle: str  # what the client polls with; secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


def start_device(ctx: Context, provider_name: str, *, mfa: bool = False) -> DeviceStart:
    """Begin a device-grant sign-in: the code to show and where to enter it."""
    p = provider(ctx, provider_name)
    if not p.device_grant:
        raise AuthenticationFailed(
            f"sign-in provider {p.name} is set up without the device grant; sign in in a browser instead",
            reason="no_device_grant",
        )
    nonce = secrets.token_urlsafe(24)
    device = oidc.start_device(p, mfa=mfa, nonce=nonce)
    handle = secrets.token_urlsafe(32)
    lifetime = min(device.expires_in, ctx.settings.oidc.flow_lifetime_minutes * 60)
    with ctx.tx() as session:
        _add_flow(
            session,
            SignInFlow(
                id=_hash(handle), provider=p.name, kind="device", nonce=nonce, device_code=device.device_code,
                mfa_requested=mfa, expires_at=utcnow() + timedelta(seconds=lifetime),
            )
        )  # fmt: skip
    return DeviceStart(
        handle=handle,
        user_code=device.user_code,
        verification_uri=device.verification_uri,
        verification_uri_complete=device.verification_uri_complete,
        expires_in=lifetime,
        interval=device.interval,
    )


@dataclass(frozen=True)
class StillPending:
    interval: int


def poll_device(ctx: Context, handle: str, *, token_name: str = "cli") -> SignedIn | StillPending:
    """Poll the provider once: :class:`StillPending` until the person has finished there."""
    flow = _claim_flow(ctx, handle, "device", finish=False)
    p = provider(ctx, flow.provider)
    assert flow.device_code is not None  # device flows have one
    try:
        tokens = oidc.poll_device(p, flow.device_code)
    except oidc.Pending as pending:
        return StillPending(interval=5 + pending.interval_increase)
    except AuthenticationFailed:
        _claim_flow(ctx, handle, "device", finish=True)  # denied or expired: the handle is spent
        raise
    # the provider gives tokens for a device code once; two polls racing here get one sign-in
    _claim_flow(ctx, handle, "device", finish=True)
    # the ID token came straight from the token endpoint, so a provider that does not echo the
    # device request's nonce is believed; one that echoes another is not
    identity = oidc.verify_id_token(p, tokens, flow.nonce, nonce_required=False)
    return _sign_in(ctx, p, _with_userinfo(p, identity, tokens), flow, token_name)


def _with_userinfo(
    p: OidcProviderSettings, identity: oidc.VerifiedIdentity, tokens: dict[str, Any]
) -> oidc.VerifiedIdentity:
    """The identity with the claims levere shows or keeps (e-mail, name, Crypt4GH public keys) from
    the userinfo endpoint, when the ID token lacks them; the ID token's own claims win."""
    wanted = {p.claims.get("email", "email"), p.claims.get("name", "name"), identity_keys.claim_name(p)}
    if wanted <= identity.claims.keys():
        return identity
    extra = oidc.userinfo(p, tokens, identity.subject)
    merged = {k: v for k, v in extra.items() if k in wanted} | identity.claims
    return replace(identity, claims=merged)


def _identity_email(p: OidcProviderSettings, identity: oidc.VerifiedIdentity) -> str:
    value = identity.claims.get(p.claims.get("email", "email"))
    return value if isinstance(value, str) else ""


def _sign_in(
    ctx: Context, p: OidcProviderSettings, identity: oidc.VerifiedIdentity, flow: SignInFlow, token_name: str
) -> SignedIn:
    mfa = identity.acr is not None and identity.acr in p.mfa_acr
    email = _identity_email(p, identity)
    with ctx.tx() as session:
        link = session.execute(
            select(FederatedIdentity).where(
                FederatedIdentity.issuer == identity.issuer, FederatedIdentity.subject == identity.subject
            )
        ).scalar()
        if link is None and flow.invitation_hash:
            link = _accept_invitation(session, p, identity, email, flow.invitation_hash)
        if link is None:
            shown = f" ({email})" if email else ""
            raise AuthenticationFailed(
                f"your {p.title or p.name} identity{shown} is not linked to a levere account: "
                "accept your invitation with it, or ask the helpdesk to link it",
                reason="identity_not_linked",
                provider=p.name,
                subject=identity.subject,
            )
        user = session.get(User, link.user_id)
        if user is None or not user.active:
            raise AuthenticationFailed("the account linked to this identity is disabled")
        link.last_used_at = utcnow()
        identity_keys.record(session, user, link, identity_keys.keys_from_claims(p, identity.claims, link.id))
        needs = user.kind == UserKind.HELPDESK and not mfa
        scopes = frozenset({Scope.ACCOUNT}) if needs else None
        issued = issue_token(ctx, session, user, token_name, scopes)
        issued.record.second_factor = mfa
        audit.record(
            session, user, "user.signed_in", "user", user.id,
            after={"token": issued.record.id, "provider": p.name, "second_factor": mfa},
        )  # fmt: skip
        session.flush()
        session.expunge(issued.record)
        session.expunge(user)
    return SignedIn(issued=issued, user=user, provider=p.name, second_factor=mfa, needs_second_factor=needs)


def _accept_invitation(
    session: Session,
    p: OidcProviderSettings,
    identity: oidc.VerifiedIdentity,
    email: str,
    invitation_hash: str,
) -> FederatedIdentity:
    from levere.services import invitations

    invitation = session.execute(
        select(Invitation).where(Invitation.secret_hash == invitation_hash).with_for_update()
    ).scalar()
    state = invitations._state(session, invitation)
    if state is not invitations.LinkState.VALID or invitation is None:
        raise AccessDenied(f"this invitation link cannot be used: it is {state.value}")
    user = session.execute(select(User).where(User.email == invitation.email)).scalar()
    if user is None:
        user = create_user(session, None, invitation.email)
    if not user.name and isinstance(identity.claims.get(p.claims.get("name", "name")), str):
        user.name = identity.claims[p.claims.get("name", "name")][:200]
    invitation.accepted_at = utcnow()
    audit.record(
        session, user, "invitation.accepted", "invitation", invitation.id, after={"email": user.email}
    )
    return _link(session, user, user, p, identity.subject, email)


def _link(
    session: Session, actor: User, user: User, p: OidcProviderSettings, subject: str, email: str
) -> FederatedIdentity:
    existing = session.execute(
        select(FederatedIdentity).where(
            FederatedIdentity.issuer == p.issuer, FederatedIdentity.subject == subject
        )
    ).scalar()
    if existing is not None:
        if existing.user_id == user.id:
            raise AlreadyExists(f"this {p.name} identity is already linked to {user.email}")
        raise Conflict(f"this {p.name} identity is linked to another account; unlink it there first")
    link = FederatedIdentity(user_id=user.id, provider=p.name, issuer=p.issuer, subject=subject, email=email)
    session.add(link)
    session.flush()
    audit.record(
        session, actor, "identity.linked", "user", user.id,
        after={"provider": p.name, "issuer": p.issuer, "subject": subject},
    )  # fmt: skip
    return link


# --- the helpdesk's links -----------------------------------------------------------------------


def link_identity(ctx: Context, actor: User, email: str, provider_name: str, subject: str) -> IdentityView:
    """Link a provider's subject (as the person read it from the provider) to an account."""
    from levere.services.accounts import get_user_by_email

    require(subject_of(actor), Action.IDENTITY_LINK)
    p = provider(ctx, provider_name)
    subject = subject.strip()
    if not subject or len(subject) > 255:
        raise ValidationFailed({"subject": "give the identity's subject (sub), at most 255 characters"})
    with ctx.tx() as session:
        user = get_user_by_email(session, email)
        return identity_view(_link(session, actor, user, p, subject, ""))


def unlink_identity(ctx: Context, actor: User, email: str, provider_name: str, subject: str) -> None:
    """Remove a link; the helpdesk may remove any, a person their own."""
    from levere.services.accounts import get_user_by_email

    if email.strip().lower() != actor.email:
        require(subject_of(actor), Action.IDENTITY_LINK)
    p = provider(ctx, provider_name)
    with ctx.tx() as session:
        user = get_user_by_email(session, email)
        link = session.execute(
            select(FederatedIdentity).where(
                FederatedIdentity.user_id == user.id,
                FederatedIdentity.issuer == p.issuer,
                FederatedIdentity.subject == subject,
            )
        ).scalar()
        if link is None:
            raise NotFound(f"{email} has no {p.name} identity {subject}")
        session.delete(link)
        audit.record(
            session, actor, "identity.unlinked", "user", user.id,
            before={"provider": p.name, "issuer": p.issuer, "subject": subject},
        )  # fmt: skip


def list_identities(ctx: Context, actor: User, email: str | None = None) -> list[IdentityView]:
    """The identities linked to one's own account, or (helpdesk) to anyone's."""
    from levere.services.accounts import get_user_by_email

    with ctx.tx() as session:
        user = actor
        if email is not None and email.strip().lower() != actor.email:
            require(subject_of(actor), Action.USER_LIST)
            user = get_user_by_email(session, email)
        rows = list(
            session.execute(
                select(FederatedIdentity)
                .where(FederatedIdentity.user_id == user.id)
                .order_by(FederatedIdentity.created_at)
            ).scalars()
        )
        return [identity_view(row) for row in rows]


# --- the second factor ----------------------------------------------------------------------------


def has_second_factor(ctx: Context, token: str) -> bool:
    """Whether the sign-in that made this token proved a second factor."""
    with ctx.tx() as session:
        found = session.execute(
            select(ApiToken.second_factor).where(ApiToken.secret_hash == sha256(token))
        ).scalar()
        return bool(found)


def step_up(ctx: Context, user: User, code: str, token: str) -> IssuedToken:
    """Trade the token in use for one with a second factor, by a one-time code from levere's TOTP.

    For a federated sign-in whose provider asserted no second factor (a helpdesk operator then has
    a token that only manages the account). The old token is revoked; the new one has every scope
    the account may have, and lives as long as a new sign-in's would.
    """
    with ctx.tx() as session:
        locked = session.execute(select(User).where(User.id == user.id).with_for_update(of=User)).scalar_one()
        if not locked.totp_enabled:
            raise ValidationFailed(
                {
                    "code": "two-factor sign-in is not set up for this account: set it up with "
                    "'levere account totp-enrol', or sign in with a provider's second factor (--mfa)"
                }
            )
        match check_totp(locked, code):
            case CodeCheck.USED:
                raise OneTimeCodeUsed(CODE_USED)
            case CodeCheck.WRONG:
                raise OneTimeCodeWrong(
                    "the one-time code is wrong or has expired: give the code your authenticator app shows now"
                )
        record = session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar_one()
        record.revoked_at = utcnow()
        issued = issue_token(ctx, session, locked, record.name)
        issued.record.second_factor = True
        audit.record(
            session, locked, "token.stepped_up", "token", issued.record.id,
            before={"token": record.id, "scopes": record.scopes}, after={"scopes": issued.record.scopes},
        )  # fmt: skip
        session.flush()
        session.expunge(issued.record)
        return issued
