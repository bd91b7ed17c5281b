"""The ends of a tus upload other than completion: termination by its client (tus DELETE) and
expiry of uploads nobody touched for ``upload_expiry_hours`` (and of batches whose request died)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import select

from levere.context import Context
from levere.dataplane import backend_for, gone
from levere.db.models import Upload, User, utcnow
from levere.domain.deliveries import UploadState, upload_transition
from levere.domain.errors import StorageUnavailable
from levere.services import audit
from levere.services.deliveries import reclaim_dead_batches
from levere.services.upload_rows import abort_quietly, give_back, load_upload
from levere.transfer import tus

log = logging.getLogger(__name__)


def terminate(ctx: Context, actor: User, upload_id: str, headers: Mapping[str, str]) -> None:
    """DELETE (tus termination): drop the bytes and give the reservation back."""
    with ctx.tx() as session:
        upload, _project, delivery = load_upload(session, actor, upload_id, lock=True)
        tus.check_version(headers)
        if upload.state != UploadState.ACTIVE:
            raise gone(upload)
        upload.state = upload_transition(upload.state, UploadState.TERMINATED)
        upload.lease_owner = None
        give_back(session, upload)
        audit.record(
            session, actor, "upload.terminated", "delivery", delivery.id,
            after={"path": upload.path, "length": upload.length, "offset": upload.offset},
        )  # fmt: skip
        backend_id, staged = upload.backend_id, upload.session
    if staged:
        abort_quietly(backend_for(ctx, backend_id), staged)


def expire_abandoned(ctx: Context) -> int:
    """Give back the reservations of uploads nobody has touched for ``upload_expiry_hours`` (and of
    batches whose request died), and drop their bytes. Returns how many expired."""
    now = utcnow()
    dropped: list[tuple[str, str]] = []
    with ctx.tx() as session:
        reclaimed = reclaim_dead_batches(session)
    with ctx.tx() as session:
        rows = session.execute(
            select(Upload)
            .where(Upload.state == UploadState.ACTIVE, Upload.expires_at < now)
            .with_for_update(skip_locked=True)
        ).scalars()
        count = 0
        for upload in rows:
            if upload.lease_expires_at is not None and upload.lease_expires_at > now:
                continue  # a request is writing to it right now
            upload.state = upload_transition(upload.state, UploadState.EXPIRED)
            upload.lease_owner = None
            give_back(session, upload)
            audit.record(
                session, None, "upload.expired", "delivery", upload.delivery_id,
                after={"path": upload.path, "kind": upload.kind, "released": upload.length},
            )  # fmt: skip
            if upload.session:
                dropped.append((upload.backend_id, upload.session))
            count += 1
    for backend_id, staged in dropped:
        try:
            abort_quietly(backend_for(ctx, backend_id), staged)
        except StorageUnavailable as exc:
            log.warning("expired upload bytes left on storage: %s", exc.message)
    return count + reclaimed
