"""Alembic environment: migrations run against the URL handed over by :mod:`levere.db.migrate`."""

from __future__ import annotations

from alembic import context

from levere.db.engine import make_engine
from levere.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
