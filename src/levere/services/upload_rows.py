"""The rows of tus uploads, for the steps that end one: loading an upload the caller may write to,
failing it, giving its reservation back, dropping its staged bytes."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.dataplane import Snapshot
from levere.db.models import Delivery, Project, Upload, User
from levere.domain.deliveries import UploadState, upload_transition
from levere.domain.errors import LevereError, NotFound
from levere.domain.roles import Action
from levere.services import audit, quotas, zone_uploads
from levere.services.projects import authorize, landing_tier
from levere.storage import Backend

log = logging.getLogger(__name__)


def load_upload(
    session: Session, actor: User, upload_id: str, *, lock: bool = False
) -> tuple[Upload, Project, Delivery]:
    query = select(Upload).where(Upload.id == upload_id, Upload.kind == "tus")
    if lock:
        query = query.with_for_update()
    upload = session.execute(query).scalar()
    if upload is None:
        raise NotFound("no such upload")
    project = authorize(session, actor, upload.project_id, Action.DELIVERY_UPLOAD)
    delivery = session.get(Delivery, upload.delivery_id)
    assert delivery is not None  # a foreign key with ON DELETE CASCADE
    return upload, project, delivery


def give_back(session: Session, upload: Upload) -> None:
    """An upload that will not complete frees what it reserved: on the disk or the area's quota."""
    delivery = session.get(Delivery, upload.delivery_id)
    if delivery is not None and delivery.shared_disk_id is not None:
        zone_uploads.give_back(session, delivery.shared_disk_id, upload.length)
    else:
        quotas.release(session, upload.project_id, landing_tier(session, upload.project_id), upload.length)


def fail_upload(ctx: Context, actor: User | None, up: Snapshot, reason: str) -> None:
    """Mark the upload failed and give its reservation back (its bytes are dropped by the caller)."""
    with ctx.tx() as session:
        upload = session.execute(select(Upload).where(Upload.id == up.id).with_for_update()).scalar_one()
        if upload.state != UploadState.ACTIVE:
            return
        upload.state = upload_transition(upload.state, UploadState.FAILED)
        upload.reason = reason
        upload.lease_owner = None
        give_back(session, upload)
        audit.record(
            session, actor, "upload.failed", "delivery", up.delivery_id,
            after={"path": up.path, "length": up.length, "reason": reason},
        )  # fmt: skip


def abort_quietly(backend: Backend, staged: str) -> None:
    try:
        backend.abort_staged(staged)
    except LevereError as exc:  # the bytes are unreferenced; a later clean-up may remove them
        log.warning("could not drop staged upload bytes: %s", exc.message)
