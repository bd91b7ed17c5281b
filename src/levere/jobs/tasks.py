"""Every background task levere runs, registered on the queue at start-up."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from levere.domain.errors import LevereError
from levere.jobs import delivery_tasks, dispatch, secure_tasks, sync_tasks
from levere.services import audit_anchors, notify

if TYPE_CHECKING:
    from levere.context import Context
    from levere.jobs.queue import JobQueue

log = logging.getLogger(__name__)


class EmailsPending(Exception):
    """Raised so that huey retries the task while some e-mails could not be sent."""


def send_emails(ctx: Context) -> None:
    left = notify.send_pending_emails(ctx)
    if left:
        raise EmailsPending(f"{left} e-mail(s) could not be sent yet")


def catch_up_emails(ctx: Context) -> None:
    """At start-up and every few minutes: mail recorded while mail was off or the server was down."""
    assert ctx.jobs is not None
    with ctx.jobs.lock("levere-mail-catch-up"):
        done = notify.catch_up(ctx)
    if done.queued or done.left:
        log.info("mail catch-up: %d recorded while mail was off, %d still waiting", done.queued, done.left)


#: how often unsent mail is tried again after the send job's own retries are spent
CATCH_UP_MINUTES = 5


def register_all(queue: JobQueue) -> None:
    queue.register("send_emails", send_emails, retries=5, retry_delay=10)
    queue.register("catch_up_emails", catch_up_emails, retries=0)
    queue.schedule_periodic("catch_up_emails_periodic", catch_up_emails, minutes=CATCH_UP_MINUTES)
    delivery_tasks.register(queue)
    dispatch.register(queue)
    sync_tasks.register(queue)
    secure_tasks.register(queue)
    # every minute it looks whether the anchor interval has passed (see audit_anchors)
    queue.schedule_periodic("audit_anchor", anchor_audit_log, minutes=1)


def anchor_audit_log(ctx: Context) -> None:
    """Write the audit chain's head to long-term storage when it is due."""
    assert ctx.jobs is not None
    with ctx.jobs.lock("levere-audit-anchor"):
        try:
            audit_anchors.anchor_if_due(ctx)
        except LevereError as exc:  # storage down: the next minute tries again
            log.warning("could not anchor the audit log: %s", exc.message)
