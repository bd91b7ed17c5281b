"""Federated sign-in (OpenID Connect): the providers, the browser and device flows, identity links.

The portal's "Sign in with ..." button posts to ``/auth/oidc/{provider}/browser`` with its callback
as ``redirect_uri`` and sends the browser to the answer's ``authorization_url``; its callback page
posts the ``code``, ``state`` and ``iss`` it received to ``/auth/oidc/callback``. ``levere login
--provider`` does the same with a loopback redirect, or uses the device routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from levere.api.deps import AccountUser, CtxDep, ReviewUser, acts, bearer_token
from levere.api.openapi import errors
from levere.api.schemas import IssuedTokenOut, TokenOut
from levere.domain.roles import Action
from levere.services import federation, identity_keys
from levere.services.views import IdentityView

router = APIRouter(tags=["accounts"])

ProviderName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="The provider's name")]
TokenName = Annotated[str, Field(min_length=1, max_length=100)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderOut(BaseModel):
    name: str
    title: str
    #: whether ``levere login --provider`` uses the device grant with it
    device_grant: bool


class BrowserStartIn(_In):
    #: the portal's callback (``public_url`` + /auth/oidc/callback) or a loopback address
    redirect_uri: Annotated[str, Field(min_length=1, max_length=500)]
    #: ask the provider for a second factor
    mfa: bool = False
    #: the secret of an invitation this sign-in accepts (linking the identity to the invited account)
    invitation: Annotated[str | None, Field(max_length=200)] = None


class BrowserStartOut(BaseModel):
    authorization_url: str
    state: str


class BrowserFinishIn(_In):
    state: Annotated[str, Field(min_length=1, max_length=200)]
    code: Annotated[str, Field(min_length=1, max_length=2000)]
    #: the ``iss`` parameter of the provider's answer (RFC 9207), when it sent one
    iss: Annotated[str | None, Field(max_length=500)] = None
    token_name: TokenName = "cli"


class SignedInOut(BaseModel):
    token: IssuedTokenOut
    email: str
    provider: str
    #: the provider asserted a second factor (``acr``)
    second_factor: bool
    #: the account needs a second factor the sign-in did not prove: the token only manages the
    #: account; sign in again asking for one
    needs_second_factor: bool


class DeviceStartIn(_In):
    mfa: bool = False


class DeviceStartOut(BaseModel):
    #: what to poll with; keep it secret
    handle: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


class DevicePollIn(_In):
    handle: Annotated[str, Field(min_length=1, max_length=200)]
    token_name: TokenName = "cli"


class DevicePollOut(BaseModel):
    status: Literal["pending", "signed_in"]
    #: seconds to wait before the next poll
    interval: int = 0
    signed_in: SignedInOut | None = None


class IdentityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    provider: str
    issuer: str
    subject: str
    email: str
    created_at: datetime
    last_used_at: datetime | None
    #: the Crypt4GH public keys (PEM) the provider released at the last sign-in
    crypt4gh_public_keys: list[str] = Field(default_factory=list)


class RecipientKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    provider: str = Field(description="the sign-in provider that released the key")
    fingerprint: str
    pem: str = Field(description="the key as crypt4gh-keygen writes a .pub file")


class StepUpIn(_In):
    code: Annotated[str, Field(min_length=1, max_length=20)]


class IdentityIn(_In):
    provider: Annotated[str, Field(min_length=1, max_length=64)]
    subject: Annotated[str, Field(min_length=1, max_length=255)]


def _signed_in(result: federation.SignedIn) -> SignedInOut:
    return SignedInOut(
        token=IssuedTokenOut(token=result.issued.token, info=TokenOut.model_validate(result.issued.record)),
        email=result.user.email,
        provider=result.provider,
        second_factor=result.second_factor,
        needs_second_factor=result.needs_second_factor,
    )


def _identity(row: IdentityView) -> IdentityOut:
    return IdentityOut.model_validate(row)


@router.get(
    "/auth/providers",
    summary="List the providers one may sign in with",
    operation_id="list_sign_in_providers",
    openapi_extra=acts(None),
)
def list_providers(ctx: CtxDep) -> list[ProviderOut]:
    return [
        ProviderOut(name=p.name, title=p.title, device_grant=p.device_grant)
        for p in federation.list_providers(ctx)
    ]


@router.post(
    "/auth/oidc/{provider}/browser",
    summary="Start a sign-in with a provider in a browser: where to send the browser",
    operation_id="start_browser_sign_in",
    responses=errors(403, 404, 502),
    openapi_extra=acts(None),
)
def start_browser(provider: ProviderName, body: BrowserStartIn, ctx: CtxDep) -> BrowserStartOut:
    start = federation.start_browser(
        ctx, provider, body.redirect_uri, mfa=body.mfa, invitation=body.invitation
    )
    return BrowserStartOut(authorization_url=start.authorization_url, state=start.state)


@router.post(
    "/auth/oidc/callback",
    summary="Finish a browser sign-in with the provider's code: a token",
    operation_id="finish_browser_sign_in",
    responses=errors(401, 403, 404, 409, 502),
    openapi_extra=acts(None),
)
def finish_browser(body: BrowserFinishIn, ctx: CtxDep) -> SignedInOut:
    return _signed_in(
        federation.finish_browser(ctx, body.state, body.code, iss=body.iss, token_name=body.token_name)
    )


@router.post(
    "/auth/oidc/{provider}/device",
    summary="Start a sign-in with a provider's device grant: a code to enter there",
    operation_id="start_device_sign_in",
    responses=errors(401, 404, 502),
    openapi_extra=acts(None),
)
def start_device(provider: ProviderName, body: DeviceStartIn, ctx: CtxDep) -> DeviceStartOut:
    start = federation.start_device(ctx, provider, mfa=body.mfa)
    return DeviceStartOut(
        handle=start.handle,
        user_code=start.user_code,
        verification_uri=start.verification_uri,
        verification_uri_complete=start.verification_uri_complete,
        expires_in=start.expires_in,
        interval=start.interval,
    )


@router.post(
    "/auth/oidc/device/poll",
    summary="Ask whether a device sign-in has finished: a token once it has",
    operation_id="poll_device_sign_in",
    responses=errors(401, 403, 404, 409, 502),
    openapi_extra=acts(None),
)
def poll_device(body: DevicePollIn, ctx: CtxDep) -> DevicePollOut:
    result = federation.poll_device(ctx, body.handle, token_name=body.token_name)
    if isinstance(result, federation.StillPending):
        return DevicePollOut(status="pending", interval=result.interval)
    return DevicePollOut(status="signed_in", signed_in=_signed_in(result))


@router.get(
    "/me/identities",
    summary="List the sign-in identities linked to your account",
    operation_id="list_my_identities",
    openapi_extra=acts(None),
)
def my_identities(actor: AccountUser, ctx: CtxDep) -> list[IdentityOut]:
    return [_identity(row) for row in federation.list_identities(ctx, actor)]


@router.get(
    "/me/recipient-keys",
    summary="List the Crypt4GH public keys your sign-in identities released",
    operation_id="list_my_recipient_keys",
    openapi_extra=acts(None),
)
def my_recipient_keys(actor: AccountUser, ctx: CtxDep) -> list[RecipientKeyOut]:
    """The Crypt4GH public keys your identity providers released (``crypt4ghPublicKeys``) at your
    last sign-in with each: the default recipients of your secure-zone downloads."""
    return [RecipientKeyOut.model_validate(k) for k in identity_keys.default_recipient_keys(ctx, actor)]


@router.delete(
    "/me/identities/{provider}/{subject}",
    summary="Unlink one of your sign-in identities",
    operation_id="unlink_my_identity",
    responses=errors(404),
    openapi_extra=acts(None),
)
def unlink_mine(provider: ProviderName, subject: str, actor: AccountUser, ctx: CtxDep) -> dict[str, str]:
    federation.unlink_identity(ctx, actor, actor.email, provider, subject)
    return {"unlinked": subject}


@router.get(
    "/users/{email}/identities",
    summary="List the sign-in identities linked to an account",
    operation_id="list_identities",
    responses=errors(404),
    openapi_extra=acts(Action.USER_LIST),
)
def identities(email: str, actor: ReviewUser, ctx: CtxDep) -> list[IdentityOut]:
    return [_identity(row) for row in federation.list_identities(ctx, actor, email)]


@router.post(
    "/users/{email}/identities",
    summary="Link a provider's identity (its subject) to an account",
    operation_id="link_identity",
    responses=errors(404, 409),
    openapi_extra=acts(Action.IDENTITY_LINK),
    status_code=201,
)
def link_identity(email: str, body: IdentityIn, actor: ReviewUser, ctx: CtxDep) -> IdentityOut:
    return _identity(federation.link_identity(ctx, actor, email, body.provider, body.subject))


@router.delete(
    "/users/{email}/identities/{provider}/{subject}",
    summary="Unlink a sign-in identity from an account",
    operation_id="unlink_identity",
    responses=errors(404),
    openapi_extra=acts(Action.IDENTITY_LINK),
)
def unlink_identity(
    email: str, provider: ProviderName, subject: str, actor: ReviewUser, ctx: CtxDep
) -> dict[str, str]:
    federation.unlink_identity(ctx, actor, email, provider, subject)
    return {"unlinked": subject}


@router.post(
    "/me/step-up",
    summary="Prove a second factor with a one-time code: a token that carries it",
    operation_id="step_up",
    responses=errors(401, 422),
    openapi_extra=acts(None),
)
def step_up(body: StepUpIn, request: Request, actor: AccountUser, ctx: CtxDep) -> IssuedTokenOut:
    """The token in use is revoked and replaced by the one returned."""
    issued = federation.step_up(ctx, actor, body.code, bearer_token(request))
    return IssuedTokenOut(token=issued.token, info=TokenOut.model_validate(issued.record))
