"""Background work on huey: embedded on SQLite by default, on Redis across machines.

Design notes
------------
Why huey: it is small and well kept, runs with nothing to install (its SQLite storage lives in a file
under the data directory, and a consumer runs as threads inside ``levere serve``), and the same task
code runs on separate ``levere worker`` machines with Redis storage. Tasks are registered on a
queue object built at start-up (nothing at import time), and each task receives the process's
:class:`~levere.services.context.Context` through the queue, so workers and the API share no globals.
Tasks are written to be idempotent: huey retries them with a delay after transient errors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey

if TYPE_CHECKING:
    from levere.services.context import Context

log = logging.getLogger(__name__)

TaskFn = Callable[..., Any]


def make_huey(queue_url: str, data_dir: Path, immediate: bool = False) -> Huey:
    if queue_url == "memory" or immediate:
        return MemoryHuey("levere", immediate=immediate)
    if queue_url.startswith("redis://"):
        return RedisHuey("levere", url=queue_url)
    if queue_url == "sqlite":
        data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("levere", filename=str(data_dir / "queue.db"))
    if queue_url.startswith("sqlite:///"):
        return SqliteHuey("levere", filename=queue_url.removeprefix("sqlite:///"))
    raise ValueError(
        f"unknown queue_url {queue_url!r}: use 'sqlite', 'sqlite:///PATH', 'redis://...' or 'memory'"
    )


class JobQueue:
    """Names to tasks; ``enqueue('send_emails')`` works the same embedded or distributed."""

    def __init__(self, ctx: Context, huey: Huey) -> None:
        self.ctx = ctx
        self.huey = huey
        self._tasks: dict[str, Any] = {}
        self._consumer: Any = None
        self._thread: threading.Thread | None = None

    def register(self, name: str, fn: TaskFn, *, retries: int = 5, retry_delay: int = 5) -> None:
        ctx = self.ctx

        def run(*args: Any, **kwargs: Any) -> Any:
            return fn(ctx, *args, **kwargs)

        run.__name__ = name
        self._tasks[name] = self.huey.task(retries=retries, retry_delay=retry_delay, name=name)(run)

    def enqueue(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._tasks[name](*args, **kwargs)

    def schedule_periodic(self, name: str, fn: TaskFn, minutes: int) -> None:
        from huey import crontab

        ctx = self.ctx

        def run() -> Any:
            return fn(ctx)

        run.__name__ = name
        self.huey.periodic_task(crontab(minute=f"*/{minutes}"), name=name)(run)

    def start_embedded(self, workers: int = 2) -> None:
        """Run a consumer as threads inside this process (``levere serve`` in the embedded default)."""
        self._consumer = self.huey.create_consumer(workers=workers, worker_type="thread", periodic=True)
        self._consumer.start()

    def stop_embedded(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None

    def run_worker(self, workers: int = 2) -> None:
        """Run a consumer in the foreground until interrupted (``levere worker``)."""
        consumer = self.huey.create_consumer(workers=workers, worker_type="thread", periodic=True)
        consumer.run()


def build_queue(ctx: Context, immediate: bool = False) -> JobQueue:
    from levere.jobs.tasks import register_all

    queue = JobQueue(ctx, make_huey(ctx.settings.queue_url, ctx.settings.data_dir, immediate=immediate))
    register_all(queue)
    ctx.jobs = queue
    return queue
