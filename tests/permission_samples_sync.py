"""Sample requests for the long-term storage routes (sync, status, free, restore, verify, jobs)."""

from __future__ import annotations

from typing import Any

from levere.services import scrub, sync
from tests.helpers import PermissionWorld
from tests.permission_samples import Sample
from tests.sync_support import deliver_as

DELIVERY = "RUN-SYNC"


def _project(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": w.project}


def _paths(_w: PermissionWorld, _role: str) -> dict[str, Any]:
    return {"paths": [DELIVERY]}


SAMPLES: dict[tuple[str, str], Sample] = {
    ("POST", "/api/projects/{identifier}/sync"): Sample(
        on="project", path=_project, json=lambda _w, _r: {"delivery": DELIVERY}
    ),
    ("GET", "/api/projects/{identifier}/sync-status"): Sample(on="project", path=_project),
    ("GET", "/api/projects/{identifier}/replicas"): Sample(
        on="project", path=_project, query={"prefix": DELIVERY}
    ),
    ("POST", "/api/projects/{identifier}/free"): Sample(on="project", path=_project, json=_paths),
    ("POST", "/api/projects/{identifier}/restore"): Sample(on="project", path=_project, json=_paths),
    ("GET", "/api/projects/{identifier}/jobs"): Sample(on="project", path=_project),
    ("GET", "/api/projects/{identifier}/jobs/{job_id}"): Sample(
        on="project", path=lambda w, _r: {"identifier": w.project, "job_id": w.extra["sync_job"]}
    ),
    ("POST", "/api/verify"): Sample(json=lambda _w, _r: {}),
    ("GET", "/api/jobs/{job_id}"): Sample(path=lambda w, _r: {"job_id": w.extra["verify_job"]}),
}


def extend_world(ctx: Any, world: PermissionWorld) -> None:
    """A sealed delivery in the world's project, synced, and a verify job over every project."""
    deliver_as(
        ctx, world.users["facility_assigned"], world.project, DELIVERY, {"reads/a.fastq": b"ACGT" * 256}
    )
    helpdesk = world.users["helpdesk"]
    world.extra["sync_job"] = sync.request_sync(ctx, helpdesk, world.project, DELIVERY).id
    world.extra["verify_job"] = scrub.request_verify(ctx, helpdesk).id
