"""The data plane: the machinery that moves and checks bytes (upload state, small-file publishing,
copying between tiers, worker processes, leases), over the backends of :mod:`levere.storage`.

The use cases (:mod:`levere.services`) and the front ends call it through the names below; the
modules behind them are its own business. The names are resolved when first used, so that the
worker processes, which import :mod:`levere.dataplane.small_writes` alone, load nothing else.

Writing a delivery
    ``SmallWrites``, ``Published``  the small files of a tar batch, hashed, checked and published
        in groups (worker processes or threads, by what the backend offers)
    ``Writer``, ``Snapshot``, ``UploadView``, ``Checkpoint``, ``Checkpoints``, ``LeaseBusy``,
    ``BodyTooLong``, ``backend_for``, ``expiry``, ``gone``, ``take_lease``, ``release_lease``,
    ``restore_state``  one tus upload's writes and the state that lets it resume
Copying between tiers, checking and repairing
    ``run_lane``, ``LaneResult``  one lane of a sync or restore run (the job's side; the run's
        retries and failure are recorded by :mod:`levere.jobs.dispatch`)
    ``Scope``, ``COPY_PATHS``, ``REPORT_ITEMS``, ``NO_SYNC``  what a run covers and where it
    copies, and how much of a run a report lists (the states of runs are in
    :mod:`levere.domain.jobruns`)
    ``Expected``, ``RateLimiter``, ``check_stored``, ``copy_verified``  one verified copy or check
    (``levere verify`` and its repairs); ``expected_copy``  what a file's stored copies must be
    (a secure-zone file's: its Crypt4GH body, not its plaintext)
    ``leased``  the leases a run holds on its replicas
Leases
    ``new_owner``, ``held``  who holds a lease (one owner format), and whether it is still held
    ``release_leases_of_this_process``  hand a stopping worker's copy leases to the next one
Processes
    ``warm_up(ctx)``  start the fork server that worker processes come from, where a tier will
        use them (``levere serve`` does, so the first batch does not wait for it)
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from levere.context import Context
    from levere.dataplane.batch_copy import NO_SYNC, Scope, leased
    from levere.dataplane.copying import Expected, RateLimiter, check_stored, copy_verified, expected_copy
    from levere.dataplane.leases import held, new_owner
    from levere.dataplane.replication import (
        COPY_PATHS,
        REPORT_ITEMS,
        LaneResult,
        release_leases_of_this_process,
        run_lane,
    )
    from levere.dataplane.small_writes import Published, SmallWrites
    from levere.dataplane.upload_state import (
        BodyTooLong,
        Checkpoint,
        Checkpoints,
        LeaseBusy,
        Snapshot,
        UploadView,
        Writer,
        backend_for,
        expiry,
        gone,
        release_lease,
        restore_state,
        take_lease,
    )

_WHERE = {
    "batch_copy": ("NO_SYNC", "Scope", "leased"),
    "copying": ("Expected", "RateLimiter", "check_stored", "copy_verified", "expected_copy"),
    "leases": ("held", "new_owner"),
    "replication": ("COPY_PATHS", "REPORT_ITEMS", "LaneResult", "release_leases_of_this_process", "run_lane"),
    "small_writes": ("Published", "SmallWrites"),
    "upload_state": (
        "BodyTooLong",
        "Checkpoint",
        "Checkpoints",
        "LeaseBusy",
        "Snapshot",
        "UploadView",
        "Writer",
        "backend_for",
        "expiry",
        "gone",
        "release_lease",
        "restore_state",
        "take_lease",
    ),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "COPY_PATHS",
    "NO_SYNC",
    "REPORT_ITEMS",
    "BodyTooLong",
    "Checkpoint",
    "Checkpoints",
    "Expected",
    "LaneResult",
    "LeaseBusy",
    "Published",
    "RateLimiter",
    "Scope",
    "SmallWrites",
    "Snapshot",
    "UploadView",
    "Writer",
    "backend_for",
    "check_stored",
    "copy_verified",
    "expected_copy",
    "expiry",
    "gone",
    "held",
    "leased",
    "new_owner",
    "release_lease",
    "release_leases_of_this_process",
    "restore_state",
    "run_lane",
    "take_lease",
    "warm_up",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def warm_up(ctx: Context) -> threading.Thread | None:
    """Start, on a thread of its own, the fork server worker processes come from, if any tier
    will use them (a backend that gains from them, and settings that allow more than one)."""
    from levere.dataplane import process_pools
    from levere.dataplane.small_writes import process_count
    from levere.domain.tiers import Tier
    from levere.storage import Capability

    settings = ctx.settings
    if max(process_count(settings.ingest_processes), process_count(settings.sync.processes)) <= 1:
        return None
    backends = [ctx.backend(tier) for tier in Tier]
    if not any(Capability.WORKER_PROCESSES in b.capabilities and b.recipe is not None for b in backends):
        return None
    return process_pools.warm_up()
