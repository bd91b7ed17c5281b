"""Builders for the long-term storage tests: sealed deliveries made through the deliveries service.

A delivery is opened and sealed through ``levere.services.deliveries`` (so sealing calls
``sync.on_delivery_sealed`` exactly as in production); its files are written straight to the area
tier and recorded with the deliveries service's own ``record_files``, with their quota, instead of
going through tus or tar uploads, which have tests of their own.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from levere.context import Context
from levere.db.models import JobRun, Quota, Replica, StoredFile, User
from levere.domain.tiers import Tier
from levere.services import deliveries, projects, quotas, sealing
from tests.conftest import LiveServer, Mailbox
from tests.helpers import World, basic_world, provisioned_project


@dataclass
class Setup:
    world: World
    project: str


def setup_project(ctx: Context, sync_mode: str = "manual", **form_changes: object) -> Setup:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world, **form_changes)
    if sync_mode != "auto":
        projects.update_settings(ctx, world.helpdesk, identifier, sync_mode="manual")
    return Setup(world, identifier)


def random_files(count: int, size: int, folder: str = "reads") -> dict[str, bytes]:
    return {f"{folder}/sample_{i:04d}.fastq": os.urandom(size) for i in range(count)}


def deliver(ctx: Context, setup: Setup, name: str, files: dict[str, bytes]) -> None:
    """Open, fill and seal the delivery ``name``."""
    deliver_as(ctx, setup.world.staff, setup.project, name, files)


def deliver_as(ctx: Context, staff: User, identifier: str, name: str, files: dict[str, bytes]) -> None:
    deliveries.open_delivery(ctx, staff, identifier, name)
    area = ctx.backend(Tier.AREA)
    new = []
    for path, data in files.items():
        key = deliveries.area_key(identifier, name, path)
        with area.open_writer(key, size_hint=len(data)) as writer:
            writer.write(data)
            writer.commit()
        md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
        new.append(deliveries.NewFile(path, len(data), md5, sha256, key))
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        delivery = deliveries.get_delivery(session, project, name)
        total = sum(len(d) for d in files.values())
        quotas.reserve(session, project.id, "area", total)
        quotas.settle(session, project.id, "area", total)
        deliveries.record_files(session, delivery, area.backend_id, new)
    sealing.seal(ctx, staff, identifier, name)


def replica_states(ctx: Context, setup: Setup, tier: str) -> dict[str, str]:
    """``{DELIVERY/PATH or PATH: state}`` of every file of the project on ``tier``."""
    with ctx.tx() as session:
        project = projects.get_project(session, setup.project)
        rows = session.execute(
            select(StoredFile.path, Replica.state)
            .join(Replica, Replica.file_id == StoredFile.id)
            .where(StoredFile.project_id == project.id, Replica.tier == tier)
        ).all()
    return {path: state for path, state in rows}


def replicas(ctx: Context, setup: Setup, tier: str) -> list[Replica]:
    with ctx.tx() as session:
        project = projects.get_project(session, setup.project)
        return list(
            session.execute(
                select(Replica)
                .join(StoredFile, StoredFile.id == Replica.file_id)
                .where(StoredFile.project_id == project.id, Replica.tier == tier)
            ).scalars()
        )


def quota(ctx: Context, setup: Setup, tier: str) -> Quota:
    with ctx.tx() as session:
        project = projects.get_project(session, setup.project)
        return session.execute(
            select(Quota).where(Quota.project_id == project.id, Quota.tier == tier)
        ).scalar_one()


def runs(ctx: Context, kind: str | None = None) -> list[JobRun]:
    with ctx.tx() as session:
        query = select(JobRun).order_by(JobRun.created_at)
        if kind:
            query = query.where(JobRun.kind == kind)
        return list(session.execute(query).scalars())


def longterm_path(ctx: Context, key: str) -> os.PathLike[str]:
    return ctx.settings.data_dir / "storage" / "longterm" / key  # the embedded default's layout


def area_path(ctx: Context, key: str) -> os.PathLike[str]:
    return ctx.settings.data_dir / "storage" / "area" / key


def mails_to(mailbox: Mailbox, address: str) -> list[Any]:
    return [m for m in mailbox.to(address) if m["To"].strip().lower() == address]


def levere(live: LiveServer, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    env |= {
        "LEVERE_URL": live.url,
        "LEVERE_TOKEN": token,
        "LEVERE_CLI_CONFIG": "/nonexistent",
        "COLUMNS": "250",
    }
    done = subprocess.run(
        [sys.executable, "-m", "levere.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done
