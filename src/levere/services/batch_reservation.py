"""The quota a tar batch holds while it is received (:mod:`levere.services.batches`).

Design notes
------------
* The reservation lives in the batch's ``uploads`` row (its ``length`` is what the batch still
  holds reserved), so if the process dies the expiry job gives it back.
* Whose quota: the project's on the tier its files land on (the working area), or, for a delivery
  on a shared disk, the disk's (:mod:`levere.services.zone_uploads`), which counts what is stored
  and what uploads in progress reserved alike: there, storing a file settles nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session

from levere.context import Context
from levere.db.models import SharedDisk, Upload, utcnow
from levere.domain.deliveries import UploadState
from levere.domain.errors import QuotaExceeded
from levere.domain.tiers import Tier
from levere.services import quotas, zone_uploads

#: a batch row no request has touched for this long is given back by the expiry job
BATCH_EXPIRY = timedelta(hours=6)
#: a batch's lease; it is free at once if the process holding it is gone from this host
BATCH_LEASE = timedelta(minutes=10)
RENEW_EVERY = 60.0


class Quota(Protocol):
    """Where a batch's bytes are counted."""

    def reserve(self, session: Session, nbytes: int, what: str) -> None: ...

    def settle(self, session: Session, nbytes: int) -> None: ...

    def release(self, session: Session, nbytes: int) -> None: ...


@dataclass(frozen=True)
class AreaQuota:
    """The project's quota on the tier the files land on."""

    project_id: str
    tier: Tier

    def reserve(self, session: Session, nbytes: int, what: str) -> None:
        quotas.reserve(session, self.project_id, self.tier, nbytes, what=what)

    def settle(self, session: Session, nbytes: int) -> None:
        quotas.settle(session, self.project_id, self.tier, nbytes)

    def release(self, session: Session, nbytes: int) -> None:
        quotas.release(session, self.project_id, self.tier, nbytes)


@dataclass(frozen=True)
class DiskQuota:
    """A shared disk's quota: reserved bytes are counted as used already."""

    disk_id: str

    def reserve(self, session: Session, nbytes: int, what: str) -> None:
        disk = session.get(SharedDisk, self.disk_id)
        assert disk is not None  # the delivery's foreign key
        zone_uploads.reserve(session, disk, nbytes, what)

    def settle(self, session: Session, nbytes: int) -> None:
        """Stored bytes stay counted as they were reserved."""

    def release(self, session: Session, nbytes: int) -> None:
        zone_uploads.give_back(session, self.disk_id, nbytes)


class Reservation:
    """The quota a batch holds, kept in its ``uploads`` row."""

    def __init__(self, ctx: Context, row_id: str, quota: Quota, tier: Tier, held: int, top_up: int) -> None:
        self.ctx = ctx
        self.row_id = row_id
        self.quota = quota
        #: the tier where the batch's files land
        self.tier = tier
        self.held = held
        #: reserve this much at a time when the body's size is unknown; exactly what is missing when it
        #: is known but did not fit (near the limit, a surplus would only refuse other uploads)
        self.top_up = top_up
        self.renewed = time.monotonic()

    def need(self, nbytes: int, path: str, size: int) -> None:
        """Make sure ``nbytes`` are reserved in all (the files not yet recorded plus ``path``, of
        ``size`` bytes); QuotaExceeded, with the numbers, if they do not fit."""
        if nbytes <= self.held:
            return
        missing = nbytes - self.held
        for amount in dict.fromkeys((max(missing, self.top_up), missing)):
            try:
                with self.ctx.tx() as session:
                    self.quota.reserve(session, amount, path)
                    self._save(session, self.held + amount)
                self.held += amount
                return
            except QuotaExceeded:
                if amount == missing:
                    raise

    def use(self, session: Session, nbytes: int) -> None:
        """``nbytes`` were stored: settle them, in the caller's transaction."""
        self.quota.settle(session, nbytes)
        self.held -= nbytes
        self._save(session, self.held)

    def give_back(self) -> None:
        with self.ctx.tx() as session:
            if self.held:
                self.quota.release(session, self.held)
            session.execute(
                update(Upload)
                .where(Upload.id == self.row_id)
                .values(state=UploadState.COMPLETE, length=0, lease_owner=None, lease_expires_at=None)
            )
        self.held = 0

    def _save(self, session: Session, held: int) -> None:
        now = utcnow()
        session.execute(
            update(Upload)
            .where(Upload.id == self.row_id)
            .values(length=held, expires_at=now + BATCH_EXPIRY, lease_expires_at=now + BATCH_LEASE)
        )
        self.renewed = time.monotonic()

    def renew(self) -> None:
        """Tell the world this batch is still being received (between commits of long chunks)."""
        if time.monotonic() - self.renewed > RENEW_EVERY:
            with self.ctx.tx() as session:
                self._save(session, self.held)
