"""Dependencies shared by every route: the context, the caller and the token scope they need.

A route signature reads as its access rule: ``actor: WriteUser`` means "a signed-in user whose token
carries the write scope"; what that user may do to the object is decided by the service through the
permission table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from levere.db.models import User
from levere.domain.errors import AccessDenied, AuthenticationFailed
from levere.domain.roles import Action
from levere.services import accounts
from levere.services.accounts import Scope
from levere.services.context import Context

ACTION_KEY = "x-levere-action"


def acts(action: Action | None) -> dict[str, Any]:
    """Route metadata naming the permission-table action the route performs (None: own account)."""
    return {ACTION_KEY: action.value if action else None}


def get_ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


CtxDep = Annotated[Context, Depends(get_ctx)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("sign in first: no bearer token was sent ('levere login')")
    return token.strip()


def _caller(scope: Scope) -> Callable[[Request, Context], User]:
    def dependency(request: Request, ctx: CtxDep) -> User:
        token = bearer_token(request)
        with ctx.tx() as session:
            user, scopes = accounts.resolve_token(session, token)
        if scope not in scopes:
            if scopes == {Scope.ACCOUNT}:
                raise AccessDenied("set up two-factor sign-in first: 'levere account totp-enrol'")
            raise AccessDenied(f"this token lacks the '{scope.value}' scope")
        request.state.user = user
        return user

    return dependency


ReadUser = Annotated[User, Depends(_caller(Scope.READ))]
WriteUser = Annotated[User, Depends(_caller(Scope.WRITE))]
ReviewUser = Annotated[User, Depends(_caller(Scope.REVIEW))]
AccountUser = Annotated[User, Depends(_caller(Scope.ACCOUNT))]
