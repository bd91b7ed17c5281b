"""secure zone: secure projects, shared disks and zone members

A secure project (``p1234``) belongs to a research project (the users') or to a facility, with its
X25519 public key and its private key wrapped under a master key. A shared disk links a facility's
secure project to a users' one for a while, with a key pair of its own. Zone members are staff a
project admin let into a users' secure project until an end date.

Revision ID: 0008_secure_zone
Revises: 0007_federated_identities
Create Date: 2026-12-06 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import levere.db.models

revision = "0008_secure_zone"
down_revision = "0007_federated_identities"
branch_labels = None
depends_on = None

UTC = levere.db.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "secure_projects",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("identifier", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=True),
        sa.Column("facility_id", sa.String(36), sa.ForeignKey("facilities.id"), nullable=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("wrapped_private_key", sa.Text(), nullable=False),
        sa.Column("master_key_id", sa.String(64), nullable=False),
        sa.Column("created_by_id", sa.String(36), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secure_projects")),
        sa.UniqueConstraint("identifier", name=op.f("uq_secure_projects_identifier")),
    )
    op.create_index(op.f("ix_secure_projects_project_id"), "secure_projects", ["project_id"])
    op.create_table(
        "shared_disks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("facility_secure_id", sa.String(36), sa.ForeignKey("secure_projects.id"), nullable=False),
        sa.Column("users_secure_id", sa.String(36), sa.ForeignKey("secure_projects.id"), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("ends_at", UTC, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("wrapped_private_key", sa.Text(), nullable=True),
        sa.Column("master_key_id", sa.String(64), nullable=True),
        sa.Column("notices_sent", sa.JSON(), nullable=False),
        sa.Column("created_by_id", sa.String(36), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("released_at", UTC, nullable=True),
        sa.Column("expired_at", UTC, nullable=True),
        sa.Column("destroyed_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shared_disks")),
        sa.UniqueConstraint("name", name=op.f("uq_shared_disks_name")),
    )
    op.create_index(op.f("ix_shared_disks_state"), "shared_disks", ["state"])
    op.create_table(
        "secure_members",
        sa.Column("secure_project_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("ends_at", UTC, nullable=False),
        sa.Column("added_by_id", sa.String(36), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("added_at", UTC, nullable=False),
        sa.Column("removed_at", UTC, nullable=True),
        sa.Column("ended_recorded_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["secure_project_id"], ["secure_projects.id"], ondelete="CASCADE",
            name=op.f("fk_secure_members_secure_project_id_secure_projects"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], ondelete="CASCADE", name=op.f("fk_secure_members_user_id_users")
        ),
        sa.PrimaryKeyConstraint("secure_project_id", "user_id", name=op.f("pk_secure_members")),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("secure_members")
    op.drop_index(op.f("ix_shared_disks_state"), table_name="shared_disks")
    op.drop_table("shared_disks")
    op.drop_index(op.f("ix_secure_projects_project_id"), table_name="secure_projects")
    op.drop_table("secure_projects")
