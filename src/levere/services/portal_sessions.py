"""Browser sessions of the web portal, kept as API tokens of their own kind.

Design notes
------------
A portal session is an API token named ``portal session`` whose lifetime is the session's
(``portal_session_minutes``), so expiry, revocation, disabled accounts and the scope rules of
:mod:`levere.services.accounts` (a helpdesk operator without a second factor only gets ``account``)
hold for the browser exactly as for the command line. The token travels in an HttpOnly cookie and
never reaches the page's scripts; signing out revokes it, so a copied cookie stops working too.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import ApiToken, User, utcnow
from levere.domain.errors import AuthenticationFailed
from levere.services import accounts
from levere.services.accounts import Scope
from levere.services.views import IssuedTokenView, token_view

SESSION_TOKEN_NAME = "portal session"


def begin(ctx: Context, email: str, password: str, totp: str | None, *, client: str = "") -> IssuedTokenView:
    """Sign in (password, and the one-time code when the account uses one) and start a session."""
    issued = accounts.login(ctx, email, password, totp or None, client=client, token_name=SESSION_TOKEN_NAME)
    return limit(ctx, issued)


def limit(ctx: Context, issued: IssuedTokenView) -> IssuedTokenView:
    """Cut a freshly issued token's lifetime down to a session's."""
    ends = utcnow() + timedelta(minutes=ctx.settings.portal_session_minutes)
    with ctx.tx() as session:
        record = session.get(ApiToken, issued.info.id)
        if record is None:
            raise AuthenticationFailed("the new session was not found; sign in again")
        record.expires_at = min(record.expires_at, ends)
        return replace(issued, info=token_view(record))


def resume(session: Session, token: str) -> tuple[User, frozenset[Scope]]:
    """The user and scopes of a session cookie, inside the caller's transaction (a building block:
    the user row is the actor the portal's use cases are then called with); an expired or revoked
    session is refused."""
    return accounts.resolve_token(session, token)


def end(ctx: Context, token: str) -> None:
    """Sign out: the session's token is revoked (an unknown or already ended one is left alone)."""
    with ctx.tx() as session:
        record = session.execute(
            select(ApiToken).where(ApiToken.secret_hash == accounts.sha256(token))
        ).scalar()
        if record is not None and record.revoked_at is None:
            user = session.get(User, record.user_id)
            if user is not None:
                accounts.revoke_token(session, user, record.id)
