"""Job runs (the background work people ask for and watch): their kinds, states and the one table
of allowed transitions.

A run is queued, then running on one or more workers (a copy job runs in several lanes at once);
a transient fault makes it retrying until a worker takes it up again; it ends done or failed.
Some moves keep the state: another lane or a resumed worker takes up a running run, and a
retrying run records a further retry. ``done`` is the stored word for a run that succeeded.
"""

from __future__ import annotations

from enum import StrEnum

from levere.domain.errors import InvalidTransition


class JobKind(StrEnum):
    SYNC = "sync"  # copy sealed deliveries from the project area to long-term storage
    RESTORE = "restore"  # copy freed files back from long-term storage into the project area
    VERIFY = "verify"  # read every stored copy back and repair damage
    ANALYSIS = "analysis"  # the standard analysis (QC) of a shared disk's delivery, in the zone
    RELEASE = "release"  # hand a shared disk's delivery to the users' secure project, in the zone


class JobRunState(StrEnum):
    QUEUED = "queued"  # created; no worker has started it yet
    RUNNING = "running"  # a worker is on it
    RETRYING = "retrying"  # it met a transient fault; it goes on at ``next_attempt_at``
    DONE = "done"  # finished, every file in its scope handled
    FAILED = "failed"  # finished with failures, or given up after its last retry


J = JobRunState
JOB_RUN_TRANSITIONS: dict[JobRunState, frozenset[JobRunState]] = {
    J.QUEUED: frozenset({J.RUNNING, J.RETRYING, J.FAILED}),
    J.RUNNING: frozenset({J.RUNNING, J.RETRYING, J.DONE, J.FAILED}),
    J.RETRYING: frozenset({J.RUNNING, J.RETRYING, J.DONE, J.FAILED}),
    J.DONE: frozenset(),
    J.FAILED: frozenset(),
}

#: runs a worker is on or will be
ACTIVE = (J.QUEUED, J.RUNNING, J.RETRYING)
#: runs that ended; nothing changes them any more
FINISHED = (J.DONE, J.FAILED)


def job_run_transition(current: str, target: JobRunState, what: str = "the job") -> JobRunState:
    """``target`` if a run in ``current`` may move there; else an :class:`InvalidTransition`."""
    state = JobRunState(current)
    if target not in JOB_RUN_TRANSITIONS[state]:
        raise InvalidTransition(
            f"{what} is {state.value}; it cannot become {target.value}",
            current=state.value,
            target=target.value,
        )
    return target


def job_run_sources(target: JobRunState) -> tuple[JobRunState, ...]:
    """The states from which a conditional UPDATE may move a run to ``target``."""
    return tuple(s for s in JobRunState if target in JOB_RUN_TRANSITIONS[s])
