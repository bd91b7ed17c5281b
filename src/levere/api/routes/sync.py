"""Long-term storage: sync, status per delivery and file, freeing, restoring, verifying, and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from levere.api.deps import CtxDep, JobReadUser, ReadUser, WriteUser, acts, second_factor
from levere.api.openapi import errors
from levere.api.schemas import In, Out, ProjectZoneOut
from levere.domain.jobruns import JobKind, JobRunState
from levere.domain.replicas import ReplicaState
from levere.domain.roles import Action
from levere.services import jobruns, scrub, sync

router = APIRouter(tags=["long-term storage"])


class JobOut(Out):
    """A background job (sync, restore or verify): progress, retries and its final report."""

    id: str
    kind: JobKind
    project: str | None
    delivery: str | None
    state: JobRunState
    files_total: int
    files_done: int
    files_failed: int
    bytes_total: int
    bytes_done: int
    attempt: int
    next_attempt_at: datetime | None
    error: str
    report: dict[str, Any]
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class SyncIn(In):
    #: one delivery (its name), or every sealed delivery of the project
    delivery: str | None = None


class PathsIn(In):
    #: ``DELIVERY/PATH`` of files, or ``DELIVERY`` / ``DELIVERY/FOLDER`` for everything under it
    paths: list[str] = Field(min_length=1, max_length=100_000)


class VerifyIn(In):
    #: one project (identifier), or every project
    project: str | None = None


class Counted(Out):
    files: int
    bytes: int


class Problem(Out):
    path: str
    tier: str
    state: ReplicaState
    reason: str


class DeliveryStatusOut(Out):
    name: str
    state: str
    files: int
    bytes: int
    #: one word per tier: present / partly freed / freed / pending / copying / failed / damaged ...
    area: str
    longterm: str
    #: files and bytes per replica state, per tier
    tiers: dict[str, dict[str, Counted]]
    problems: list[Problem]


class SyncStatusOut(BaseModel):
    project: str
    sync_mode: str
    quotas: dict[str, dict[str, int]]
    deliveries: list[DeliveryStatusOut]
    jobs: list[JobOut]
    sensitive: bool = False
    #: a sensitive project's secure project and shared disks, in place of a working area
    zone: ProjectZoneOut | None = None


class ReplicaOut(Out):
    state: ReplicaState
    reason: str
    verified_at: datetime | None
    attempts: int


class FileTiersOut(Out):
    path: str
    size: int
    sha256: str
    tiers: dict[str, ReplicaOut]


class FreedOut(Out):
    freed_files: int
    freed_bytes: int
    already_freed: int
    area_used_bytes: int
    area_limit_bytes: int
    #: the tier the copies were freed from: the area, or a sensitive project's secure zone
    tier: str = "area"


@router.post(
    "/projects/{identifier}/sync",
    status_code=202,
    summary="Copy sealed deliveries to long-term storage (a job)",
    operation_id="start_sync",
    responses=errors(404, 409),
    openapi_extra=acts(Action.SYNC_RUN),
)
def start_sync(identifier: str, body: SyncIn, actor: WriteUser, ctx: CtxDep) -> JobOut:
    """Copy the project's sealed deliveries (or one) to long-term storage, verified. Returns the job."""
    return JobOut.model_validate(sync.request_sync(ctx, actor, identifier, body.delivery))


