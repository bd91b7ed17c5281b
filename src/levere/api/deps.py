"""Dependencies of the API's routes: the caller and the token scope they need (the context and
:func:`acts` come from :mod:`levere.http_deps`, shared with the web portal).

A route signature reads as its access rule: ``actor: WriteUser`` means "a signed-in user whose token
carries the write scope"; what that user may do to the object is decided by the service through the
permission table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from levere.api.limits import mark_signed_in
from levere.api.openapi import BEARER
from levere.context import Context
from levere.db.models import User
from levere.domain.errors import AccessDenied, AuthenticationFailed, ValidationFailed
from levere.http_deps import ACTION_KEY as ACTION_KEY
from levere.http_deps import CtxDep as CtxDep
from levere.http_deps import acts as acts
from levere.http_deps import get_ctx as get_ctx
from levere.services import accounts, federation, transfer_grants, upload_grants
from levere.services.accounts import Scope
from levere.transfer import wire


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("sign in first: no bearer token was sent ('levere login')")
    return token.strip()


#: declares the bearer scheme in the OpenAPI document; the token is read (and a missing one worded)
#: by :func:`bearer_token`
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def _caller(
    scope: Scope, *, second_factor: bool = False
) -> Callable[[Request, Context, HTTPAuthorizationCredentials | None], User]:
    def dependency(request: Request, ctx: CtxDep, _declared: Credentials) -> User:
        token = bearer_token(request)
        with ctx.tx() as session:
            user, scopes = accounts.resolve_token(session, token)
        if scope not in scopes:
            if scopes == {Scope.ACCOUNT}:
                raise AccessDenied(
                    "set up two-factor sign-in first: 'levere account totp-enrol'; if it is set up, "
                    "give a one-time code ('levere account step-up CODE') or sign in with a provider's "
                    "second factor ('levere login --provider NAME --mfa')"
                )
            raise AccessDenied(f"this token lacks the '{scope.value}' scope")
        request.state.user = user
        request.state.scopes = scopes
        if second_factor and not federation.has_second_factor(ctx, token):
            raise AccessDenied(
                "this needs a sign-in with a second factor: give a one-time code "
                "('levere account step-up CODE') or sign in with a provider's second factor "
                "('levere login --provider NAME --mfa')",
                reason="second_factor_required",
            )
        return user

    return mark_signed_in(dependency)


ReadUser = Annotated[User, Depends(_caller(Scope.READ))]
WriteUser = Annotated[User, Depends(_caller(Scope.WRITE))]
ReviewUser = Annotated[User, Depends(_caller(Scope.REVIEW))]
AccountUser = Annotated[User, Depends(_caller(Scope.ACCOUNT))]
#: a user whose token comes from a sign-in with a second factor (levere's TOTP, or MFA asserted by
#: an OpenID Connect provider): for secure-zone actions
SecondFactorUser = Annotated[User, Depends(_caller(Scope.WRITE, second_factor=True))]
#: callers of the secure zone's routes (api/routes/secure.py): every one needs the second factor
ZoneReadUser = Annotated[User, Depends(_caller(Scope.READ, second_factor=True))]
ZoneWriteUser = SecondFactorUser
ZoneReviewUser = Annotated[User, Depends(_caller(Scope.REVIEW, second_factor=True))]


def second_factor(request: Request, ctx: Context) -> bool:
    """Whether the caller's token comes from a sign-in that proved a second factor (for a use case
    that needs one only in some cases, such as a delivery onto a shared disk)."""
    return federation.has_second_factor(ctx, bearer_token(request))


def _upload_caller(request: Request, ctx: CtxDep, _declared: Credentials, upload_id: str) -> User:
    """The caller of a request on one upload: as :data:`WriteUser`, except that the token the upload
    was created with still works for it after expiring (services/upload_grants.py)."""
    token = bearer_token(request)
    with ctx.tx() as session:
        user, scopes = upload_grants.resolve(
            session, token, upload_id, request.headers.get(wire.GRANT_HEADER)
        )
    if Scope.WRITE not in scopes:
        raise AccessDenied(f"this token lacks the '{Scope.WRITE.value}' scope")
    request.state.user = user
    request.state.scopes = scopes
    return user


UploadUser = Annotated[User, Depends(mark_signed_in(_upload_caller))]


def _granted(
    scope: Scope, kind: transfer_grants.GrantKind, target: Callable[[Request], tuple[str | None, str]]
) -> Callable[[Request, Context, HTTPAuthorizationCredentials | None], User]:
    """A caller as :func:`_caller` makes, except that a token which expired during a transfer still
    works for the requests of that transfer, with the transfer's grant (services/transfer_grants.py).
    ``target`` reads from the request the project and the delivery, path or job it touches."""

    def dependency(request: Request, ctx: CtxDep, _declared: Credentials) -> User:
        token = bearer_token(request)
        project, name = target(request)
        wanted = transfer_grants.Wanted(kind, project, name)
        grant = request.headers.get(wire.GRANT_HEADER)
        with ctx.tx() as session:
            user, scopes = transfer_grants.resolve(session, token, grant, wanted)
        if scope not in scopes:
            raise AccessDenied(f"this token lacks the '{scope.value}' scope")
        request.state.user = user
        request.state.scopes = scopes
        return user

    return mark_signed_in(dependency)


def _delivery_target(request: Request) -> tuple[str | None, str]:
    return request.path_params.get("identifier"), request.path_params.get("name", "")


def _tus_target(request: Request) -> tuple[str | None, str]:
    try:
        metadata = wire.parse_metadata(request.headers.get("upload-metadata", ""))
    except ValidationFailed:
        metadata = {}  # the upload's own checks word this
    return metadata.get("project") or "", metadata.get("delivery") or ""


def _data_target(request: Request) -> tuple[str | None, str]:
    params = request.path_params
    if "delivery" in params:
        return params.get("identifier"), f"{params['delivery']}/{params.get('path', '')}"
    return params.get("identifier"), request.query_params.get("prefix", "")


def _job_target(request: Request) -> tuple[str | None, str]:
    return request.path_params.get("identifier"), request.path_params.get("job_id", "")


G = transfer_grants.GrantKind
#: writes to one delivery: also by the expired token of a transfer into that delivery
DeliveryWriteUser = Annotated[User, Depends(_granted(Scope.WRITE, G.DELIVERY, _delivery_target))]
#: reads of one delivery's state during a transfer into it (its file pages, its summary)
DeliveryReadUser = Annotated[User, Depends(_granted(Scope.READ, G.DELIVERY, _delivery_target))]
#: tus uploads' creation: the delivery is named in Upload-Metadata
TusCreateUser = Annotated[User, Depends(_granted(Scope.WRITE, G.DELIVERY, _tus_target))]
#: reads of files' bytes and listings: also by the expired token of a download of those files
DataReadUser = Annotated[User, Depends(_granted(Scope.READ, G.DOWNLOAD, _data_target))]
#: reads of one job: also by the expired token of the client following it
JobReadUser = Annotated[User, Depends(_granted(Scope.READ, G.JOB, _job_target))]


def caller_scopes(request: Request) -> frozenset[Scope]:
    """The scopes of the token the current request was made with (after one of the above ran)."""
    scopes: frozenset[Scope] = getattr(request.state, "scopes", frozenset())
    return scopes
