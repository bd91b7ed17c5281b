"""Background tasks of long-term storage beside the job runs (whose tasks are
:mod:`levere.jobs.dispatch`'s): the sweep."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from levere.services import sync_sweep

if TYPE_CHECKING:
    from levere.context import Context
    from levere.jobs.queue import JobQueue

log = logging.getLogger(__name__)


def sweep(ctx: Context) -> None:
    """Every minute: start jobs for leases of dead workers and for work left waiting."""
    assert ctx.jobs is not None
    with ctx.jobs.lock("levere-sync-sweep"):
        started = sync_sweep.sweep(ctx)
    if started:
        log.info("sweep started %d job(s) for unfinished copies", len(started))


def register(queue: JobQueue) -> None:
    """Register this module's tasks on the queue."""
    queue.schedule_periodic("sync_sweep", sweep, minutes=1)
