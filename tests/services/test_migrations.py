"""The migrations build exactly the schema the models describe, and go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
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


def test_every_revision_id_fits_alembic_version_column() -> None:
    """Alembic records the revision in ``alembic_version.version_num``, a VARCHAR(32): a longer id
    fails on PostgreSQL (SQLite does not enforce the length) after the migration itself ran."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    too_long = [rev.revision for rev in script.walk_revisions() if len(rev.revision) > 32]
    assert not too_long, too_long
