"""Permission-walk samples for the deliveries, tus and data routes (merged by tests/permission_samples.py).

The world gains an open delivery holding one file and one tus upload in progress, all made by the
assigned facility staff through the services. A second, empty delivery is there to be sealed.
Permission is checked before any tus header is read, so a denied role gets 403 whatever it sends.
"""

from __future__ import annotations

import io
import tarfile

from levere.context import Context
from levere.services import batches, deliveries, uploads
from levere.transfer.pipe import ListSource
from levere.transfer.wire import encode_metadata
from tests.helpers import PermissionWorld
from tests.permission_samples import Sample


def _project(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": w.project}


def _delivery(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": w.project, "name": w.extra["delivery"]}


def _file(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"identifier": w.project, "delivery": w.extra["delivery"], "path": w.extra["file"]}


def _upload(w: PermissionWorld, _role: str) -> dict[str, str]:
    return {"upload_id": w.extra["upload"]}


TUS = {"Tus-Resumable": "1.0.0"}


def _tus_create(w: PermissionWorld, role: str) -> dict[str, str]:
    meta = encode_metadata({"project": w.project, "delivery": w.extra["delivery"], "path": f"new-{role}.bin"})
    return {**TUS, "Upload-Length": "10", "Upload-Metadata": meta}


def _tar(_w: PermissionWorld, role: str) -> bytes:
    return _tar_of({f"batch-{role}.txt": b"batch"})


SAMPLES = {
    ("POST", "/api/projects/{identifier}/deliveries"): Sample(
        on="project", path=_project, json=lambda _w, role: {"name": f"run-{role}"}
    ),
    ("GET", "/api/projects/{identifier}/deliveries"): Sample(on="project", path=_project),
    ("GET", "/api/projects/{identifier}/deliveries/{name}"): Sample(on="project", path=_delivery),
    ("POST", "/api/projects/{identifier}/deliveries/{name}/seal"): Sample(
        on="project",
        path=lambda w, _r: {"identifier": w.project, "name": w.extra["empty_delivery"]},
        json=lambda _w, _r: {"checksum_file": None},
    ),
    ("GET", "/api/projects/{identifier}/deliveries/{name}/manifest"): Sample(on="project", path=_delivery),
    ("GET", "/api/projects/{identifier}/deliveries/{name}/files"): Sample(on="project", path=_delivery),
    ("POST", "/api/projects/{identifier}/deliveries/{name}/batch"): Sample(
        on="project",
        path=_delivery,
        headers=lambda _w, _r: {"Content-Type": "application/x-tar"},
        content=_tar,
    ),
    ("GET", "/api/projects/{identifier}/files"): Sample(on="project", path=_project),
    ("GET", "/api/projects/{identifier}/data/{delivery}/{path:path}"): Sample(on="project", path=_file),
    ("HEAD", "/api/projects/{identifier}/data/{delivery}/{path:path}"): Sample(on="project", path=_file),
    ("OPTIONS", "/api/tus/"): Sample(public=True),
    ("POST", "/api/tus/"): Sample(on="project", headers=_tus_create),
    ("HEAD", "/api/tus/{upload_id}"): Sample(on="project", path=_upload, headers=lambda _w, _r: TUS),
    ("PATCH", "/api/tus/{upload_id}"): Sample(
        on="project",
        path=_upload,
        headers=lambda _w, _r: {
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        content=lambda _w, _r: b"0123456789",
    ),
    ("DELETE", "/api/tus/{upload_id}"): Sample(on="project", path=_upload, headers=lambda _w, _r: TUS),
}


def _tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def extend_world(ctx: Context, world: PermissionWorld) -> None:
    staff = world.users["facility_assigned"]
    deliveries.open_delivery(ctx, staff, world.project, "RUN1")
    deliveries.open_delivery(ctx, staff, world.project, "RUN2")
    result = batches.ingest(
        ctx, staff, world.project, "RUN1", ListSource([_tar_of({"lane1/reads.fq": b"ACGT"})])
    )
    assert [f.path for f in result.stored] == ["lane1/reads.fq"]
    meta = encode_metadata({"project": world.project, "delivery": "RUN1", "path": "big.bin"})
    upload = uploads.create(
        ctx, staff, {"tus-resumable": "1.0.0", "upload-length": "1000", "upload-metadata": meta}
    )
    world.extra |= {
        "delivery": "RUN1",
        "empty_delivery": "RUN2",
        "file": "lane1/reads.fq",
        "upload": upload.id,
    }
