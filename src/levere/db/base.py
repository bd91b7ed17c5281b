"""What every table is built on: the declarative base with its constraint naming convention, UTC
times, and time-ordered ids. The tables are in ``models`` (which names these too) and ``models_zone``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


#: characters that the ids made by one :func:`new_ids` call share; a counter follows
ID_STEM = 28


def new_id() -> str:
    return new_ids(1)[0]


def new_ids(count: int) -> list[str]:
    """``count`` time-ordered UUIDs (version 7, RFC 9562), in the form ``str(uuid.UUID)`` has.

    Time-ordered rather than random (version 4) because of what an insert costs: a new random id
    lands on a random page of every index it is in, so recording a chunk of a delivery's files
    would rewrite pages all over each table's indexes (several times the writes and the time; see
    docs/benchmarks.md). A new version 7 id sorts after every older one, so new rows fill the last
    pages.

    The ids of one call share their first :data:`ID_STEM` characters (the time and 42 random bits)
    and end in a counter of 8 hex digits from a random start, so they are also in order among
    themselves: a lone id has 64 random bits, the ids of one call follow each other.
    """
    if count <= 0:
        return []
    bits = int.from_bytes(os.urandom(8), "big")
    start = bits & 0x3F_FFFF  # 22 bits: the counter cannot run into the bits above it
    first = (
        (time.time_ns() // 1_000_000) << 80  # unix time in milliseconds
        | 0x7 << 76  # the version
        | (bits >> 52) << 64  # 12 random bits
        | 0b10 << 62  # the variant
        | ((bits >> 22) & 0x3FFF_FFFF) << 32  # 30 random bits
        | start
    )
    text = f"{first:032x}"
    stem = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:24]}"
    return [f"{stem}{counter:08x}" for counter in range(start, start + count)]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC times on every database (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


Id = String(36)
