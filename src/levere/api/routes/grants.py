"""Transfer grants: a transfer started with a valid token finishes with it after it expires
(services/transfer_grants.py).

A client asks for a grant while its token is valid, for one transfer: the delivery it sends, what it
downloads, or the job it follows. Once the token expires, the requests of that transfer that carry
the grant's id in ``Levere-Grant`` still work with it, until the transfer ends; nothing else does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from levere.api.deps import Credentials, CtxDep, ReadUser, WriteUser, acts, bearer_token
from levere.api.limits import mark_signed_in
from levere.api.openapi import errors
from levere.api.schemas import In
from levere.domain.roles import Action
from levere.services import transfer_grants
from levere.services.transfer_grants import GrantKind
from levere.services.views import TransferGrantView

router = APIRouter(tags=["accounts"])


class DownloadGrantIn(In):
    target: str = Field(max_length=4096, description="DELIVERY, or DELIVERY/PATH of one file or folder")


class GrantOut(BaseModel):
    id: str = Field(description="send it as Levere-Grant with every request of the transfer")
    kind: GrantKind
    project: str
    target: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None


def _out(view: TransferGrantView) -> GrantOut:
    return GrantOut.model_validate(view, from_attributes=True)


@router.post(
    "/projects/{identifier}/deliveries/{name}/transfer-grant",
    status_code=201,
    summary="Let this token finish sending one delivery even if it expires meanwhile",
    operation_id="grant_delivery_transfer",
    responses=errors(403, 404, 409),
    openapi_extra=acts(Action.DELIVERY_UPLOAD),
)
def delivery_grant(identifier: str, name: str, request: Request, actor: WriteUser, ctx: CtxDep) -> GrantOut:
    """A grant for the uploads, tar batches, file pages and seal of one open delivery."""
    view = transfer_grants.issue(ctx, actor, bearer_token(request), GrantKind.DELIVERY, identifier, name)
    return _out(view)


@router.post(
    "/projects/{identifier}/download-grants",
    status_code=201,
    summary="Let this token finish downloading one file or delivery even if it expires meanwhile",
    operation_id="grant_download",
    responses=errors(403, 404),
    openapi_extra=acts(Action.DATA_READ),
)
def download_grant(
    identifier: str, body: DownloadGrantIn, request: Request, actor: ReadUser, ctx: CtxDep
) -> GrantOut:
    """A grant for the listing and the bytes of one file, folder or delivery."""
    view = transfer_grants.issue(
        ctx, actor, bearer_token(request), GrantKind.DOWNLOAD, identifier, body.target
    )
    return _out(view)


@router.post(
    "/projects/{identifier}/jobs/{job_id}/transfer-grant",
    status_code=201,
    summary="Let this token follow one job to its end even if it expires meanwhile",
    operation_id="grant_job_follow",
    responses=errors(403, 404, 409),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def job_grant(identifier: str, job_id: str, request: Request, actor: ReadUser, ctx: CtxDep) -> GrantOut:
    """A grant for reading one job that has not ended."""
    view = transfer_grants.issue(ctx, actor, bearer_token(request), GrantKind.JOB, identifier, job_id)
    return _out(view)


def _token(request: Request, _declared: Credentials) -> str:
    """The bearer token as sent: :func:`transfer_grants.end` accepts it expired, as the grant does."""
    return bearer_token(request)


Token = Annotated[str, Depends(mark_signed_in(_token))]


@router.delete(
    "/transfer-grants/{grant_id}",
    status_code=204,
    summary="End a transfer grant: the transfer is over",
    operation_id="end_transfer_grant",
    response_class=Response,
    responses=errors(401, 404),
    openapi_extra=acts(None),
)
def end(grant_id: str, token: Token, ctx: CtxDep) -> Response:
    """End a grant of this token's (also once the token has expired); it then carries nothing."""
    transfer_grants.end(ctx, token, grant_id)
    return Response(status_code=204)
