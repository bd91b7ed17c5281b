"""The replica and job-run state machines on their own: every allowed and every refused move, the
states conditional UPDATEs may match, and the groups of states the services test against."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levere.domain.errors import InvalidTransition
from levere.domain.jobruns import (
    ACTIVE,
    FINISHED,
    JOB_RUN_TRANSITIONS,
    JobKind,
    JobRunState,
    job_run_sources,
    job_run_transition,
)
from levere.domain.replicas import (
    AREA_HOLDS,
    CHECKED,
    INITIAL,
    PROBLEMS,
    REPLICA_TRANSITIONS,
    UNDER_WAY,
    ReplicaState,
    replica_sources,
    replica_transition,
)

R = ReplicaState
#: the replica moves the copy engine, verify, free and restore make, written out here
#: independently of the code's table
REPLICA_LEGAL = {
    (R.PENDING, R.COPYING),  # claimed by a copy lane
    (R.PENDING, R.FAILED),  # no intact copy left to copy from
    (R.COPYING, R.COPYING),  # a dead worker's lease taken over
    (R.COPYING, R.PRESENT),  # copied, verified, durable
    (R.COPYING, R.FAILED),  # the copy failed, or no quota for it
    (R.FAILED, R.COPYING),  # retried by a later claim
    (R.FAILED, R.PENDING),  # a restore asked for again
    (R.PRESENT, R.PRESENT),  # verified again
    (R.PRESENT, R.DAMAGED),  # read back wrong, or gone
    (R.PRESENT, R.FREEING),  # freed from the project area
    (R.DAMAGED, R.DAMAGED),  # found damaged again
    (R.DAMAGED, R.PRESENT),  # reads back intact after all (a share was unmounted)
    (R.DAMAGED, R.REPAIRING),  # a verify repairs it
    (R.DAMAGED, R.FREEING),  # a damaged area copy of a file safe on long-term storage
    (R.REPAIRING, R.REPAIRING),  # a dead verify's repair lease taken over
    (R.REPAIRING, R.PRESENT),  # repaired
    (R.REPAIRING, R.DAMAGED),  # the repair failed
    (R.FREEING, R.FREEING),  # an interrupted free run again
    (R.FREEING, R.FREED),
    (R.FREED, R.PENDING),  # a restore
}

J = JobRunState
JOB_LEGAL = {
    (J.QUEUED, J.RUNNING),
    (J.QUEUED, J.RETRYING),  # its first attempt failed before it started
    (J.QUEUED, J.FAILED),  # given up before it started
    (J.RUNNING, J.RUNNING),  # another lane, or a resumed worker
    (J.RUNNING, J.RETRYING),
    (J.RUNNING, J.DONE),
    (J.RUNNING, J.FAILED),
    (J.RETRYING, J.RUNNING),
    (J.RETRYING, J.RETRYING),  # a further retry
    (J.RETRYING, J.DONE),  # another lane finished the run meanwhile
    (J.RETRYING, J.FAILED),
}


# --- replicas ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), list(itertools.product(R, R)))
def test_replica_transition_table(current: ReplicaState, target: ReplicaState) -> None:
    if (current, target) in REPLICA_LEGAL:
        assert replica_transition(current.value, target) is target
        assert replica_sources(target, current) == (current,)
        return
    with pytest.raises(InvalidTransition) as caught:
        replica_transition(current.value, target, "copy of run1/a.fastq on long-term storage")
    assert str(caught.value) == (
        f"copy of run1/a.fastq on long-term storage is {current.value}; it cannot become {target.value}"
    )
    assert caught.value.details == {"current": current.value, "target": target.value}
    assert caught.value.http_status == 409
    # a conditional UPDATE cannot be written for a refused move either
    with pytest.raises(InvalidTransition):
        replica_sources(target, current)


@pytest.mark.parametrize("target", list(R))
def test_replica_sources_are_every_state_that_may_become_the_target(target: ReplicaState) -> None:
    assert set(replica_sources(target)) == {s for s, t in REPLICA_LEGAL if t is target}


def test_replica_sources_checks_every_state_it_is_given() -> None:
    with pytest.raises(InvalidTransition):
        replica_sources(R.PRESENT, R.COPYING, R.FREED)  # the second cannot become present


def test_an_unknown_replica_state_is_refused() -> None:
    with pytest.raises(ValueError, match="'lost'"):
        replica_transition("lost", R.PRESENT)


def test_the_replica_values_are_those_the_database_stores() -> None:
    stored = {"pending", "copying", "present", "failed", "damaged", "repairing", "freeing", "freed"}
    assert {s.value for s in R} == stored
    assert set(REPLICA_TRANSITIONS) == set(R)


def test_replica_groups() -> None:
    assert {R.PRESENT, R.PENDING} == INITIAL
    # what a free may take: every state that may become freeing (an interrupted free included)
    assert set(AREA_HOLDS) == set(replica_sources(R.FREEING))
    # what a verify reads: copies that should hold bytes, none on their way there
    assert set(CHECKED) == {R.PRESENT, R.DAMAGED, R.REPAIRING}
    assert not set(UNDER_WAY) & {R.PRESENT, R.FREED, R.FREEING}
    assert set(PROBLEMS) == {R.FAILED, R.DAMAGED}
    # every state is reachable from a state a row starts in
    reached, frontier = set(INITIAL), list(INITIAL)
    while frontier:
        for nxt in REPLICA_TRANSITIONS[frontier.pop()] - reached:
            reached.add(nxt)
            frontier.append(nxt)
    assert reached == set(R)


# --- job runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), list(itertools.product(J, J)))
def test_job_run_transition_table(current: JobRunState, target: JobRunState) -> None:
    if (current, target) in JOB_LEGAL:
        assert job_run_transition(current.value, target) is target
        assert current in job_run_sources(target)
        return
    with pytest.raises(InvalidTransition) as caught:
        job_run_transition(current.value, target, "job 42")
    assert str(caught.value) == f"job 42 is {current.value}; it cannot become {target.value}"
    assert caught.value.details == {"current": current.value, "target": target.value}
    assert caught.value.http_status == 409
    assert current not in job_run_sources(target)


@pytest.mark.parametrize("target", list(J))
def test_job_run_sources_are_every_state_that_may_become_the_target(target: JobRunState) -> None:
    assert set(job_run_sources(target)) == {s for s, t in JOB_LEGAL if t is target}


def test_the_job_values_are_those_the_database_stores() -> None:
    assert {s.value for s in J} == {"queued", "running", "retrying", "done", "failed"}
    assert {k.value for k in JobKind} == {"sync", "restore", "verify", "analysis", "release"}
    assert set(JOB_RUN_TRANSITIONS) == set(J)
    assert set(ACTIVE) | set(FINISHED) == set(J) and not set(ACTIVE) & set(FINISHED)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(J)), max_size=12))
def test_a_finished_run_never_changes_again(targets: list[JobRunState]) -> None:
    state = J.QUEUED
    for target in targets:
        before = state
        if (state, target) in JOB_LEGAL:
            state = job_run_transition(state, target)
        else:
            with pytest.raises(InvalidTransition):
                job_run_transition(state, target)
        if before in FINISHED:
            assert state is before
