"""Retrying what a network hiccup or a restarting service broke, with backoff, then one clear line."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from dataclasses import dataclass, field
from typing import TypeVar

from levere.domain.errors import StorageUnavailable

T = TypeVar("T")


class Cancelled(Exception):
    """The transfer was stopped (Ctrl-C, or another part of it failed): workers wind down quietly."""


@dataclass
class Retry:
    attempts: int = 6  # the first try and five more: about 30 s of patience
    first_delay: float = 0.5
    max_delay: float = 10.0
    cancel: threading.Event = field(default_factory=threading.Event)

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (failures - 1)))

    def call(self, fn: Callable[[], T], recover: Callable[[], None] | None = None) -> T:
        """``fn()``, tried again after each :class:`StorageUnavailable`; ``recover()`` runs before a retry.

        ``recover`` re-reads the service's state (an upload's offset, a delivery's files) so that the next
        try sends only what is missing; when it fails transiently too, that counts as a failed try.
        """
        failures = 0
        while True:
            if self.cancel.is_set():
                raise Cancelled
            try:
                if failures and recover is not None:
                    recover()
                return fn()
            except StorageUnavailable as exc:
                failures += 1
                if failures >= self.attempts:
                    raise StorageUnavailable(
                        f"{exc.message} (tried {failures} times): run the same command again to resume"
                    ) from None
                if self.cancel.wait(self.delay(failures)):
                    raise Cancelled from None


def wait_all(futures: Sequence[Future[None]], cancel: threading.Event) -> None:
    """Wait for every future, waking often so that Ctrl-C is heard; the first real error (or the
    interruption) sets ``cancel``, which the other workers check between pieces, and is raised."""
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            for future in finished:
                error = future.exception()
                if error is not None and not isinstance(error, Cancelled):
                    raise error
    except BaseException:
        cancel.set()
        for future in futures:
            future.cancel()
        raise
