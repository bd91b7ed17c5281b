"""drop two indexes that a unique constraint already gives: files by delivery, replicas by file

Every file recorded updated both on top of the constraints that start with the same column
(files: delivery and path; replicas: file and tier), which queries by that column use as well.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 21:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch_op:
        batch_op.drop_index("ix_files_delivery_id")
    with op.batch_alter_table("replicas") as batch_op:
        batch_op.drop_index("ix_replicas_file_id")


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch_op:
        batch_op.create_index("ix_replicas_file_id", ["file_id"], unique=False)
    with op.batch_alter_table("files") as batch_op:
        batch_op.create_index("ix_files_delivery_id", ["delivery_id"], unique=False)
