"""Background work of the secure zone: the sweep of shared disks and zone memberships."""

from __future__ import annotations

from typing import TYPE_CHECKING

from levere.services import secure, secure_disks

if TYPE_CHECKING:
    from levere.context import Context
    from levere.jobs.queue import JobQueue

#: how often the sweep looks at end dates; notices are sent in days, so this is ample
SWEEP_MINUTES = 15


def sweep_secure_zone(ctx: Context) -> None:
    """Notices before shared disks' end dates, expiry and destruction after them, and the zone
    memberships whose end date passed (access itself ends at the end date, checked on each use)."""
    assert ctx.jobs is not None
    with ctx.jobs.lock("levere-secure-sweep"):
        secure_disks.sweep(ctx)
        secure.record_ended_memberships(ctx)


def register(queue: JobQueue) -> None:
    queue.schedule_periodic("secure_sweep", sweep_secure_zone, minutes=SWEEP_MINUTES)
