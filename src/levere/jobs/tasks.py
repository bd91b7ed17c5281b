"""Every background task levere runs, registered on the queue at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from levere.jobs import delivery_tasks, sync_tasks
from levere.services import notify

if TYPE_CHECKING:
    from levere.jobs.queue import JobQueue
    from levere.services.context import Context


class EmailsPending(Exception):
    """Raised so that huey retries the task while some e-mails could not be sent."""


def send_emails(ctx: Context) -> None:
    left = notify.send_pending_emails(ctx)
    if left:
        raise EmailsPending(f"{left} e-mail(s) could not be sent yet")


def register_all(queue: JobQueue) -> None:
    queue.register("send_emails", send_emails, retries=5, retry_delay=10)
    delivery_tasks.register(queue)
    sync_tasks.register(queue)
