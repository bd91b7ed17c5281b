"""Zone files for the release, download and long-term tests, stored in the secure zone's format.

:func:`make_zone` builds a sensitive project with its users' secure project (p1234), the facility's
secure project (p11), a shared disk between them, and a sealed delivery on the disk whose files are
Crypt4GH bodies on the secure tier with one header each, for the disk. Files are put in place here
rather than uploaded, and in one place, so that the tests can switch to the real upload path.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.context import Context
from levere.crypt4gh import BodyEncryptor, PublicKey, make_header
from levere.db.models import Delivery, Project, Replica, SharedDisk, StoredFile, utcnow
from levere.domain.deliveries import DeliveryState
from levere.domain.replicas import ReplicaState
from levere.domain.tiers import Tier
from levere.services import projects, secure, secure_disks
from levere.services.zone_files import record_header
from levere.storage.encrypting import EncryptingBackend
from tests.helpers import World, basic_world, provisioned_project

USERS, FACILITY = "p1234", "p11"


@dataclass
class Zone:
    world: World
    project: str  # the research project's identifier
    disk: str  # the shared disk's name
    delivery: str
    files: dict[str, bytes] = field(default_factory=dict)


def make_zone(
    ctx: Context, files: dict[str, bytes], delivery: str = "RUN1", world: World | None = None
) -> Zone:
    world = world or basic_world(ctx)
    project = provisioned_project(ctx, world, sensitive=True, secure_project_id=USERS)
    secure.register(ctx, world.helpdesk, FACILITY, facility=world.facility.name)
    disk = secure_disks.create(
        ctx,
        world.helpdesk,
        facility_project=FACILITY,
        users_project=USERS,
        ends_at=utcnow() + timedelta(days=20),
    ).name
    zone = Zone(world, project, disk, delivery)
    add_delivery(ctx, zone, delivery, files)
    return zone


def add_delivery(
    ctx: Context, zone: Zone, name: str, files: dict[str, bytes], *, sealed: bool = True
) -> None:
    """A delivery of ``files`` on the zone's disk."""
    store_delivery(ctx, zone.project, zone.disk, zone.world.facility.id, name, files, sealed=sealed)
    zone.files |= {f"{name}/{path}": data for path, data in files.items()}


def store_delivery(
    ctx: Context, identifier: str, disk_name: str, facility_id: str, name: str, files: dict[str, bytes],
    *, sealed: bool = True,
) -> None:  # fmt: skip
    """A delivery of ``files`` into project ``identifier`` on shared disk ``disk_name``, stored as the
    upload path stores them: bodies on the secure tier, one header each for the disk."""
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        disk = session.execute(select(SharedDisk).where(SharedDisk.name == disk_name)).scalar_one()
        delivery = Delivery(
            project_id=project.id,
            facility_id=facility_id,
            name=name,
            state=(DeliveryState.SEALED if sealed else DeliveryState.OPEN).value,
            sealed_at=utcnow() if sealed else None,
            shared_disk_id=disk.id,
        )
        session.add(delivery)
        session.flush()
        _store(ctx, session, project, disk, delivery, files)


def store_files(ctx: Context, zone: Zone, name: str, files: dict[str, bytes]) -> None:
    """More files in the zone's delivery ``name`` (as the analysis stores its reports)."""
    with ctx.tx() as session:
        project = projects.get_project(session, zone.project)
        disk = session.execute(select(SharedDisk).where(SharedDisk.name == zone.disk)).scalar_one()
        delivery = session.execute(
            select(Delivery).where(Delivery.project_id == project.id, Delivery.name == name)
        ).scalar_one()
        _store(ctx, session, project, disk, delivery, files)
    zone.files |= {f"{name}/{path}": data for path, data in files.items()}


def _store(
    ctx: Context,
    session: Session,
    project: Project,
    disk: SharedDisk,
    delivery: Delivery,
    files: dict[str, bytes],
) -> None:
    # bodies made here, as the format has it: written beneath the secure tier's Crypt4GH layer,
    # which would otherwise encrypt them again
    backend = cast(EncryptingBackend, ctx.backend(Tier.SECURE)).inner
    name = delivery.name
    disk_key = PublicKey.from_pem(disk.public_key)
    for path, plaintext in files.items():
        key = f"{project.identifier}/{name}/{path}"
        body = io.BytesIO()
        with BodyEncryptor(body) as encryptor:
            encryptor.write(plaintext)
            done = encryptor.finish()
        with backend.open_writer(key) as writer:
            writer.write(body.getvalue())
            writer.commit()
        stored = StoredFile(
            delivery_id=delivery.id,
            project_id=project.id,
            path=path,
            size=done.plaintext_size,
            md5=done.md5 or "",
            sha256=done.sha256 or "",
            body_sha256=hashlib.sha256(body.getvalue()).hexdigest(),
            body_size=done.body_size,
        )
        session.add(stored)
        session.flush()
        session.add(
            Replica(
                file_id=stored.id,
                tier=Tier.SECURE.value,
                backend_id=backend.backend_id,
                key=key,
                version_id=writer.version,
                state=ReplicaState.PRESENT.value,
                verified_at=utcnow(),
            )
        )
        record_header(session, stored.id, disk, make_header(done.data_key, disk_key))
