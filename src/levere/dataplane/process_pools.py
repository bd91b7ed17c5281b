"""Pools of worker processes that live as long as the process that uses them.

Design notes
------------
* Children are started by ``forkserver``, never by a bare ``fork`` of a process that has threads
  and database connections. The fork server loads the children's modules once, rather than the
  command that started it (all of the CLI), so that each child starts at once and shares them.
* One pool per purpose (a :class:`PoolSlot`), made on first use for what it serves (its key: the
  storage specs and the number of processes), made again when that changes or when one of its
  processes died, and shut down when the process exits.
* A child outlives a parent that was killed (SIGKILL, the OOM killer): it waits on a queue whose
  writing end it holds itself, and the forkserver waits for it. So each child watches its parent
  and leaves when the parent is gone. Children ignore SIGINT, which a terminal sends to the whole
  process group, so that a Ctrl-C lets the parent finish its work in flight and they end with it.
  They keep SIGTERM: the pool itself ends a broken pool's children with it, and a service manager
  should signal only the main process (systemd's ``KillMode=mixed``, docs/jobs.md).
* As with any use of ``multiprocessing``, a script that uses them in-process must keep its own
  work under ``if __name__ == "__main__":`` (levere's own commands do).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_slots: list[PoolSlot] = []
#: what the fork server imports before it makes children (those that publish small files; the
#: copy processes of a sync are few and long-lived, and import theirs themselves)
CHILD_MODULES = ["levere.dataplane.small_writes"]


def forkserver() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context children are made with."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(CHILD_MODULES)
    return context


def is_broken(pool: ProcessPoolExecutor) -> bool:
    """One of the pool's processes died (the OOM killer, a signal): it takes no more work."""
    return bool(getattr(pool, "_broken", False))


class PoolSlot:
    """The one pool of a purpose in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Hashable | None = None
        self._pool: ProcessPoolExecutor | None = None
        _slots.append(self)

    def get(
        self,
        key: Hashable,
        processes: int,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...],
    ) -> ProcessPoolExecutor:
        """The pool for ``key``; ``initializer(*initargs)`` runs once in each of its processes."""
        with self._lock:
            if self._pool is not None and self._key == key and not is_broken(self._pool):
                return self._pool
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = ProcessPoolExecutor(
                processes,
                mp_context=forkserver(),
                initializer=_start_child,
                initargs=(os.getpid(), initializer, initargs),
            )
            self._key = key
            return self._pool

    def current(self) -> ProcessPoolExecutor | None:
        """The pool made last, if any (for tests and warm-up)."""
        return self._pool

    def discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget ``pool`` (one of whose processes died); the next :meth:`get` makes a new one."""
        with self._lock:
            if self._pool is pool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool, self._key = None, None

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool, self._key = None, None


#: how often a child looks whether its parent is still there
WATCH_SECONDS = 1.0


def _start_child(parent: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    # Ctrl-C reaches the whole process group; the children must not die of it while their parent
    # lets its work in flight finish: they end with the parent. SIGTERM stays as it is: the pool
    # ends its children with it, and would wait forever for children that ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(parent,), name="levere-watch-parent", daemon=True).start()
    initializer(*initargs)


def _watch(parent: int) -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # a process of another user took the number: ours is gone
            os._exit(1)


@atexit.register
def _shutdown_all() -> None:
    for slot in _slots:
        slot.shutdown()
