"""Inserting many rows at once with one ``executemany`` of the database driver.

A delivery of tens of thousands of small files records two rows per file. Through SQLAlchemy's
compiled execution each row costs tens of microseconds of parameter processing, more than the
database needs to store it. Here the statement is compiled once for the connection's dialect,
values shared by every row (the time, the delivery, the tier) are converted once, and the rows
go to the driver as plain tuples or dicts.

Rows derived from rows already in the database go in with one ``INSERT ... SELECT`` instead, so
that none of them passes through Python: :func:`new_ids_sql` gives such rows their ids.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, Table, bindparam, func, insert, literal
from sqlalchemy.orm import Session

from levere.db.models import ID_STEM, new_ids


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


def new_ids_sql(dialect_name: str) -> ColumnElement[str]:
    """A SQL expression that gives each row of an ``INSERT ... SELECT`` its own new id: the ids
    one :func:`levere.db.models.new_ids` call would make (one stem, then a counter), numbered by
    the database."""
    first = new_ids(1)[0]
    stem, start = first[:ID_STEM], int(first[ID_STEM:], 16)
    number = literal(start, BigInteger) + func.row_number().over()
    if dialect_name == "postgresql":
        counter = func.lpad(func.to_hex(number), 8, "0", type_=String)
    else:
        counter = func.printf("%08x", number, type_=String)
    return literal(stem, String) + counter
