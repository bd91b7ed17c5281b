"""Hard quotas per project and tier.

Design notes
------------
Space is *reserved* before any byte moves, in the transaction that checks what is left, with the
quota row locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises
writers), so concurrent uploads can never together exceed the limit. A finished upload turns its
reservation into usage; a failed, expired or terminated one gives it back. ``used + reserved <=
limit`` therefore always holds, and usage is exact at every moment.

A tier whose space is not counted per project (the secure zone: the shared disk has its own quota)
has no quota row; reserving, settling and freeing there change nothing (:func:`counted`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.db.models import Quota
from levere.domain.errors import NotFound, QuotaExceeded
from levere.domain.tiers import TIER_PROPERTIES, Tier
from levere.domain.units import format_size


def _locked(session: Session, project_id: str, tier: str) -> Quota:
    quota = session.execute(
        select(Quota).where(Quota.project_id == project_id, Quota.tier == tier).with_for_update()
    ).scalar()
    if quota is None:
        raise NotFound(f"the project has no quota on the {tier} tier")
    return quota


def counted(tier: str) -> bool:
    """Whether a project's data on ``tier`` counts against a quota of the project's."""
    return TIER_PROPERTIES[Tier(tier)].project_quota


def reserve(
    session: Session, project_id: str, tier: str, nbytes: int, what: str = "the upload"
) -> Quota | None:
    if not counted(tier):
        return None
    quota = _locked(session, project_id, tier)
    available = quota.limit_bytes - quota.used_bytes - quota.reserved_bytes
    if nbytes > available:
        raise QuotaExceeded(
            f"{what} needs {format_size(nbytes)} but only {format_size(max(available, 0))} of the "
            f"{format_size(quota.limit_bytes)} {tier} quota is free "
            f"({format_size(quota.used_bytes)} used, {format_size(quota.reserved_bytes)} reserved by uploads in progress)",
            tier=tier,
            needed=nbytes,
            available=max(available, 0),
            limit=quota.limit_bytes,
            used=quota.used_bytes,
            reserved=quota.reserved_bytes,
        )
    quota.reserved_bytes += nbytes
    return quota


def release(session: Session, project_id: str, tier: str, nbytes: int) -> Quota | None:
    """Give back a reservation that will not be used (failed, expired or cancelled upload)."""
    if not counted(tier):
        return None
    quota = _locked(session, project_id, tier)
    quota.reserved_bytes = max(0, quota.reserved_bytes - nbytes)
    return quota


def settle(session: Session, project_id: str, tier: str, nbytes: int) -> Quota | None:
    """A reservation became stored data."""
    if not counted(tier):
        return None
    quota = _locked(session, project_id, tier)
    quota.reserved_bytes = max(0, quota.reserved_bytes - nbytes)
    quota.used_bytes += nbytes
    return quota


def free(session: Session, project_id: str, tier: str, nbytes: int) -> Quota | None:
    """Stored data was removed from the tier."""
    if not counted(tier):
        return None
    quota = _locked(session, project_id, tier)
    quota.used_bytes = max(0, quota.used_bytes - nbytes)
    return quota
