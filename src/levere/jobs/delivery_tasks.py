"""Background tasks of deliveries: giving back the quota of abandoned uploads."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from levere.context import Context
    from levere.jobs.queue import JobQueue

log = logging.getLogger(__name__)

#: how often abandoned uploads are looked for; they expire after ``upload_expiry_hours``
EXPIRY_EVERY_MINUTES = 15


def expire_uploads(ctx: Context) -> int:
    from levere.services.upload_endings import expire_abandoned

    count = expire_abandoned(ctx)
    if count:
        log.info("%d abandoned upload(s) expired; their reservations were given back", count)
    return count


def register(queue: JobQueue) -> None:
    """Register this module's tasks on the queue."""
    queue.register("expire_uploads", expire_uploads, retries=2, retry_delay=60)
    queue.schedule_periodic("expire_uploads_periodic", expire_uploads, minutes=EXPIRY_EVERY_MINUTES)
