"""A layer over a backend cannot be bypassed: every tier is built through the storage factory
with a recording layer over it (:mod:`tests.recording`), and each write path of the service is
shown to go through that layer: tus uploads, tar batches (small files published in worker
processes on a local disk, a large member streamed), sealing, sync copies to long-term (worker
processes for many small local files), restore, and the repairs of ``levere verify``.

Each step compares what the layer recorded with what appeared in the storage meanwhile (listed
from beneath the layer): a key that appears without having been written through the layer fails
the test, and so does a step that does not write what it should.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import pytest
from fastapi.testclient import TestClient

from levere.config import Settings, SyncSettings, TierName, TierSettings
from levere.context import Context
from levere.domain.tiers import Tier
from levere.jobs.queue import build_queue
from levere.services import batches, projects, sealing, sync
from levere.storage import Backend, WrappingBackend
from tests.deliveries_support import (
    Crew,
    delivery_bucket,
    s3_spec,
    send_batch,
    storage_kind,
    tar_of,
    tus_upload,
)
from tests.helpers import World, auth, basic_world, provisioned_project, token_for
from tests.recording import Recording, Written, read_log
from tests.sync_support import Setup, replica_states

__all__ = ["delivery_bucket"]

TIERS = (Tier.AREA, Tier.LONGTERM)


@pytest.fixture(params=["local", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return storage_kind(request)


@pytest.fixture
def settings(settings: Settings, kind: str, request: pytest.FixtureRequest) -> Settings:
    """Worker processes wherever a tier can use them (two, whatever the machine), and every tier
    on S3 for the S3 kind (long-term without object lock: the layer is what is tested here)."""
    changes: dict[str, object] = {"ingest_processes": 2, "sync": SyncSettings(processes=2, threads=4)}
    if kind == "s3":
        specs = {t: s3_spec(request, f"{t}-s3") for t in get_args(TierName)}
        specs["longterm"] = specs["longterm"].model_copy(update={"write_once": False})
        changes["tiers"] = TierSettings(**specs)
    return settings.model_copy(update=changes)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "written.log"


@pytest.fixture
def ctx(settings: Settings, log: Path) -> Iterator[Context]:
    context = Context.build(settings)
    context.wrappers = (functools.partial(Recording, log=str(log)),)
    build_queue(context, immediate=True)
    yield context
    context.close()


def beneath(ctx: Context, tier: Tier) -> Backend:
    backend = ctx.backend(tier)
    assert isinstance(backend, Recording) and backend.recipe is not None
    return backend.inner


def present(ctx: Context) -> dict[Tier, dict[str, int]]:
    """Every object in each tier, with its size, as the storage beneath the layer has it."""
    return {t: {o.key: o.size for o in beneath(ctx, t).list()} for t in TIERS}


@dataclass
class Step:
    #: what the layer recorded during the step (once it is over)
    written: Written = field(default_factory=lambda: Written(Counter(), frozenset()))

    def keys(self, ctx: Context, tier: Tier) -> set[str]:
        return self.written.of(ctx.backend(tier).backend_id)


@contextmanager
def step(ctx: Context, log: Path) -> Iterator[Step]:
    """What the layer recorded during the ``with``; checks that every object that appeared in a
    tier meanwhile was written through it, and that every object it recorded is there."""
    before = present(ctx)
    start = log.stat().st_size if log.exists() else 0
    done = Step()
    yield done
    after = present(ctx)
    whole = log.read_bytes() if log.exists() else b""
    part = log.with_suffix(".step")
    part.write_bytes(whole[start:])
    done.written = read_log(part)
    for tier in TIERS:
        recorded = done.keys(ctx, tier)
        appeared = {k for k, size in after[tier].items() if before[tier].get(k) != size}
        around = appeared - recorded
        assert not around, f"written to the {tier} tier around the layer: {sorted(around)[:5]}"
        missing = recorded - after[tier].keys()
        assert not missing, f"recorded for the {tier} tier but not stored: {sorted(missing)[:5]}"


def _people(ctx: Context) -> tuple[World, Crew]:
    world = basic_world(ctx)
    identifier = provisioned_project(ctx, world)
    projects.update_settings(ctx, world.helpdesk, identifier, sync_mode="manual")
    return world, Crew(identifier, world.staff, {"staff": token_for(ctx, world.staff)})


def _small(count: int) -> dict[str, bytes]:
    return {f"lane{i % 3}/r{i:04d}.fq": os.urandom(1500 + i % 700) for i in range(count)}


def test_every_write_path_goes_through_the_layer(
    ctx: Context, client: TestClient, log: Path, kind: str
) -> None:
    world, c = _people(ctx)
    helpdesk = token_for(ctx, world.helpdesk)
    me = os.getpid()
    area_key = functools.partial("{}/RUN1/{}".format, c.project)
    response = client.post(
        f"/api/projects/{c.project}/deliveries", json={"name": "RUN1"}, headers=c.headers()
    )
    assert response.status_code == 201, response.text

    big = os.urandom(3 * 1024 * 1024 + 17)
    with step(ctx, log) as tus:
        assert tus_upload(client, c, "RUN1", "big.bin", big).status_code == 204
    assert tus.keys(ctx, Tier.AREA) == {area_key("big.bin")}

    small = _small(300)
    streamed = {"large/r.fq": os.urandom(batches.IN_MEMORY + 1)}  # a member too large to hold
    with step(ctx, log) as batch:
        response = send_batch(client, c, "RUN1", tar_of({**small, **streamed}))
        assert response.status_code == 200, response.text
    assert batch.keys(ctx, Tier.AREA) == {area_key(p) for p in [*small, *streamed]}
    if kind == "local":  # published by worker processes, through the layer they built themselves
        assert batch.written.pids - {me}

    every = {area_key(p) for p in [*small, *streamed, "big.bin"]}
    with step(ctx, log):
        sealing.seal(ctx, world.staff, c.project, "RUN1")
    with step(ctx, log) as copied:
        sync.request_sync(ctx, world.helpdesk, c.project)
    assert copied.keys(ctx, Tier.LONGTERM) == every
    assert set(replica_states(ctx, Setup(world, c.project), "longterm").values()) == {"present"}
    if kind == "local":  # many small local files: copied by worker processes
        assert copied.written.pids - {me}

    sync.free(ctx, world.pi, c.project, ["RUN1"])
    assert not present(ctx)[Tier.AREA].keys() & every
    with step(ctx, log) as restored:
        sync.request_restore(ctx, world.pi, c.project, ["RUN1"])
    assert restored.keys(ctx, Tier.AREA) == every
    assert b"".join(ctx.backend(Tier.AREA).read(area_key("big.bin"))) == big

    # damage beneath the layer: a copy missing on each tier; verify repairs both through it
    lost_here, lost_there = area_key("lane0/r0000.fq"), area_key("big.bin")
    beneath(ctx, Tier.AREA).delete(lost_here)
    beneath(ctx, Tier.LONGTERM).delete(lost_there, force=True)
    with step(ctx, log) as repaired:  # what `levere verify` asks for
        response = client.post("/api/verify", json={"project": c.project}, headers=auth(helpdesk))
        assert response.status_code == 202, response.text
    assert (repaired.keys(ctx, Tier.AREA), repaired.keys(ctx, Tier.LONGTERM)) == ({lost_here}, {lost_there})
    assert b"".join(ctx.backend(Tier.LONGTERM).read(lost_there)) == big

    # everything stored on any tier was written through the layer
    written = read_log(log)
    for tier in TIERS:
        assert present(ctx)[tier].keys() <= written.of(ctx.backend(tier).backend_id)


def test_a_write_around_the_layer_is_caught(ctx: Context, log: Path) -> None:
    """The check the test above relies on fails when something writes beneath the layer."""
    with pytest.raises(AssertionError, match="around the layer"), step(ctx, log):
        ctx.backend(Tier.AREA).write_small("p/x.bin", b"through the layer")
        beneath(ctx, Tier.AREA).write_small("p/y.bin", b"around it")


def test_the_factory_lays_the_same_layers_in_a_worker_process(ctx: Context) -> None:
    """What a worker process builds from a tier's recipe is the tier's backend, layers included,
    and a layer offers no capability it was not made to keep."""
    from levere.storage import Capability, build

    area = ctx.backend(Tier.AREA)
    assert area.recipe is not None
    again = build(area.recipe)
    assert isinstance(again, Recording) and type(again.inner) is type(area.inner)  # type: ignore[attr-defined]
    assert again.capabilities == area.capabilities

    class Opaque(WrappingBackend):
        keeps = frozenset({Capability.WRITE_ONCE})

    assert Capability.WORKER_PROCESSES not in Opaque(area).capabilities
