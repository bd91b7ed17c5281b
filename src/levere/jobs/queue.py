"""Background work on huey: embedded on SQLite by default, on Redis across machines.

Design notes
------------
Why huey: it is small and well kept, runs with nothing to install (its SQLite storage lives in a file
under the data directory, and a consumer runs as threads inside ``levere serve``), and the same task
code runs on separate ``levere worker`` machines with Redis storage. Several ``levere worker``
processes on one machine can share the SQLite file (huey takes an exclusive SQLite transaction per
dequeue, so each task goes to one of them). Tasks are registered on a queue object built at start-up
(nothing at import time), and each task receives the process's
:class:`~levere.services.context.Context` through the queue, so workers and the API share no
globals. Tasks are written to be idempotent: huey retries them, with exponential backoff where
asked, after transient errors, and a task killed with its worker is redone by the next one (the
copy jobs hold database leases for that; see :mod:`levere.services.replication`). docs/jobs.md
says how to run workers.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab

from levere.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from levere.services.context import Context

log = logging.getLogger(__name__)

TaskFn = Callable[..., Any]
#: longest pause between polls of an idle SQLite queue (huey's default, 10 s, feels sluggish
#: for an interactive "levere sync"; a poll is one small SQLite query)
IDLE_POLL_SECONDS = 1.0


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

    def _consumer_for(self, workers: int, periodic: bool) -> Any:
        return self.huey.create_consumer(
            workers=workers, worker_type="thread", periodic=periodic, max_delay=IDLE_POLL_SECONDS
        )

    def start_embedded(self, workers: int = 2) -> None:
        """Run a consumer as threads inside this process (``levere serve`` in the embedded default)."""
        self._consumer = self._consumer_for(workers, periodic=True)
        self._consumer.start()

    def stop_embedded(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None

    def run_worker(self, workers: int = 2, periodic: bool = True) -> None:
        """Run a consumer in the foreground until interrupted (``levere worker``)."""
        self._consumer_for(workers, periodic).run()


def build_queue(ctx: Context, immediate: bool = False) -> JobQueue:
    from levere.jobs.tasks import register_all

    queue = JobQueue(ctx, make_huey(ctx.settings.queue_url, ctx.settings.data_dir, immediate=immediate))
    register_all(queue)
    ctx.jobs = queue
    return queue
