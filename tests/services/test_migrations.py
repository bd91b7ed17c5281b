"""The migrations build exactly the schema the models describe, and go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

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


def test_unused_area_quotas_of_sensitive_projects_are_dropped(database_url: str) -> None:
    """0011: a sensitive project's area quota row that holds nothing goes; one that holds usage or
    reservations stays (no accounting is lost); non-sensitive projects keep theirs."""
    from alembic import command

    engine = create_engine(database_url)
    try:
        command.downgrade(alembic_config(database_url), "0010_transfer_grants")
        projects = [("p-sens", "LEV-2026-0901", True), ("p-used", "LEV-2026-0902", True),
                    ("p-plain", "LEV-2026-0903", False)]  # fmt: skip
        with engine.begin() as conn:
            for row_id, identifier, sensitive in projects:
                conn.execute(
                    text(
                        "INSERT INTO projects (id, identifier, title, sensitive, secure_project_id, sync_mode, "
                        "created_at) VALUES (:id, :identifier, 't', :sensitive, '', 'auto', CURRENT_TIMESTAMP)"
                    ),
                    {"id": row_id, "identifier": identifier, "sensitive": sensitive},
                )
                for tier in ("area", "longterm"):
                    conn.execute(
                        text(
                            "INSERT INTO quotas (project_id, tier, limit_bytes, used_bytes, reserved_bytes) "
                            "VALUES (:id, :tier, 1000, :used, 0)"
                        ),
                        {"id": row_id, "tier": tier, "used": 5 if row_id == "p-used" else 0},
                    )
        upgrade(database_url)
        with engine.connect() as conn:
            left = set(conn.execute(text("SELECT project_id, tier FROM quotas WHERE project_id LIKE 'p-%'")))
    finally:
        engine.dispose()
    assert left == {
        ("p-sens", "longterm"),
        ("p-used", "area"),
        ("p-used", "longterm"),
        ("p-plain", "area"),
        ("p-plain", "longterm"),
    }
