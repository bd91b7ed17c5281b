"""Zone files for the analysis tests, made in the storage format the secure zone keeps: a delivery on a
shared disk, each file's Crypt4GH body (encrypted here with BodyEncryptor) on the secure tier, its
StoredFile and Replica rows, and a header for the disk. Also a release done the way the format says
(the users' project's header added, the disk's removed), for the tests of reading after it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import select

from levere.context import Context
from levere.crypt4gh import BodyEncryptor, PublicKey, make_header, reencrypt_header
from levere.db.models import Delivery, FileHeader, Project, Replica, SharedDisk, StoredFile, utcnow
from levere.domain.replicas import ReplicaState
from levere.domain.secure import HeaderHolder
from levere.domain.tiers import Tier
from levere.services import secure, secure_disks
from levere.services.secure import get_secure
from levere.services.zone_files import private_key, record_header
from levere.storage.encrypting import EncryptingBackend
from tests.helpers import World, basic_world, provisioned_project


@dataclass
class Zone:
    world: World
    project: str  # the research project's identifier
    users: str  # the users' secure project
    facility: str  # the facility's secure project
    disk: str


def make_zone(ctx: Context) -> Zone:
    """A sensitive project with its users' secure project, the facility's, and a shared disk."""
    world = basic_world(ctx)
    project = provisioned_project(ctx, world, sensitive=True, secure_project_id="p1234")
    secure.register(ctx, world.helpdesk, "p11", facility=world.facility.name)
    disk = secure_disks.create(
        ctx,
        world.helpdesk,
        facility_project="p11",
        users_project="p1234",
        ends_at=utcnow() + timedelta(days=9),
    ).name
    return Zone(world, project, "p1234", "p11", disk)


def make_fastq(seed: int, reads: int = 600) -> bytes:
    """FASTQ reads of a few lengths, with some N and some duplicates."""
    rng = random.Random(seed)
    out, kept = [], []
    for number in range(reads):
        if kept and number % 7 == 0:
            sequence = rng.choice(kept)
        else:
            sequence = "".join(rng.choices("ACGTN", weights=[30, 20, 20, 29, 1], k=rng.choice((50, 76, 101))))
            kept.append(sequence)
        quality = "".join(chr(33 + rng.randint(2, 41)) for _ in sequence)
        out.append(f"@r{number}\n{sequence}\n+\n{quality}\n")
    return "".join(out).encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def zone_delivery(ctx: Context, zone: Zone, name: str) -> None:
    """An open delivery of the research project on the zone's shared disk."""
    with ctx.tx() as session:
        project = session.execute(select(Project).where(Project.identifier == zone.project)).scalar_one()
        disk = secure_disks.get_disk(session, zone.disk)
        facility = disk.facility_secure.facility_id
        session.add(Delivery(project_id=project.id, facility_id=facility, name=name, shared_disk_id=disk.id))


def add_zone_file(ctx: Context, zone: Zone, delivery: str, path: str, plaintext: bytes) -> str:
    """A zone file as the storage format has it; returns its id."""
    with ctx.tx() as session:
        found = session.execute(select(Delivery).where(Delivery.name == delivery)).scalar_one()
        disk = secure_disks.get_disk(session, zone.disk)
        key = f"{zone.project}/{delivery}/{path}"
        # a body made here, as the format has it: written beneath the secure tier's Crypt4GH
        # layer, which would otherwise encrypt it again
        backend = cast(EncryptingBackend, ctx.backend(Tier.SECURE)).inner
        body = io.BytesIO()
        with BodyEncryptor(body) as encryptor:
            encryptor.write(plaintext)
            encrypted = encryptor.finish()
        with backend.open_writer(key) as writer:
            writer.write(body.getvalue())
            writer.commit()
        file = StoredFile(
            delivery_id=found.id,
            project_id=found.project_id,
            path=path,
            size=len(plaintext),
            md5=encrypted.md5 or "",
            sha256=encrypted.sha256 or "",
            body_sha256=hashlib.sha256(body.getvalue()).hexdigest(),
            body_size=len(body.getvalue()),
        )
        session.add(file)
        session.flush()
        session.add(
            Replica(
                file_id=file.id, tier=Tier.SECURE.value, backend_id=backend.backend_id, key=key,
                state=ReplicaState.PRESENT.value, verified_at=utcnow(),
            )
        )  # fmt: skip
        pem = f"-----BEGIN CRYPT4GH PUBLIC KEY-----\n{disk.public_key}\n-----END CRYPT4GH PUBLIC KEY-----\n"
        record_header(session, file.id, disk, make_header(encrypted.data_key, PublicKey.from_pem(pem)))
        return file.id


def release(ctx: Context, zone: Zone, delivery: str) -> None:
    """What release does to the headers: each file (reports included) gets one for the users' secure
    project, and the disk's is removed."""
    with ctx.tx() as session:
        found = session.execute(select(Delivery).where(Delivery.name == delivery)).scalar_one()
        disk = session.execute(select(SharedDisk).where(SharedDisk.name == zone.disk)).scalar_one()
        users = get_secure(session, zone.users)
        pem = f"-----BEGIN CRYPT4GH PUBLIC KEY-----\n{users.public_key}\n-----END CRYPT4GH PUBLIC KEY-----\n"
        key = private_key(ctx, disk)
        headers = session.execute(
            select(FileHeader)
            .join(StoredFile, StoredFile.id == FileHeader.file_id)
            .where(StoredFile.delivery_id == found.id, FileHeader.holder_kind == HeaderHolder.DISK.value)
        ).scalars()
        for header in list(headers):
            record_header(
                session, header.file_id, users, reencrypt_header(header.header, key, PublicKey.from_pem(pem))
            )
            session.delete(header)
        found.released_at = utcnow()


def body_path(ctx: Context, file_id: str) -> Path:
    """Where a zone file's body lies on the local secure tier."""
    with ctx.tx() as session:
        replica = session.execute(select(Replica).where(Replica.file_id == file_id)).scalar_one()
        return ctx.settings.tier_spec("secure").root / replica.key  # type: ignore[union-attr]


def with_totp(ctx: Context, user_id: str) -> str:
    """Turn on two-factor sign-in for a user; returns the secret."""
    import pyotp

    from levere.db.models import User

    secret = pyotp.random_base32()
    with ctx.tx() as session:
        row = session.get(User, user_id)
        assert row is not None
        row.totp_secret, row.totp_enabled = secret, True
    return secret
