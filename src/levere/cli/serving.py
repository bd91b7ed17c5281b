"""How ``levere serve`` and ``levere worker`` listen, stop on a signal and exit.

Design notes
------------
* The listening socket is bound before anything else happens, so a busy port fails at once with
  one line and nothing else is printed or started.
* SIGTERM and SIGINT stop both commands gracefully, as a systemd unit or Kubernetes expects: the
  server stops accepting, lets requests in flight finish for :data:`HTTP_GRACE_SECONDS` and
  cancels the rest (an upload cancelled mid-body stays resumable from its last durable offset);
  the job worker, told at the same moment, ends or abandons its tasks within its own grace period
  (see :mod:`levere.jobs.queue`). A stop by signal is the expected end: the exit code is 0.
* uvicorn re-raises the signal that stopped it once it is done (so that the process dies of it);
  :class:`_Server` drops that, and tells the job queue when the first signal arrives.
* Threads of abandoned tasks would hold up the interpreter's exit (the copy thread pools are joined
  at exit), so a process that abandoned tasks exits at once, after closing the database and
  flushing its logs.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from levere.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from levere.context import Context
    from levere.jobs.queue import JobQueue

log = logging.getLogger(__name__)

#: how long requests in flight may run on after a stop signal before they are cancelled
HTTP_GRACE_SECONDS = 5
#: how often a foreground worker checks that its threads are alive
HEALTH_CHECK_SECONDS = 10.0


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening; one clear error if that is impossible."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(f"port {port} on {host} is already in use") from None
        if exc.errno == errno.EACCES:
            raise ConfigurationError(
                f"port {port} on {host} needs more privileges than this user has"
            ) from None
        raise ConfigurationError(f"cannot listen on port {port} on {host}: {exc.strerror}") from None
    return sock


def serve_http(app: Any, sock: socket.socket, jobs: JobQueue | None, log_level: str) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM or SIGINT (a second SIGINT cuts the wait short)."""
    import uvicorn

    class Server(uvicorn.Server):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # a graceful stop is this process's expected end: exit 0 instead of dying of the signal
            self._captured_signals.clear()
            if jobs is not None:
                jobs.begin_stop()  # the workers start stopping while requests drain
                if self.force_exit:
                    jobs.hurry()

    config = uvicorn.Config(
        app,
        log_level=log_level,
        http="httptools",
        loop="uvloop",
        access_log=False,
        # forwarded headers are believed only from the configured proxies (see create_app)
        proxy_headers=False,
        timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
    )
    try:
        Server(config).run(sockets=[sock])
    finally:
        if jobs is not None:
            jobs.stop()  # done already unless a second Ctrl-C skipped the application's shutdown


def run_worker(queue: JobQueue, threads: int) -> None:
    """Run job worker threads in the foreground until SIGTERM or SIGINT (a second one stops at once)."""
    received: list[int] = []  # a plain list, not an Event: a handler must not take a lock the
    # main thread may hold at that moment

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            queue.hurry()  # a second signal: do not wait for running tasks
        received.append(signum)
        queue.begin_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    queue.start(workers=threads)
    next_check = time.monotonic() + HEALTH_CHECK_SECONDS
    while not received:
        time.sleep(0.1)
        if time.monotonic() >= next_check:
            queue.check_health()
            next_check = time.monotonic() + HEALTH_CHECK_SECONDS
    log.info("received %s: stopping", signal.Signals(received[0]).name)
    queue.stop()


def finish(ctx: Context, jobs: JobQueue | None) -> None:
    """Close the database; if tasks were abandoned, end the process now rather than wait for
    their threads at the interpreter's exit."""
    ctx.close()
    if jobs is not None and jobs.abandoned:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
