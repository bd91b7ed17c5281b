"""Background tasks of this area, registered by :func:`register`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from levere.jobs.queue import JobQueue


def register(queue: JobQueue) -> None:
    """Register this module's tasks on the queue."""
