"""Inserting many rows at once with one ``executemany`` of the database driver.

A delivery of tens of thousands of small files records two rows per file. Through SQLAlchemy's
compiled execution each row costs tens of microseconds of parameter processing, more than the
database needs to store it. Here the statement is compiled once for the connection's dialect,
values shared by every row (the time, the delivery, the tier) are converted once, and the rows
go to the driver as plain tuples or dicts.

Rows derived from rows already in the database go in with one ``INSERT ... SELECT`` instead, so
that none of them passes through Python: :func:`new_uuid_sql` gives such rows their ids.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, Table, bindparam, insert, literal_column
from sqlalchemy.orm import Session


def insert_rows(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    same: Mapping[str, Any] | None = None,
) -> None:
    """Insert ``rows`` (values for ``columns``, in order) into ``table``; ``same`` gives the values
    every row shares. Columns named in neither get the database's default (NULL for most), not
    the models' Python-side defaults: name every column that has one."""
    if not rows:
        return
    same = dict(same or {})
    conn = session.connection()
    dialect = conn.dialect
    names = [*columns, *same]

    def processor(name: str) -> Any:
        column_type = table.c[name].type
        return column_type.dialect_impl(dialect).bind_processor(dialect)

    shared = tuple(p(v) if (p := processor(n)) else v for n, v in same.items())
    per_row = [processor(n) for n in columns]
    if any(per_row):
        rows = [tuple(p(v) if p else v for p, v in zip(per_row, row, strict=True)) for row in rows]
    compiled = insert(table).values({n: bindparam(n) for n in names}).compile(dialect=dialect)
    if compiled.positional:
        # the compiled statement orders the values by the table: one C-level pick per row
        where = {n: i for i, n in enumerate(names)}
        order = [where[n] for n in compiled.positiontup or ()]
        pick = operator.itemgetter(*order) if len(order) > 1 else lambda full: (full[order[0]],)
        params: list[Any] = [pick((*row, *shared)) for row in rows]
    else:
        params = [dict(zip(names, (*row, *shared), strict=True)) for row in rows]
    conn.exec_driver_sql(compiled.string, params)


def _now_hex(dialect_name: str) -> str:
    """The time in milliseconds since 1970 as 12 hex digits: the transaction's start on
    PostgreSQL, the statement's on SQLite, so that every row of one statement gets the same."""
    if dialect_name == "postgresql":
        return "lpad(to_hex(floor(extract(epoch from now()) * 1000)::bigint), 12, '0')"
    return "printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))"


def new_uuid_sql(dialect_name: str) -> ColumnElement[str]:
    """A SQL expression that makes a new time-ordered (version 7) UUID for every row, in the form
    ``str(uuid.UUID)`` has: ids for rows inserted with ``INSERT ... SELECT`` (see
    :func:`levere.db.models.new_ids` for why time-ordered)."""
    now = _now_hex(dialect_name)
    time_part = f"substr({now}, 1, 8) || '-' || substr({now}, 9, 4) || '-7'"
    if dialect_name == "postgresql":
        # PostgreSQL's own random UUID, with the time and version put in
        return literal_column(f"({time_part} || substr(gen_random_uuid()::text, 16))", String)
    random_part = (
        "substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + abs(random() % 4), 1)"
        " || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"
    )
    return literal_column(f"({time_part} || {random_part})", String)
