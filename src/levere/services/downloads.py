"""Reading delivered files: find the copy to stream from, for people allowed to read the project.

The working area is read first; a file freed from the area is streamed from its verified long-term
copy. Ranges and checksums in HTTP headers are the API's concern; this module decides what may be
read and from where.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select

from levere.db.models import Delivery, Replica, StoredFile, User
from levere.domain.errors import NotFound, StorageUnavailable
from levere.domain.paths import check_name, check_relative_path
from levere.domain.roles import Action
from levere.services.context import Context
from levere.services.projects import authorize
from levere.storage import Backend

#: where a file is read from, in order of preference
READ_ORDER = ("area", "longterm")


@dataclass(frozen=True)
class Readable:
    path: str  # DELIVERY/PATH
    size: int
    md5: str
    sha256: str
    tier: str
    backend: Backend
    key: str
    #: the version levere wrote, on a store that keeps versions
    version: str | None = None

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self.backend.read(self.key, start, end, version=self.version)


def open_file(ctx: Context, actor: User, identifier: str, delivery: str, path: str) -> Readable:
    with ctx.tx() as session:
        project = authorize(session, actor, identifier, Action.DATA_READ)
        delivery = check_name(delivery, "delivery name")
        path = check_relative_path(path)
        row = session.execute(
            select(StoredFile)
            .join(Delivery, Delivery.id == StoredFile.delivery_id)
            .where(Delivery.project_id == project.id, Delivery.name == delivery, StoredFile.path == path)
        ).scalar()
        if row is None:
            raise NotFound(f"no file {delivery}/{path} in {project.identifier}")
        replicas = {
            r.tier: r
            for r in session.execute(
                select(Replica).where(Replica.file_id == row.id, Replica.state == "present")
            ).scalars()
        }
        found = next((replicas[t] for t in READ_ORDER if t in replicas), None)
        if found is None:
            raise StorageUnavailable(
                f"{delivery}/{path} has no readable copy right now (is it being restored?)", path=path
            )
        size, md5, sha256, tier, backend_id, key, version = (
            row.size,
            row.md5,
            row.sha256,
            found.tier,
            found.backend_id,
            found.key,
            found.version_id,
        )
    backend = ctx.tier(tier)  # type: ignore[arg-type]
    if backend.backend_id != backend_id:
        raise StorageUnavailable(
            f"{delivery}/{path} is on storage {backend_id!r}, which this server does not use"
        )
    return Readable(f"{delivery}/{path}", size, md5, sha256, tier, backend, key, version)
