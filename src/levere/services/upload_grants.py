"""Per-upload grants: an upload started with a valid token can be finished with it after it expires.

Design notes
------------
A large file can take longer than the token it started with lives (a short-lived token from a
federated sign-in, or one that simply runs out during a week-long transfer). Re-typing credentials
mid-transfer is what people complain about most, so the upload itself carries the grant: the token
that created it (recorded on the upload) is still accepted, *for that upload only*, while the upload
is active and has not expired, even once the token has. A revoked token, a disabled account, or an
upload that finished, failed or expired ends the grant; nothing else is widened.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import ApiToken, Delivery, Project, Upload, User, utcnow
from levere.domain.errors import AuthenticationFailed
from levere.services import transfer_grants
from levere.services.accounts import Scope, resolve_token, sha256


def grant(ctx: Context, upload_id: str, token: str) -> None:
    """Record that the upload was created with this token."""
    with ctx.tx() as session:
        record = session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar()
        upload = session.get(Upload, upload_id)
        if record is not None and upload is not None:
            upload.token_id = record.id


def resolve(
    session: Session, token: str, upload_id: str, grant_id: str | None = None
) -> tuple[User, frozenset[Scope]]:
    """The caller of a request on one upload: a valid token, the expired one that created it, or
    the expired one whose transfer grant covers the upload's delivery (an upload a delivery resumes
    from an earlier run, made with another token: services/transfer_grants.py)."""
    try:
        return resolve_token(session, token)
    except AuthenticationFailed as exc:
        if exc.details.get("reason") != "token_expired":
            raise
        record = session.execute(select(ApiToken).where(ApiToken.secret_hash == sha256(token))).scalar()
        upload = session.get(Upload, upload_id)
        if grant_id and upload is not None and (record is None or upload.token_id != record.id):
            delivery = session.get(Delivery, upload.delivery_id)
            project = session.get(Project, upload.project_id)
            if delivery is not None and project is not None and upload.state == "active":
                wanted = transfer_grants.Wanted(
                    transfer_grants.GrantKind.DELIVERY, project.identifier, delivery.name
                )
                return transfer_grants.resolve(session, token, grant_id, wanted)
        granted = (
            record is not None
            and upload is not None
            and upload.token_id == record.id
            and upload.state == "active"
            and upload.expires_at > utcnow()
        )
        if not granted:
            raise AuthenticationFailed(
                "the token has expired; an upload started with it can be finished with it, but not this one: "
                "sign in again",
                reason="token_expired",
            ) from None
        assert record is not None
        user = session.get(User, record.user_id)
        if user is None or not user.active:
            raise AuthenticationFailed("the account behind this token is disabled") from None
        return user, frozenset(Scope(s) for s in record.scopes)
