"""Gap-free counters for human-readable numbers, incremented under a row lock."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.db.models import Counter


def next_value(session: Session, name: str) -> int:
    counter = session.execute(select(Counter).where(Counter.name == name).with_for_update()).scalar()
    if counter is None:
        counter = Counter(name=name, value=0)
        session.add(counter)
    counter.value += 1
    session.flush()
    return counter.value
