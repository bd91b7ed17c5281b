"""Notifications: an in-app list per user and an e-mail for each, sent after the change commits.

Design notes
------------
A notification is first a row (the outbox); e-mail goes out from a background job once the
transaction that created it has committed, so a rolled-back change never e-mails anyone and a mail
server that is down delays mail without failing the change. Failed sends stay ``pending`` with the
error recorded, and any later run (the job's retries, the next notification) sends them.

Mail recorded while mail is off is kept as ``disabled``. :func:`catch_up` runs when a server or
worker starts with mail on, and every few minutes on the job queue: it sends what is ``disabled``
or ``pending`` and younger than ``smtp.max_age_hours``, and marks older mail ``expired`` instead of
sending it blindly (an invitation in it has likely lapsed; the helpdesk re-sends those).
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from levere.context import Context, after_commit
from levere.db.bulk import insert_rows
from levere.db.models import Notification, User, new_ids, notifications_table, utcnow
from levere.services.views import NotificationView, notification_view

log = logging.getLogger(__name__)

FOOTER = "\n\n-- \nlevere, data delivery from the sequencing facility\n{url}\n"


def notify(
    ctx: Context, session: Session, recipients: Iterable[User | str], subject: str, body: str
) -> list[Notification]:
    made: list[Notification] = []
    seen: set[str] = set()
    for recipient in recipients:
        email = recipient.email if isinstance(recipient, User) else recipient
        if not email or email.lower() in seen:
            continue
        seen.add(email.lower())
        user = recipient if isinstance(recipient, User) else _user_by_email(session, email)
        note = Notification(
            user_id=user.id if user else None,
            email=email,
            subject=subject,
            body=body + FOOTER.format(url=ctx.settings.public_url),
            email_state="pending" if ctx.settings.smtp.enabled else "disabled",
        )
        session.add(note)
        made.append(note)
    if made and ctx.settings.smtp.enabled:
        after_commit(session, lambda: dispatch_emails(ctx))
    return made


#: one note of :func:`notify_each`: the recipient's user id and e-mail, the subject and the body
Note = tuple[str, str, str, str]


def notify_each(ctx: Context, session: Session, notes: list[Note]) -> None:
    """One notification per note, inserted at once (a project provisioned with many members)."""
    if not notes:
        return
    footer = FOOTER.format(url=ctx.settings.public_url)
    insert_rows(
        session, notifications_table,
        ("id", "user_id", "email", "subject", "body"),
        [(id_, user_id, email, subject, body + footer)
         for id_, (user_id, email, subject, body) in zip(new_ids(len(notes)), notes, strict=True)],
        same={"created_at": utcnow(), "read_at": None, "email_error": "",
              "email_state": "pending" if ctx.settings.smtp.enabled else "disabled"},
    )  # fmt: skip
    if ctx.settings.smtp.enabled:
        after_commit(session, lambda: dispatch_emails(ctx))


def _user_by_email(session: Session, email: str) -> User | None:
    return session.execute(select(User).where(User.email == email.lower())).scalar()


def dispatch_emails(ctx: Context) -> None:
    if ctx.jobs is not None:
        ctx.jobs.enqueue("send_emails")
    else:
        send_pending_emails(ctx)


@dataclass(frozen=True)
class CatchUp:
    queued: int  # recorded while mail was off, now to be sent
    expired: int  # too old to send
    left: int  # still pending after this run (the server could not take them)


def catch_up(ctx: Context) -> CatchUp:
    """Send the mail that waits (see the notes); nothing while mail is off."""
    if not ctx.settings.smtp.enabled:
        return CatchUp(0, 0, 0)
    cutoff = utcnow() - timedelta(hours=ctx.settings.smtp.max_age_hours)
    waiting = Notification.email_state.in_(("disabled", "pending"))
    with ctx.tx() as session:
        expired = session.execute(
            update(Notification)
            .where(waiting, Notification.created_at < cutoff)
            .values(
                email_state="expired",
                email_error=f"not sent: still unsent {ctx.settings.smtp.max_age_hours:g} hours after it was recorded",
            )
        ).rowcount  # type: ignore[attr-defined]
        queued = session.execute(
            update(Notification)
            .where(Notification.email_state == "disabled", Notification.created_at >= cutoff)
            .values(email_state="pending")
        ).rowcount  # type: ignore[attr-defined]
    if expired:
        log.warning(
            "%d e-mail(s) older than %g hours were not sent", expired, ctx.settings.smtp.max_age_hours
        )
    return CatchUp(queued, expired, send_pending_emails(ctx))


def send_pending_emails(ctx: Context, final_attempt: bool = False) -> int:
    """Send every pending e-mail; returns how many are still pending (to be retried).

    Each e-mail is sent in its own short transaction with its row locked, so a slow or unreachable
    mail server never holds the database (on SQLite: the write lock) for more than one message, and
    two workers never send the same message. When the server cannot be reached at all, the rest of
    the batch is not tried: each keeps the error and waits for the next run.
    """
    with ctx.tx() as session:
        ids = list(
            session.execute(
                select(Notification.id)
                .where(Notification.email_state == "pending")
                .order_by(Notification.created_at)
            ).scalars()
        )
    left = 0
    unreachable = ""
    for note_id in ids:
        with ctx.tx() as session:
            note = session.execute(
                select(Notification)
                .where(Notification.id == note_id, Notification.email_state == "pending")
                .with_for_update(skip_locked=True)
            ).scalar()
            if note is None:
                continue  # sent meanwhile by another worker
            error, permanent = unreachable, False
            if not error:
                try:
                    ctx.mailer.send(note.email, note.subject, note.body)
                except smtplib.SMTPRecipientsRefused as exc:
                    error = f"the mail server refused {note.email}: {exc.recipients}"
                    permanent = all(code >= 500 for code, _msg in exc.recipients.values())
                except (OSError, ValueError) as exc:  # smtplib's other errors are OSErrors too
                    error = unreachable = f"{type(exc).__name__}: {exc}"
            if error:
                note.email_error = error
                if final_attempt or permanent:
                    note.email_state = "failed"
                else:
                    left += 1
                log.warning("e-mail %s could not be sent: %s", note.id, error)
            else:
                note.email_state = "sent"
                note.email_error = ""
    return left


def notifications(ctx: Context, actor: User, unread_only: bool = False) -> list[NotificationView]:
    """``actor``'s notifications, newest first."""
    with ctx.tx() as session:
        return [notification_view(n) for n in list_for(session, actor, unread_only)]


def mark_all_read(ctx: Context, actor: User) -> int:
    """Mark every unread notification of ``actor`` read; how many were."""
    with ctx.tx() as session:
        return mark_read(session, actor)


def list_for(session: Session, user: User, unread_only: bool = False) -> list[Notification]:
    query = (
        select(Notification).where(Notification.user_id == user.id).order_by(Notification.created_at.desc())
    )
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    return list(session.execute(query).scalars())


def mark_read(session: Session, user: User, ids: Iterable[str] | None = None) -> int:
    count = 0
    for note in list_for(session, user, unread_only=True):
        if ids is None or note.id in ids:
            note.read_at = utcnow()
            count += 1
    return count
