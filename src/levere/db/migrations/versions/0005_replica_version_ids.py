"""replicas: the version id the store gave each copy on a versioned (write-once) bucket

Readers and verify ask for that version, so a copy deleted or overwritten behind levere's back is
still read as it was written.

Revision ID: 0005_replica_version_ids
Revises: 0004
Create Date: 2026-12-06 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_replica_version_ids"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch_op:
        batch_op.add_column(sa.Column("version_id", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch_op:
        batch_op.drop_column("version_id")
