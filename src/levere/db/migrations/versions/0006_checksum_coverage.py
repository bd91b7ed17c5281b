"""checksum coverage: what a delivery's checksum file covered, and facilities that require one

A sealed delivery records which of its files its checksum file listed (``checksum_coverage``), so
that receipts and listings can say "3 of 4 files verified"; a facility may require that every file
it delivers is listed (``require_checksum_file``).

Revision ID: 0006_checksum_coverage
Revises: 0005_replica_version_ids
Create Date: 2026-12-06 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_checksum_coverage"
down_revision = "0005_replica_version_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("facilities") as batch_op:
        batch_op.add_column(
            sa.Column("require_checksum_file", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.add_column(sa.Column("checksum_coverage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_column("checksum_coverage")
    with op.batch_alter_table("facilities") as batch_op:
        batch_op.drop_column("require_checksum_file")
