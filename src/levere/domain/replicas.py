"""Replicas (one file's copy on one tier): their states and the one table of allowed transitions.

Design notes
------------
Most replica changes are conditional UPDATEs over many rows at once (a claim, a batch recorded,
a free), so the table is used in two ways: :func:`replica_transition` checks one move, and
:func:`replica_sources` gives the states such an UPDATE may match, each checked against the table,
so that no statement can move a row along a path the table does not allow.

Some moves keep the state and are still moves: a copy or repair lease of a dead worker taken over,
a present copy verified again, damage found again, an interrupted free taken up again. They are in
the table as such. Which worker may make a move (its lease) is the data plane's business.
"""

from __future__ import annotations

from enum import StrEnum

from levere.domain.errors import InvalidTransition


class ReplicaState(StrEnum):
    PENDING = "pending"  # wanted on its tier, waiting to be copied there
    COPYING = "copying"  # leased to a worker that copies it; holds a quota reservation meanwhile
    PRESENT = "present"  # on its tier, durable, and matched the manifest when written or verified
    FAILED = "failed"  # the copy failed (the reason is kept); a later claim tries again
    DAMAGED = "damaged"  # read back and found different from the manifest, or gone
    REPAIRING = "repairing"  # leased to a verify that rewrites it from an intact copy
    FREEING = "freeing"  # its bytes are being removed from the project area
    FREED = "freed"  # removed from the project area; long-term storage holds the file


R = ReplicaState
REPLICA_TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    R.PENDING: frozenset({R.COPYING, R.FAILED}),  # failed: nothing intact left to copy from
    R.COPYING: frozenset({R.COPYING, R.PRESENT, R.FAILED}),  # copying: an expired lease taken over
    R.PRESENT: frozenset({R.PRESENT, R.DAMAGED, R.FREEING}),  # present: verified again
    R.FAILED: frozenset({R.COPYING, R.PENDING}),  # pending: a restore asked for again
    R.DAMAGED: frozenset({R.DAMAGED, R.PRESENT, R.REPAIRING, R.FREEING}),  # present: reads back intact
    R.REPAIRING: frozenset({R.REPAIRING, R.PRESENT, R.DAMAGED}),  # damaged: the repair failed
    R.FREEING: frozenset({R.FREEING, R.FREED}),
    R.FREED: frozenset({R.PENDING}),  # a restore
}

#: the states a new replica row starts in: landed in the area, or wanted on long-term storage
INITIAL = frozenset({R.PRESENT, R.PENDING})
#: area states that still hold bytes (and quota) in the project area
AREA_HOLDS = (R.PRESENT, R.FREEING, R.DAMAGED)
#: copies a verify reads back: those that should hold bytes
CHECKED = (R.PRESENT, R.DAMAGED, R.REPAIRING)
#: work still under way towards a present copy
UNDER_WAY = (R.PENDING, R.COPYING, R.REPAIRING)
#: states people are shown as problems
PROBLEMS = (R.FAILED, R.DAMAGED)


def replica_transition(current: str, target: ReplicaState, what: str = "the copy") -> ReplicaState:
    """``target`` if a replica in ``current`` may move there; else an :class:`InvalidTransition`."""
    state = ReplicaState(current)
    if target not in REPLICA_TRANSITIONS[state]:
        raise InvalidTransition(
            f"{what} is {state.value}; it cannot become {target.value}",
            current=state.value,
            target=target.value,
        )
    return target


def replica_sources(target: ReplicaState, *among: ReplicaState) -> tuple[ReplicaState, ...]:
    """The states from which a conditional UPDATE moves rows to ``target``: ``among`` (each
    checked against the table), or every state the table lets become ``target``."""
    if among:
        for state in among:
            replica_transition(state, target)
        return among
    return tuple(s for s in ReplicaState if target in REPLICA_TRANSITIONS[s])
