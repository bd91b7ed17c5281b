"""Permission-walk samples for the transfer-grant routes (routes/grants.py), merged by
tests/permission_samples.py. Named to load after the deliveries' and the syncs' samples, whose
world objects (an open delivery, a sealed one) these use; the world gains a job still running and a
grant of the helpdesk's token for the route that ends one."""

from __future__ import annotations

from typing import Any

from levere.db.models import JobRun, User
from levere.services import sync, transfer_grants
from levere.services.transfer_grants import GrantKind
from tests.helpers import PermissionWorld
from tests.permission_samples import Sample
from tests.permission_samples_sync import DELIVERY


def extend_world(ctx: Any, world: PermissionWorld) -> None:
    helpdesk: User = world.users["helpdesk"]
    run = sync.request_sync(ctx, helpdesk, world.project, DELIVERY)
    with ctx.tx() as session:
        session.get(JobRun, run.id).state = "running"  # the walk's queue ran it at once
    world.extra["running_job"] = run.id
    world.extra["helpdesk_grant"] = transfer_grants.issue(
        ctx, helpdesk, world.tokens["helpdesk"], GrantKind.DOWNLOAD, world.project, DELIVERY
    ).id


SAMPLES = {
    ("POST", "/api/projects/{identifier}/deliveries/{name}/transfer-grant"): Sample(
        on="project", path=lambda w, _r: {"identifier": w.project, "name": w.extra["delivery"]}
    ),
    ("POST", "/api/projects/{identifier}/download-grants"): Sample(
        on="project", path=lambda w, _r: {"identifier": w.project}, json=lambda _w, _r: {"target": DELIVERY}
    ),
    ("POST", "/api/projects/{identifier}/jobs/{job_id}/transfer-grant"): Sample(
        on="project", path=lambda w, _r: {"identifier": w.project, "job_id": w.extra["running_job"]}
    ),
    # a grant is ended by the token it was issued to: the helpdesk's ends it, anyone else's meets a 404
    ("DELETE", "/api/transfer-grants/{grant_id}"): Sample(
        path=lambda w, _r: {"grant_id": w.extra["helpdesk_grant"]}
    ),
}
