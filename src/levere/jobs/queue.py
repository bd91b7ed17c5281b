"""Background work on huey: embedded on SQLite by default, on Redis across machines.

Design notes
------------
Why huey: it is small and well kept, runs with nothing to install (its SQLite storage lives in a file
under the data directory, and a consumer runs as threads inside ``levere serve``), and the same task
code runs on separate ``levere worker`` machines with Redis storage. Several ``levere worker``
processes on one machine can share the SQLite file (huey takes an exclusive SQLite transaction per
dequeue, so each task goes to one of them). Tasks are registered on a queue object built at start-up
(nothing at import time), and each task receives the process's
:class:`~levere.context.Context` through the queue, so workers and the API share no
globals. Tasks are written to be idempotent: huey retries them, with exponential backoff where
asked, after transient errors, and a task killed with its worker is redone by the next one (the
copy jobs hold database leases for that; see :mod:`levere.dataplane.replication`). docs/jobs.md
says how to run workers.

Stopping: huey's consumer would install its own SIGTERM/SIGINT handlers over those of the process
that runs it (uvicorn's, in ``levere serve``), so levere's consumer installs none; the command that
runs it decides how signals stop it and calls :meth:`JobQueue.begin_stop` then :meth:`JobQueue.stop`.
A stop takes no new tasks, sets ``ctx.stopping`` so that long tasks end at their next safe point
(a copy job after the batch in flight, put back on the queue for the next worker), and waits at
most :data:`STOP_GRACE_SECONDS`. Tasks still running then are abandoned: put back on the queue as
they were, with the copy leases of this process released so that the next worker takes their files
over at once. The process then exits without waiting for their threads.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer

from levere.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from levere.context import Context

log = logging.getLogger(__name__)

TaskFn = Callable[..., Any]
#: longest pause between polls of an idle SQLite queue (huey's default, 10 s, feels sluggish
#: for an interactive "levere sync"; a poll is one small SQLite query)
IDLE_POLL_SECONDS = 1.0
#: how long a stopping worker waits for its running tasks before it abandons them to the next
#: worker; with the HTTP drain of ``levere serve`` beside it, a stop stays within 10 s
STOP_GRACE_SECONDS = 5.0


class _Consumer(Consumer):  # type: ignore[misc]
    """huey's consumer without signal handlers of its own (see the module's notes)."""

    def _set_signal_handlers(self) -> None:
        pass


def make_huey(queue_url: str, data_dir: Path, immediate: bool = False) -> Huey:
    if queue_url == "memory" or immediate:
        return MemoryHuey("levere", immediate=immediate)
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        if importlib.util.find_spec("redis") is None:
            raise ConfigurationError("a Redis queue needs the Python package 'redis' (pip install redis)")
        return RedisHuey("levere", url=queue_url)
    if queue_url == "sqlite":
        data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("levere", filename=str(data_dir / "queue.db"))
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("levere", filename=str(path))
    raise ConfigurationError(
        f"unknown queue_url {queue_url!r}: use 'sqlite', 'sqlite:///PATH', 'redis://...' or 'memory'"
    )


class JobQueue:
    """Names to tasks; ``enqueue('send_emails')`` works the same embedded or distributed."""

    def __init__(self, ctx: Context, huey: Huey) -> None:
        self.ctx = ctx
        self.huey = huey
        self._tasks: dict[str, Any] = {}
        self._consumer: Any = None
        self._stop_deadline: float | None = None
        #: tasks the last :meth:`stop` left running (put back on the queue)
        self.abandoned = 0

    def register(
        self,
        name: str,
        fn: TaskFn,
        *,
        retries: int = 5,
        retry_delay: float = 5,
        retry_backoff: float = 0,
        context: bool = False,
    ) -> None:
        """Register ``fn(ctx, *args)``. ``retry_backoff`` multiplies the delay after each retry;
        with ``context`` the task also gets ``task=`` (huey's task, e.g. ``task.retries`` left)."""
        ctx = self.ctx

        def run(*args: Any, **kwargs: Any) -> Any:
            return fn(ctx, *args, **kwargs)

        run.__name__ = name
        self._tasks[name] = self.huey.task(
            retries=retries, retry_delay=retry_delay, retry_backoff=retry_backoff, name=name, context=context
        )(run)

    def enqueue(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._tasks[name](*args, **kwargs)

    def schedule_periodic(self, name: str, fn: TaskFn, minutes: int) -> None:
        ctx = self.ctx

        def run() -> Any:
            return fn(ctx)

        run.__name__ = name
        self.huey.periodic_task(crontab(minute=f"*/{minutes}"), name=name)(run)

    def lock(self, name: str) -> AbstractContextManager[Any]:
        """A lock shared by every worker on this queue (periodic jobs that must not overlap)."""
        lock: AbstractContextManager[Any] = self.huey.lock_task(name)
        return lock

    def start(self, workers: int = 2, periodic: bool = True) -> None:
        """Run a consumer as threads of this process (``levere serve`` embeds one, ``levere worker``
        runs one in the foreground); it runs until :meth:`stop`."""
        self.ctx.stopping.clear()
        self._stop_deadline = None
        self._consumer = _Consumer(
            self.huey, workers=workers, worker_type="thread", periodic=periodic, max_delay=IDLE_POLL_SECONDS
        )
        self._consumer.start()

    def check_health(self) -> None:
        """Restart worker threads that died (huey's own loop does this every 10 s)."""
        if self._consumer is not None and not self.ctx.stopping.is_set():
            self._consumer.check_worker_health()

    def begin_stop(self) -> None:
        """Take no new tasks and ask running ones to end at their next safe point; returns at once
        (safe in a signal handler). The grace period starts with the first call."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
        self.ctx.stopping.set()
        if self._consumer is not None:
            self._consumer.stop_flag.set()

    def hurry(self) -> None:
        """End the grace period now (a second signal): running tasks are abandoned at once."""
        self.begin_stop()
        self._stop_deadline = time.monotonic()

    def stop(self) -> int:
        """Stop the consumer: wait for running tasks until the grace period ends, then abandon the
        rest to the next worker. Returns how many tasks were abandoned (their threads still run:
        the process should exit without waiting for them)."""
        self.begin_stop()
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return 0
        assert self._stop_deadline is not None
        threads = [thread for _, thread in consumer.worker_threads] + [consumer.scheduler]
        while any(t.is_alive() for t in threads) and time.monotonic() < self._stop_deadline:
            time.sleep(0.05)
        left = list(self.huey._tasks_in_flight)
        if left:
            from levere.dataplane import release_leases_of_this_process

            for task in left:
                log.warning(
                    "stopping: task %s (%s) is put back on the queue for the next worker", task.id, task.name
                )
                self.huey.enqueue(task)
            release_leases_of_this_process(self.ctx)
        self.abandoned = len(left)
        return len(left)


def build_queue(ctx: Context, immediate: bool = False) -> JobQueue:
    from levere.jobs.tasks import register_all

    queue = JobQueue(ctx, make_huey(ctx.settings.queue_url, ctx.settings.data_dir, immediate=immediate))
    register_all(queue)
    ctx.jobs = queue
    return queue
