"""a sensitive project has no working area: drop its unused area quota rows

Approval used to record the area quota a sensitive application asked for, although a sensitive
project never keeps data on the area (its data lands on a shared disk in the secure zone). Those
rows made the project's views show a "project area" it cannot use. Rows that hold usage or
reservations are left in place, so no accounting is lost; nothing ever puts usage there.

Revision ID: 0011_no_sensitive_area
Revises: 0010_transfer_grants
Create Date: 2026-12-06 10:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_no_sensitive_area"
down_revision = "0010_transfer_grants"
branch_labels = None
depends_on = None

projects = sa.table("projects", sa.column("id", sa.String), sa.column("sensitive", sa.Boolean))
quotas = sa.table(
    "quotas",
    sa.column("project_id", sa.String),
    sa.column("tier", sa.String),
    sa.column("used_bytes", sa.BigInteger),
    sa.column("reserved_bytes", sa.BigInteger),
)


def upgrade() -> None:
    sensitive = sa.select(projects.c.id).where(projects.c.sensitive == sa.true())
    op.execute(
        quotas.delete().where(
            quotas.c.tier == "area",
            quotas.c.used_bytes == 0,
            quotas.c.reserved_bytes == 0,
            quotas.c.project_id.in_(sensitive),
        )
    )


def downgrade() -> None:
    # the rows removed granted nothing usable; there is nothing to put back
    pass
