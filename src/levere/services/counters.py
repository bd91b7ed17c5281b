"""Gap-free counters for human-readable numbers, incremented under a row lock."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from levere.db.models import Counter


def _locked(session: Session, name: str) -> Counter | None:
    return session.execute(select(Counter).where(Counter.name == name).with_for_update()).scalar()


def next_value(session: Session, name: str) -> int:
    return take(session, name, 1)


def take(session: Session, name: str, count: int) -> int:
    """Advance counter ``name`` by ``count``; the first of the ``count`` values taken."""
    counter = _locked(session, name)
    if counter is None:
        # two first users of a counter may race to create it: the loser waits for the winner's
        # commit, gets a duplicate key in its savepoint, and then locks the winner's row
        try:
            with session.begin_nested():
                session.add(Counter(name=name, value=0))
        except IntegrityError:
            pass
        counter = _locked(session, name)
        assert counter is not None
    counter.value += count
    session.flush()
    return counter.value - count + 1
