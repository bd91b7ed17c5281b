"""transfer grants and Crypt4GH keys from sign-in identities

A transfer grant lets the token that started one transfer (a delivery's uploads, a download, a job
being followed) finish that transfer after it expires, and nothing else. A linked identity keeps
the Crypt4GH public keys its provider released, the default recipients of secure-zone downloads.

Revision ID: 0010_transfer_grants
Revises: 0009_zone_files
Create Date: 2026-12-06 07:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import levere.db.models

revision = "0010_transfer_grants"
down_revision = "0009_zone_files"
branch_labels = None
depends_on = None

UTC = levere.db.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "transfer_grants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("target", sa.String(length=4096), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_tokens.id"], name=op.f("fk_transfer_grants_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_transfer_grants_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_transfer_grants_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer_grants")),
    )  # fmt: skip
    op.create_index(op.f("ix_transfer_grants_token_id"), "transfer_grants", ["token_id"], unique=False)
    with op.batch_alter_table("federated_identities") as batch_op:
        batch_op.add_column(
            sa.Column("crypt4gh_public_keys", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("federated_identities") as batch_op:
        batch_op.drop_column("crypt4gh_public_keys")
    op.drop_index(op.f("ix_transfer_grants_token_id"), table_name="transfer_grants")
    op.drop_table("transfer_grants")
