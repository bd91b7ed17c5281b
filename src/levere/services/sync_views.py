"""The views of long-term storage a front end shows: a project's deliveries on each tier, a file's
copies, what freeing gave back (see :mod:`levere.services.views` for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from levere.services.views import JobRunView, ProjectZoneView, QuotaView


@dataclass(frozen=True)
class Counted:
    files: int
    bytes: int


@dataclass(frozen=True)
class ReplicaProblemView:
    """A file whose copy on one tier failed or is damaged."""

    path: str
    tier: str
    state: str
    reason: str


@dataclass(frozen=True)
class DeliveryStatusView:
    name: str
    state: str
    files: int
    bytes: int
    #: one word per tier: present / partly freed / freed / pending / copying / failed / damaged ...
    area: str
    longterm: str
    #: files and bytes per replica state, per tier
    tiers: dict[str, dict[str, Counted]]
    problems: tuple[ReplicaProblemView, ...]


@dataclass(frozen=True)
class SyncStatusView:
    """A project's deliveries on each tier, its quotas and its recent jobs."""

    project: str
    sync_mode: str
    quotas: tuple[QuotaView, ...]
    deliveries: tuple[DeliveryStatusView, ...]
    jobs: tuple[JobRunView, ...]
    sensitive: bool = False
    #: a sensitive project's secure project and shared disks, in place of a working area
    zone: ProjectZoneView | None = None


@dataclass(frozen=True)
class ReplicaView:
    state: str
    reason: str
    verified_at: datetime | None
    attempts: int


@dataclass(frozen=True)
class FileTiersView:
    """A file (``DELIVERY/PATH``) with its copy on each tier."""

    path: str
    size: int
    sha256: str
    tiers: dict[str, ReplicaView]


@dataclass(frozen=True)
class FreedView:
    """What freeing files from the project area gave back."""

    freed_files: int
    freed_bytes: int
    already_freed: int
    area_used_bytes: int
    area_limit_bytes: int
    #: the tier the copies were freed from: the area, or a sensitive project's secure zone
    tier: str = "area"
