"""Sample requests for the secure zone's data routes: release, listings, downloads re-encrypted to
the reader's key (merged by tests/permission_samples.py, after the secure zone's world hook).

The world gets two sealed deliveries on the secure-zone samples' shared disk: ZONE1, released to the
users' secure project (p9001) here, for the users' routes; ZONE2, on the disk, for the disk's routes
and the release (the last of these routes, so that releasing it hides no later sample).
"""

from __future__ import annotations

from typing import Any

from levere.crypt4gh import PrivateKey
from levere.services import zone_release
from tests.helpers import PermissionWorld
from tests.permission_samples import Sample
from tests.permission_samples_secure import USERS
from tests.secure.zone_support import store_delivery

#: a sealed delivery on the disk for the portal's release samples (tests/permission_samples_portal.py)
PORTAL_RELEASE = "ZONE3"
PUBKEY = PrivateKey.generate().public_key.to_pem().splitlines()[1]


def _on_disk(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"name": w.extra["disk"], "delivery": "ZONE2"}


def _in_users(_w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": USERS, "delivery": "ZONE1"}


SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/api/secure/disks/{name}/deliveries/{delivery}/files"): Sample(on="project", path=_on_disk),
    ("GET", "/api/secure/disks/{name}/deliveries/{delivery}/data/{path:path}"): Sample(
        on="project", path=lambda w, r: _on_disk(w, r) | {"path": "a.fq"}, query={"pubkey": PUBKEY}
    ),
    ("GET", "/api/secure/projects/{identifier}/files"): Sample(on="project", path=_in_users),
    ("GET", "/api/secure/projects/{identifier}/deliveries/{delivery}/data/{path:path}"): Sample(
        on="project", path=lambda w, r: _in_users(w, r) | {"path": "a.fq"}, query={"pubkey": PUBKEY}
    ),
    ("POST", "/api/secure/disks/{name}/deliveries/{delivery}/release"): Sample(on="project", path=_on_disk),
}


def extend_world(ctx: Any, world: PermissionWorld) -> None:
    staff = world.users["facility_assigned"]
    for name in ("ZONE1", "ZONE2", PORTAL_RELEASE):
        store_delivery(
            ctx, world.project, world.extra["disk"], staff.facility_id, name, {"a.fq": b"@r\nACGT\n+\nIIII\n"}
        )
    zone_release.release(ctx, staff, world.extra["disk"], "ZONE1")
