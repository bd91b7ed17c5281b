"""Worker processes, the one mechanism behind the data plane's use of several cores: publishing
the small files of a batch (:mod:`levere.dataplane.small_writes`) and copying many small files
between tiers (:mod:`levere.dataplane.copy_processes`).

Design notes
------------
* Children are started by ``forkserver``, never by a bare ``fork`` of a process that has threads
  and database connections. The fork server loads the children's modules once, rather than the
  command that started it (all of the CLI), so that each child starts at once and shares them.
* A child builds what it works with once, from picklable arguments (storage recipes: the same
  factory and wrappers as the service, :mod:`levere.storage.factory`), then answers each message
  it is sent, in order.
* Each child has two pipes of its own, and the thread that uses it writes the messages and reads
  the answers itself. (A ``ProcessPoolExecutor`` feeds its children from helper threads in this
  process, which then take Python's lock from the thread parsing a batch at every turn: the
  recording of a chunk of files took twice as long.) The pipe the messages go through is widened
  so that a few fit: handing one over then never waits for the child to finish the one before.
* The answers to the messages sent to a child and not yet answered must fit in its answer pipe
  (64 KiB at least), or the child and this process could wait on each other: callers keep at most
  :data:`PER_CHILD` messages in flight per child, each with a small answer.
* Children are borrowed for a piece of work and given back (:data:`workers`); idle ones are kept
  per purpose and arguments. A child leaves at the end of its pipe (this process closed it, or is
  gone: no child outlives a killed parent) or after :data:`IDLE_SECONDS` without work, so a service
  between deliveries does not keep the memory. One that dies (killed, out of memory) answers
  nothing more: the caller does that message's work itself and the next borrow starts a new one.
* Children ignore SIGINT, which a terminal sends to the whole process group, so that a Ctrl-C lets
  the parent finish its work in flight; they end with it. They keep SIGTERM.
* As with any use of ``multiprocessing``, a script that uses them in-process must keep its own
  work under ``if __name__ == "__main__":`` (levere's own commands do).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

#: what the fork server imports before it makes children, so that they share it: what publishes
#: small files, and the storage specs their recipes carry (pydantic); the copy processes of a sync
#: are few and long-lived, and import the rest of theirs themselves
CHILD_MODULES = ["levere.dataplane.small_writes", "levere.storage.config"]
#: messages sent to one child and not yet answered, at most
PER_CHILD = 4
_PIPE_BYTES = 1024 * 1024
#: children at most per purpose and arguments, per CPU
MAX_CHILDREN_PER_CPU = 4
#: a child with nothing to do for this long leaves
IDLE_SECONDS = 120.0

#: answers one message, in a child
Handler = Callable[[Any], Any]


def forkserver() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context children are made with."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(CHILD_MODULES)
    return context


def warm_up() -> threading.Thread:
    """Start, on a thread of its own, the fork server the children will come from (loading their
    modules takes ~0.15 s), so that the first piece of work does not wait for it."""
    from multiprocessing import forkserver as fork_server

    forkserver()  # sets what the fork server loads
    thread = threading.Thread(target=fork_server.ensure_running, name="levere-forkserver", daemon=True)
    thread.start()
    return thread


def _serve(
    messages: Connection,
    answers: Connection,
    setup: Callable[..., Handler],
    args: tuple[Any, ...],
    idle: float,
) -> None:
    """In a child: build the handler, answer each message; leave at the end of the pipe or after
    ``idle`` seconds without a message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handler = setup(*args)
    while messages.poll(idle):
        try:
            message = messages.recv()
        except EOFError:
            return
        try:
            answers.send(handler(message))
        except OSError:  # nobody reads any more: the parent is gone
            return


class Worker:
    """One child process answering the messages it is sent, in order."""

    def __init__(self, purpose: str, setup: Callable[..., Handler], args: tuple[Any, ...]) -> None:
        mp = forkserver()
        messages_r, messages_w = mp.Pipe(duplex=False)
        answers_r, answers_w = mp.Pipe(duplex=False)
        with contextlib.suppress(OSError, AttributeError):  # a narrow pipe only makes it slower
            fcntl.fcntl(messages_w.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.process = mp.Process(
            target=_serve,
            args=(messages_r, answers_w, setup, args, IDLE_SECONDS),
            name=f"levere-{purpose}",
            daemon=True,
        )
        self.process.start()
        messages_r.close()
        answers_w.close()
        self.messages, self.answers = messages_w, answers_r
        self.waiting = 0  # messages sent and not yet answered
        self.alive = True

    def send(self, message: Any) -> bool:
        """Hand a message over; False if the child is gone."""
        if not self.alive:
            return False
        try:
            self.messages.send(message)
        except OSError:  # a broken pipe: it died
            self.alive = False
            return False
        self.waiting += 1
        return True

    def receive(self) -> Any | None:
        """The answer to the oldest message sent; None if the child died before answering."""
        self.waiting -= 1
        if not self.alive:
            return None
        try:
            return self.answers.recv()
        except (EOFError, OSError):
            self.alive = False
            return None

    def close(self) -> None:
        self.alive = False
        self.messages.close()
        self.answers.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


class Workers:
    """The children of this process, per purpose and arguments; work borrows some and gives them
    back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, Hashable], list[Worker]] = {}
        self._count: Counter[tuple[str, Hashable]] = Counter()  # alive, idle or borrowed

    def borrow(
        self, purpose: str, key: Hashable, wanted: int, setup: Callable[..., Handler], args: tuple[Any, ...]
    ) -> list[Worker]:
        """Up to ``wanted`` children running ``setup(*args)`` (``key`` names those arguments):
        idle ones, and new ones while there are fewer than the limit."""
        slot = (purpose, key)
        taken: list[Worker] = []
        dead: list[Worker] = []
        evicted: list[Worker] = []
        with self._lock:
            # children idle for other arguments of the same purpose (settings changed, or the many
            # short-lived services of a test run) are not kept
            for other in [k for k in self._idle if k[0] == purpose and k != slot]:
                gone = self._idle.pop(other)
                self._count[other] -= len(gone)
                evicted += gone
            idle = self._idle.setdefault(slot, [])
            while idle and len(taken) < wanted:
                worker = idle.pop()
                (taken if worker.process.is_alive() else dead).append(worker)
            count = self._count[slot] - len(dead)
            new = max(0, min(wanted - len(taken), MAX_CHILDREN_PER_CPU * (os.cpu_count() or 1) - count))
            self._count[slot] = count + new
        for worker in dead + evicted:
            worker.close()
        for _ in range(new):
            try:
                taken.append(Worker(purpose, setup, args))
            except OSError:
                log.exception("could not start a worker process (%s)", purpose)
                with self._lock:
                    self._count[slot] -= 1
        return taken

    def give_back(self, purpose: str, key: Hashable, borrowed: list[Worker]) -> None:
        slot = (purpose, key)
        for worker in borrowed:
            if worker.alive and worker.waiting == 0:
                with self._lock:
                    self._idle.setdefault(slot, []).append(worker)
                continue
            worker.close()
            with self._lock:
                self._count[slot] -= 1

    def idle_pids(self, purpose: str) -> list[int]:
        """The process ids of the idle children of ``purpose`` (for tests)."""
        with self._lock:
            return [
                w.process.pid
                for (p, _), ws in self._idle.items()
                if p == purpose
                for w in ws
                if w.process.pid
            ]

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
            for slot, gone in idle.items():
                self._count[slot] -= len(gone)
        for gone in idle.values():
            for worker in gone:
                worker.close()


workers = Workers()
atexit.register(workers.close_all)
