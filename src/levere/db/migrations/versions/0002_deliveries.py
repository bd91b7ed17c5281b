"""deliveries: upload kinds, saved checksum state, write leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import levere.db.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="tus", nullable=False))
        batch_op.add_column(sa.Column("hash_state", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", levere.db.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_uploads_delivery_state", ["delivery_id", "state"], unique=False)
        batch_op.create_index("ix_uploads_state_expires", ["state", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_state_expires")
        batch_op.drop_index("ix_uploads_delivery_state")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
        batch_op.drop_column("hash_state")
        batch_op.drop_column("kind")
