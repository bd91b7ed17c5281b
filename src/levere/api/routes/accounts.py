"""Sign-in, one's own account, tokens, two-factor enrolment, notifications, invitations."""

from __future__ import annotations

from fastapi import APIRouter, Request

from levere.api.deps import AccountUser, CtxDep, ReadUser, WriteUser, acts, bearer_token, caller_scopes
from levere.api.openapi import errors
from levere.api.schemas import (
    AcceptInvitationIn,
    CodeIn,
    IssuedTokenOut,
    LoginIn,
    NotificationOut,
    PasswordIn,
    TokenIn,
    TokenOut,
    TotpBeginOut,
    TotpConfirmOut,
    UserOut,
)
from levere.services import accounts, invitations, notify
from levere.services.accounts import Scope
from levere.services.views import IssuedTokenView

router = APIRouter(tags=["accounts"])


def issued_out(issued: IssuedTokenView) -> IssuedTokenOut:
    return IssuedTokenOut(token=issued.token, info=TokenOut.model_validate(issued.info))


@router.post(
    "/auth/login",
    summary="Sign in: a token for e-mail, password and one-time code",
    operation_id="login",
    responses=errors(401, 429),
    openapi_extra=acts(None),
)
def login(body: LoginIn, request: Request, ctx: CtxDep) -> IssuedTokenOut:
    client = request.client.host if request.client else ""
    issued = accounts.login(
        ctx, body.email, body.password, body.totp,
        client=client, token_name=body.token_name,
        scopes=frozenset(Scope(s) for s in body.scopes) if body.scopes else None,
        lifetime_days=body.lifetime_days,
    )  # fmt: skip
    return issued_out(issued)


@router.post(
    "/invitations/accept",
    summary="Accept an invitation and set a password",
    operation_id="accept_invitation",
    responses=errors(403, 404, 409),
    openapi_extra=acts(None),
)
def accept_invitation(body: AcceptInvitationIn, ctx: CtxDep) -> UserOut:
    return UserOut.model_validate(invitations.accept_invitation(ctx, body.secret, body.password, body.name))


@router.get("/me", summary="Show your own account", operation_id="get_me", openapi_extra=acts(None))
def me(actor: AccountUser) -> UserOut:
    return UserOut.model_validate(accounts.show_account(actor))


@router.post(
    "/me/password",
    summary="Change your password",
    operation_id="change_password",
    responses=errors(409),
    openapi_extra=acts(None),
)
def change_password(body: PasswordIn, actor: AccountUser, ctx: CtxDep) -> UserOut:
    return UserOut.model_validate(accounts.change_password(ctx, actor, body.current, body.new))


@router.get("/me/tokens", summary="List your tokens", operation_id="list_tokens", openapi_extra=acts(None))
def list_tokens(actor: AccountUser, ctx: CtxDep) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in accounts.my_tokens(ctx, actor)]


@router.post(
    "/me/tokens",
    summary="Create another token for yourself",
    operation_id="create_token",
    openapi_extra=acts(None),
    status_code=201,
)
def create_token(body: TokenIn, request: Request, actor: AccountUser, ctx: CtxDep) -> IssuedTokenOut:
    issued = accounts.new_token(
        ctx, actor, body.name,
        frozenset(Scope(s) for s in body.scopes) if body.scopes else None,
        body.lifetime_days, caller_scopes(request),
    )  # fmt: skip
    return issued_out(issued)


@router.delete(
    "/me/tokens/{token_id}",
    summary="Revoke one of your tokens",
    operation_id="revoke_token",
    responses=errors(404),
    openapi_extra=acts(None),
)
def revoke_token(token_id: str, actor: AccountUser, ctx: CtxDep) -> TokenOut:
    return TokenOut.model_validate(accounts.withdraw_token(ctx, actor, token_id))


@router.post(
    "/me/totp",
    summary="Start two-factor enrolment: a secret for your authenticator app",
    operation_id="begin_totp",
    responses=errors(409),
    openapi_extra=acts(None),
)
def totp_begin(actor: AccountUser, ctx: CtxDep) -> TotpBeginOut:
    return TotpBeginOut(otpauth_uri=accounts.start_totp(ctx, actor))


@router.post(
    "/me/totp/confirm",
    summary="Finish two-factor enrolment with a one-time code",
    operation_id="confirm_totp",
    responses=errors(404, 409),
    openapi_extra=acts(None),
)
def totp_confirm(body: CodeIn, request: Request, actor: AccountUser, ctx: CtxDep) -> TotpConfirmOut:
    """Finish enrolment; a helpdesk operator's enrol-only token is replaced by the full one returned."""
    account, issued = accounts.finish_totp(ctx, actor, body.code, bearer_token(request))
    out = TotpConfirmOut.model_validate(account)
    if issued is not None:
        out.token = issued_out(issued)
    return out


@router.get(
    "/me/notifications",
    summary="List your notifications",
    operation_id="list_notifications",
    openapi_extra=acts(None),
)
def notifications(actor: ReadUser, ctx: CtxDep, unread: bool = False) -> list[NotificationOut]:
    return [NotificationOut.model_validate(n) for n in notify.notifications(ctx, actor, unread_only=unread)]


@router.post(
    "/me/notifications/read",
    summary="Mark all your notifications read",
    operation_id="mark_notifications_read",
    openapi_extra=acts(None),
)
def mark_read(actor: WriteUser, ctx: CtxDep) -> dict[str, int]:
    return {"marked": notify.mark_all_read(ctx, actor)}
