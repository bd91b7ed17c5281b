"""The one job dispatch: every run kind has its task, and one place records a run's failures,
retries and end, with a queue or without one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from levere.config import Settings
from levere.context import Context
from levere.dataplane.replication import LaneResult
from levere.db.models import JobRun
from levere.domain.errors import StorageUnavailable
from levere.domain.jobruns import JobKind, JobRunState
from levere.domain.replicas import ReplicaState
from levere.domain.tiers import Tier
from levere.jobs import dispatch
from levere.services import scrub, sync
from levere.services.projects import get_project
from tests.sync_support import Setup, area_path, deliver, random_files, replica_states, setup_project


@pytest.fixture
def queueless(settings: Settings) -> Iterator[Context]:
    """A context with no queue (a script, ``levere`` commands run on the server itself)."""
    context = Context.build(settings)
    assert context.jobs is None
    yield context
    context.close()


def run_row(ctx: Context, run_id: str) -> JobRun:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


def new_run(ctx: Context, s: Setup, kind: JobKind) -> str:
    with ctx.tx() as session:
        run = JobRun(kind=kind, project_id=get_project(session, s.project).id)
        session.add(run)
        session.flush()
        return run.id


def failing(message: str) -> dispatch.Task:
    def work(ctx: Context, run_id: str) -> LaneResult:
        raise StorageUnavailable(message)

    return dispatch.Task("failing", work, lanes=lambda s: 1, retries=lambda s: 0)


def test_every_job_kind_has_its_task_on_the_queue(ctx: Context) -> None:
    assert set(dispatch.TASKS) == set(JobKind)
    assert ctx.jobs is not None
    for task in dispatch.TASKS.values():
        assert task.name in ctx.jobs._tasks


@pytest.mark.parametrize("kind", list(JobKind))
def test_a_failure_with_retries_left_is_noted_and_raised_the_last_one_closes_the_run(
    ctx: Context, kind: JobKind
) -> None:
    s = setup_project(ctx)
    run_id = new_run(ctx, s, kind)
    task = failing("the tape library is offline")

    with pytest.raises(StorageUnavailable):
        dispatch.attempt(ctx, task, run_id, retries_left=2, retry_delay=7)
    run = run_row(ctx, run_id)
    assert run.state == JobRunState.RETRYING and run.attempt == 1 and run.next_attempt_at is not None
    assert run.error == "the tape library is offline (next try in 7 s)"

    assert dispatch.attempt(ctx, task, run_id, retries_left=0, retry_delay=7) == LaneResult()
    run = run_row(ctx, run_id)
    assert run.state == JobRunState.FAILED and run.finished_at is not None
    assert "the tape library is offline" in run.error
    if kind in dispatch.COPY_KINDS:  # a copy run also gets its report
        assert run.error.startswith("gave up after 2 attempt(s)") and run.report["tier"]

    # a finished run stays as it ended, whatever a late lane does
    dispatch.give_up(ctx, run_id, "later")
    dispatch.note_retry(ctx, run_id, "later", 1)
    assert run_row(ctx, run_id).state == JobRunState.FAILED and "later" not in run_row(ctx, run_id).error


def test_without_a_queue_a_sync_is_done_at_once_and_a_failure_closes_it(queueless: Context) -> None:
    s = setup_project(queueless)
    files = random_files(3, 1000)
    deliver(queueless, s, "RUN1", files)
    root = Path(queueless.backend(Tier.LONGTERM).root)  # type: ignore[attr-defined]
    root.rename(root.with_name("gone"))

    job = sync.request_sync(queueless, s.world.helpdesk, s.project)  # no retries without a queue
    run = run_row(queueless, job.id)
    assert run.state == JobRunState.FAILED and run.error.startswith("gave up after 1 attempt(s)")
    assert set(replica_states(queueless, s, "longterm").values()) == {ReplicaState.FAILED}
    assert all(
        Path(area_path(queueless, f"{s.project}/RUN1/{p}")).read_bytes() == d for p, d in files.items()
    )

    root.with_name("gone").rename(root)
    again = sync.request_sync(queueless, s.world.helpdesk, s.project)
    assert run_row(queueless, again.id).state == JobRunState.DONE
    assert set(replica_states(queueless, s, "longterm").values()) == {ReplicaState.PRESENT}
    verify = scrub.request_verify(queueless, s.world.helpdesk, s.project)
    assert run_row(queueless, verify.id).state == JobRunState.DONE
