"""Sample requests for the secure zone's routes (secure projects, zone members, shared disks).

The world gets a users' secure project (p9001) for its project and a secure project (p9002) for
the facility assigned to it, a shared disk between the two, and a helpdesk operator let into p9001;
every token of the world is marked as issued by a sign-in with a second factor, as the zone needs
(tokens without one are refused before any permission is looked at: tests/secure/test_secure_api.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from levere.db.models import ApiToken, utcnow
from levere.domain.roles import UserKind
from levere.services import secure, secure_disks, zone_analysis
from tests.helpers import PermissionWorld, make_user
from tests.permission_samples import Sample
from tests.secure.qc_support import Zone, add_zone_file, make_fastq, zone_delivery

USERS, FACILITY = "p9001", "p9002"
HELPER = "zone-helper@levere.test"
#: a delivery on the disk with one FASTQ file, analysed once as the world is made
RUN, READS = "RUN-QC", "reads.fastq"


def _secure(_w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": USERS}


def _disk(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"name": w.extra["disk"]}


def _run(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"name": w.extra["disk"], "delivery": RUN}


def _until(days: int) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/api/secure/projects"): Sample(),
    ("POST", "/api/secure/projects"): Sample(
        json=lambda _w, _r: {"identifier": "p9100", "facility": "seq-b"}
    ),
    ("GET", "/api/secure/projects/{identifier}"): Sample(on="project", path=_secure),
    ("GET", "/api/secure/projects/{identifier}/members"): Sample(on="project", path=_secure),
    ("POST", "/api/secure/projects/{identifier}/members"): Sample(
        on="project", path=_secure, json=lambda _w, _r: {"email": HELPER, "ends_at": _until(5)}
    ),
    ("DELETE", "/api/secure/projects/{identifier}/members/{email}"): Sample(
        on="project", path=lambda _w, _r: {"identifier": USERS, "email": HELPER}
    ),
    ("GET", "/api/secure/disks"): Sample(),
    ("POST", "/api/secure/disks"): Sample(
        json=lambda _w, _r: {"facility_project": FACILITY, "users_project": USERS, "ends_at": _until(20)}
    ),
    ("GET", "/api/secure/disks/{name}"): Sample(on="project", path=_disk),
    ("GET", "/api/secure/disks/{name}/pubkey"): Sample(on="project", path=_disk),
    ("GET", "/api/secure/disks/{name}/files"): Sample(on="project", path=_disk),
    ("POST", "/api/secure/disks/{name}/destroy"): Sample(on="project", path=_disk),
    ("POST", "/api/secure/disks/{name}/deliveries/{delivery}/analysis"): Sample(on="project", path=_run),
    ("GET", "/api/secure/disks/{name}/deliveries/{delivery}/qc"): Sample(on="project", path=_run),
    ("GET", "/api/secure/disks/{name}/deliveries/{delivery}/qc/page"): Sample(
        on="project", path=_run, query={"file": READS}
    ),
}


def extend_world(ctx: Any, world: PermissionWorld) -> None:
    helpdesk = world.users["helpdesk"]
    secure.register(ctx, helpdesk, USERS, project=world.project)
    secure.register(ctx, helpdesk, FACILITY, facility=world.facility)
    world.extra["disk"] = secure_disks.create(
        ctx, helpdesk, facility_project=FACILITY, users_project=USERS, ends_at=utcnow() + timedelta(days=30)
    ).name
    # someone let into the users' secure project who is none of the walking roles, so that the
    # roles' relations stay those the walk states
    make_user(ctx, HELPER, UserKind.HELPDESK, password=None)
    secure.invite_member(ctx, world.users["admin"], USERS, HELPER, utcnow() + timedelta(days=3))
    with ctx.tx() as session:
        session.execute(update(ApiToken).values(second_factor=True))
    zone = Zone(world=None, project=world.project, users=USERS, facility=FACILITY, disk=world.extra["disk"])  # type: ignore[arg-type]
    zone_delivery(ctx, zone, RUN)
    add_zone_file(ctx, zone, RUN, READS, make_fastq(1, reads=50))
    zone_analysis.request_analysis(ctx, world.users["facility_assigned"], zone.disk, RUN)
