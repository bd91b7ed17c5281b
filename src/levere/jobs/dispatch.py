"""Job runs on the queue: the one table of run kinds to the task that does them, and the one place
that records a run's failures and retries.

Design notes
------------
* A run (sync, restore, verify, analysis, release) is a row people watch
  (:mod:`levere.services.jobruns`). Its kind names an entry of :data:`TASKS`: the huey task that does the work, how many lanes of it run at
  once, and how often a failed attempt is retried.
* Every attempt goes through :func:`attempt`: a fault with retries left is recorded on the run
  ("retrying", the error, when the next try is) and raised for huey to retry with backoff; the
  last one closes the run as failed with the reason, visibly, and is not raised again.
* A process without a queue (scripts, some tests) does the work at once, as one attempt with no
  retry, through the same function.
* Task names stay those queued tasks already carry ("transfer" for both copy kinds), so that work
  waiting in a persistent queue across an upgrade is still understood.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from huey.exceptions import RetryTask
from sqlalchemy import update

from levere.config import SyncSettings
from levere.dataplane import replication
from levere.dataplane.replication import LaneResult
from levere.db.models import JobRun, utcnow
from levere.domain.errors import AccessDenied, Conflict, LevereError, NotFound, ValidationFailed
from levere.domain.jobruns import FINISHED, JobKind, JobRunState, job_run_sources, job_run_transition
from levere.services import scrub, zone_analysis, zone_release

if TYPE_CHECKING:
    from levere.context import Context
    from levere.jobs.queue import JobQueue

log = logging.getLogger(__name__)

#: each retry of a job waits this many times longer than the one before
BACKOFF = 2.0


def _verify(ctx: Context, run_id: str) -> LaneResult:
    scrub.run_verify(ctx, run_id)
    return LaneResult()


def _analyse(ctx: Context, run_id: str) -> LaneResult:
    zone_analysis.run_analysis(ctx, run_id)
    return LaneResult()


def _release(ctx: Context, run_id: str) -> LaneResult:
    zone_release.run_release(ctx, run_id)
    return LaneResult()


@dataclass(frozen=True)
class Task:
    #: the huey task's name
    name: str
    #: one attempt at the run: returns whether (and when) to come back
    work: Callable[[Context, str], LaneResult]
    #: how many lanes of the run work at once (each is one task on the queue)
    lanes: Callable[[SyncSettings], int]
    #: how many times a failed attempt is tried again before the run fails
    retries: Callable[[SyncSettings], int]
    #: errors no retry can mend (a refusal): the run fails at once, with the error's words
    final: tuple[type[Exception], ...] = ()


COPY = Task("transfer", replication.run_lane, lanes=lambda s: s.lanes, retries=lambda s: s.retries)
#: a verify reads everything once; a failed one is asked for again rather than retried
VERIFY = Task("verify", _verify, lanes=lambda s: 1, retries=lambda s: 0)
#: the standard analysis of a zone delivery reads every FASTQ file once; a failed one is asked for again
ANALYSIS = Task("analysis", _analyse, lanes=lambda s: 1, retries=lambda s: 0)
#: a release is crash-safe and resumable: a retry goes on with the files the last attempt left; a
#: refusal (the requester lost the right, the disk was destroyed or its key is gone) is final
RELEASE = Task(
    "release", _release, lanes=lambda s: 1, retries=lambda s: s.retries,
    final=(AccessDenied, NotFound, Conflict, ValidationFailed),
)  # fmt: skip
TASKS: dict[JobKind, Task] = {
    JobKind.SYNC: COPY,
    JobKind.RESTORE: COPY,
    JobKind.VERIFY: VERIFY,
    JobKind.ANALYSIS: ANALYSIS,
    JobKind.RELEASE: RELEASE,
}
#: the kinds that copy between tiers (their runs close with a copy report)
COPY_KINDS = (JobKind.SYNC, JobKind.RESTORE)


def attempt(ctx: Context, task: Task, run_id: str, retries_left: int, retry_delay: float) -> LaneResult:
    """Run one attempt of ``task`` on the run. A failure with retries left is noted on the run and
    raised again (for the queue to retry); the last failure closes the run as failed."""
    try:
        return task.work(ctx, run_id)
    except Exception as exc:
        message = exc.message if isinstance(exc, LevereError) else f"{type(exc).__name__}: {exc}"
        if retries_left > 0 and not isinstance(exc, task.final):
            note_retry(ctx, run_id, message, retry_delay)
            raise
        if isinstance(exc, task.final):
            log.warning("job %s refused: %s", run_id, message)
        else:
            log.exception("job %s failed after its last attempt", run_id)
        give_up(ctx, run_id, message)
    return LaneResult()


def submit(ctx: Context, kind: str, run_id: str) -> None:
    """Put the run on the queue, in as many lanes as its kind works in; without a queue in this
    process, do it now, once."""
    task = TASKS[JobKind(kind)]
    if ctx.jobs is None:
        attempt(ctx, task, run_id, retries_left=0, retry_delay=0)
        return
    for _ in range(task.lanes(ctx.settings.sync)):
        ctx.jobs.enqueue(task.name, run_id)


def note_retry(ctx: Context, run_id: str, message: str, delay_seconds: float) -> None:
    """Show on the run that an attempt failed and when the next one is."""
    with ctx.tx() as session:
        session.execute(
            update(JobRun)
            .where(JobRun.id == run_id, JobRun.state.in_(job_run_sources(JobRunState.RETRYING)))
            .values(
                state=JobRunState.RETRYING,
                attempt=JobRun.attempt + 1,
                error=f"{message} (next try in {delay_seconds:g} s)",
                next_attempt_at=utcnow() + timedelta(seconds=delay_seconds),
                updated_at=utcnow(),
            ),
            execution_options={"synchronize_session": False},
        )


def give_up(ctx: Context, run_id: str, message: str) -> None:
    """Close a run that cannot go on, with the reason (a copy run with its report as well)."""
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        if run is None or run.state in FINISHED:
            return
        scope = None
        if run.kind in COPY_KINDS:
            # a copy job whose project has no copy path (any more) is closed as it stands
            with contextlib.suppress(LevereError):
                scope = replication.scope_of(session, run)
        if scope is None:
            run.state = job_run_transition(run.state, JobRunState.FAILED, f"job {run.id}")
            run.error, run.finished_at = message, utcnow()
            return
        error = f"gave up after {run.attempt + 1} attempt(s): {message}"
        replication.finalize(ctx, session, scope, error=error)


def _task(spec: Task) -> Callable[..., None]:
    def run(ctx: Context, run_id: str, task: Any = None) -> None:
        """One attempt; ``task`` is huey's (its retries left and current delay)."""
        retries_left = task.retries if task is not None else 0
        delay = float(task.retry_delay) if task is not None else 0.0
        result = attempt(ctx, spec, run_id, retries_left, delay)
        if result.resume:
            # this process is stopping: back on the queue, for this worker's successor or another one
            raise RetryTask(delay=0)
        if result.wait_seconds:
            # other workers hold leases in this run's scope: come back when they end or expire
            raise RetryTask(delay=result.wait_seconds)

    return run


def register(queue: JobQueue) -> None:
    """Register the task of every run kind on the queue."""
    settings = queue.ctx.settings.sync
    for task in {t.name: t for t in TASKS.values()}.values():
        queue.register(
            task.name, _task(task), retries=task.retries(settings),
            retry_delay=settings.retry_delay_seconds, retry_backoff=BACKOFF, context=True,
        )  # fmt: skip
