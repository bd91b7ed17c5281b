"""Background tasks of long-term storage: copy jobs (sync, restore), verify, and the sweep."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from huey.exceptions import RetryTask

from levere.dataplane import replication
from levere.domain.errors import LevereError
from levere.services import scrub, sync

if TYPE_CHECKING:
    from levere.context import Context
    from levere.jobs.queue import JobQueue

log = logging.getLogger(__name__)

#: each retry of a copy job waits this many times longer than the one before
BACKOFF = 2.0


def transfer(ctx: Context, run_id: str, task: Any = None) -> None:
    """One lane of a sync or restore job. Transient errors (storage down, database gone) are
    recorded on the job and retried with backoff; after the last retry the job fails, visibly."""
    retries_left = task.retries if task is not None else 0
    try:
        result = replication.run_lane(ctx, run_id)
    except Exception as exc:
        message = exc.message if isinstance(exc, LevereError) else f"{type(exc).__name__}: {exc}"
        if retries_left > 0:
            replication.note_retry(ctx, run_id, message, float(task.retry_delay))
            raise  # huey schedules the retry
        log.exception("job %s failed after its last retry", run_id)
        replication.give_up(ctx, run_id, message)
        return
    if result.resume:
        # this process is stopping: back on the queue, for this worker's successor or another one
        raise RetryTask(delay=0)
    if result.wait_seconds:
        # other workers hold leases in this job's scope: come back when they end or expire
        raise RetryTask(delay=result.wait_seconds)


def verify(ctx: Context, run_id: str) -> None:
    try:
        scrub.run_verify(ctx, run_id)
    except Exception as exc:
        replication.give_up(ctx, run_id, f"{type(exc).__name__}: {exc}")
        raise


def sweep(ctx: Context) -> None:
    """Every minute: start jobs for leases of dead workers and for work left waiting."""
    assert ctx.jobs is not None
    with ctx.jobs.lock("levere-sync-sweep"):
        started = sync.sweep(ctx)
    if started:
        log.info("sweep started %d job(s) for unfinished copies", len(started))


def register(queue: JobQueue) -> None:
    """Register this module's tasks on the queue."""
    settings = queue.ctx.settings.sync
    queue.register(
        "transfer", transfer, retries=settings.retries, retry_delay=settings.retry_delay_seconds,
        retry_backoff=BACKOFF, context=True,
    )  # fmt: skip
    queue.register("verify", verify, retries=0)
    queue.schedule_periodic("sync_sweep", sweep, minutes=1)
