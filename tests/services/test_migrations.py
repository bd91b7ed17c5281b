"""The migrations build exactly the schema the models describe, and go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from levere.db.migrate import alembic_config, upgrade
from levere.db.models import Base


def test_the_migrated_schema_is_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_the_latest_migration_goes_down_and_up_again(database_url: str) -> None:
    from alembic import command

    engine = create_engine(database_url)
    try:
        before = {t: sorted(i["name"] for i in inspect(engine).get_indexes(t)) for t in ("files", "replicas")}
        command.downgrade(alembic_config(database_url), "-1")
        upgrade(database_url)
        after = {t: sorted(i["name"] for i in inspect(engine).get_indexes(t)) for t in ("files", "replicas")}
    finally:
        engine.dispose()
    assert after == before