@router.get(
    "/projects/{identifier}/sync-status",
    summary="Show where a project's files are, per tier",
    operation_id="get_sync_status",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def sync_status(identifier: str, request: Request, actor: ReadUser, ctx: CtxDep) -> SyncStatusOut:
    """Per delivery: files and bytes in each state on each tier, failures with reasons, recent
    jobs; a sensitive project's ``zone`` (its secure project, and its shared disks for a sign-in
    with a second factor) in place of a working area."""
    view = sync.status(ctx, actor, identifier, second_factor=second_factor(request, ctx))
    return SyncStatusOut(
        project=view.project,
        sync_mode=view.sync_mode,
        quotas={
            q.tier: {
                "limit_bytes": q.limit_bytes,
                "used_bytes": q.used_bytes,
                "reserved_bytes": q.reserved_bytes,
            }
            for q in view.quotas
        },
        deliveries=[DeliveryStatusOut.model_validate(d) for d in view.deliveries],
        jobs=[JobOut.model_validate(j) for j in view.jobs],
        sensitive=view.sensitive,
        zone=ProjectZoneOut.model_validate(view.zone) if view.zone else None,
    )


@router.get(
    "/projects/{identifier}/replicas",
    summary="List each file's copies on every tier",
    operation_id="list_replicas",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def replicas(
    identifier: str,
    actor: ReadUser,
    ctx: CtxDep,
    prefix: str = "",
    problems: bool = Query(False, description="only files not present everywhere they should be"),
) -> list[FileTiersOut]:
    """Each file with its state, reason and last verification on every tier."""
    rows = sync.file_tiers(ctx, actor, identifier, prefix, problems_only=problems)
    return [FileTiersOut.model_validate(r) for r in rows]


@router.post(
    "/projects/{identifier}/free",
    summary="Free files from the project area that are safe on long-term storage",
    operation_id="free_files",
    responses=errors(400, 404, 409),
    openapi_extra=acts(Action.DATA_FREE),
)
def free(identifier: str, body: PathsIn, actor: WriteUser, ctx: CtxDep) -> FreedOut:
    """Remove files from the project area that are safely on long-term storage (refused otherwise)."""
    return FreedOut.model_validate(sync.free(ctx, actor, identifier, body.paths))


@router.post(
    "/projects/{identifier}/restore",
    status_code=202,
    summary="Copy freed files back into the project area (a job)",
    operation_id="restore_files",
    responses=errors(400, 404, 409, 503, 507),
    openapi_extra=acts(Action.DATA_RESTORE),
)
def restore(identifier: str, body: PathsIn, actor: WriteUser, ctx: CtxDep) -> JobOut:
    """Copy freed files back into the project area from long-term storage, verified. Returns the job."""
    return JobOut.model_validate(sync.request_restore(ctx, actor, identifier, body.paths))


@router.get(
    "/projects/{identifier}/jobs",
    summary="List a project's background jobs",
    operation_id="list_jobs",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def list_jobs(
    identifier: str, actor: ReadUser, ctx: CtxDep, limit: int = Query(20, ge=1, le=200)
) -> list[JobOut]:
    return [JobOut.model_validate(r) for r in jobruns.list_runs(ctx, actor, identifier, limit)]


@router.get(
    "/projects/{identifier}/jobs/{job_id}",
    summary="Show a project's background job",
    operation_id="get_job",
    responses=errors(404),
    openapi_extra=acts(Action.DELIVERY_READ),
)
def show_job(identifier: str, job_id: str, actor: JobReadUser, ctx: CtxDep) -> JobOut:
    return JobOut.model_validate(jobruns.get_run(ctx, actor, job_id, identifier))


@router.post(
    "/verify",
    status_code=202,
    summary="Re-read stored copies and repair damage (a job)",
    operation_id="start_verify",
    responses=errors(404, 409),
    openapi_extra=acts(Action.VERIFY_RUN),
)
def verify(body: VerifyIn, actor: WriteUser, ctx: CtxDep) -> JobOut:
    """Re-read stored copies on every tier, report damage and repair it from an intact copy."""
    return JobOut.model_validate(scrub.request_verify(ctx, actor, body.project))


@router.get(
    "/jobs/{job_id}",
    summary="Show a background job by its id alone",
    operation_id="get_global_job",
    responses=errors(404),
    openapi_extra=acts(Action.JOB_READ_ALL),
)
def show_global_job(job_id: str, actor: JobReadUser, ctx: CtxDep) -> JobOut:
    """A job by its id alone: one over every project (``levere verify`` without a project), or a
    project's job for those who may read that project's deliveries."""
    return JobOut.model_validate(jobruns.get_run(ctx, actor, job_id))
