"""zone files: deliveries on a shared disk, Crypt4GH headers kept apart from the bodies

A delivery into a sensitive project lands on a shared disk (``deliveries.shared_disk_id``) and is
released from it (``released_at``). Its files are stored on the secure tier as Crypt4GH bodies only;
each file's headers live in ``file_headers``, one per holder (the shared disk, a secure project),
so granting or removing a reader never rewrites data. ``files.body_sha256`` and ``body_size`` are
those of the stored body (what sync, verify and repair compare), while ``size``, ``md5`` and
``sha256`` stay those of the plaintext. An encrypting upload keeps its data key wrapped under the
master key (``uploads.wrapped_data_key``) so that it can resume in another process.

Revision ID: 0009_zone_files
Revises: 0008_secure_zone
Create Date: 2026-12-06 07:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import levere.db.models

revision = "0009_zone_files"
down_revision = "0008_secure_zone"
branch_labels = None
depends_on = None

UTC = levere.db.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("shared_disk_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("released_at", UTC, nullable=True))
        batch.create_foreign_key(
            op.f("fk_deliveries_shared_disk_id_shared_disks"), "shared_disks", ["shared_disk_id"], ["id"]
        )
        batch.create_index(op.f("ix_deliveries_shared_disk_id"), ["shared_disk_id"])
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("body_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("body_size", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("wrapped_data_key", sa.Text(), nullable=True))
    op.create_table(
        "file_headers",
        sa.Column("file_id", sa.String(36), nullable=False),
        sa.Column("holder_kind", sa.String(16), nullable=False),
        sa.Column("holder_id", sa.String(36), nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], ondelete="CASCADE", name=op.f("fk_file_headers_file_id_files")
        ),
        sa.PrimaryKeyConstraint("file_id", "holder_kind", "holder_id", name=op.f("pk_file_headers")),
    )
    op.create_index(op.f("ix_file_headers_holder"), "file_headers", ["holder_kind", "holder_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_file_headers_holder"), table_name="file_headers")
    op.drop_table("file_headers")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("wrapped_data_key")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("body_size")
        batch.drop_column("body_sha256")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(op.f("ix_deliveries_shared_disk_id"))
        batch.drop_constraint(op.f("fk_deliveries_shared_disk_id_shared_disks"), type_="foreignkey")
        batch.drop_column("released_at")
        batch.drop_column("shared_disk_id")
