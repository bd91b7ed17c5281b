"""federated identities: sign-in with OpenID Connect providers

An identity at a provider (issuer + subject) is linked to one account (an account may have several);
a sign-in under way is kept server-side so that its ``state``, ``nonce`` and PKCE verifier are checked
and used once; an API token records whether its sign-in proved a second factor.

Revision ID: 0007_federated_identities
Revises: 0006_checksum_coverage
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import levere.db.models

revision = "0007_federated_identities"
down_revision = "0006_checksum_coverage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federated_identities",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", levere.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", levere.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_federated_identities_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federated_identities")),
        sa.UniqueConstraint("issuer", "subject", name=op.f("uq_federated_identities_issuer")),
    )
    op.create_index(
        op.f("ix_federated_identities_user_id"), "federated_identities", ["user_id"], unique=False
    )
    op.create_table(
        "sign_in_flows",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.String(length=100), nullable=False),
        sa.Column("code_verifier", sa.String(length=200), nullable=True),
        sa.Column("redirect_uri", sa.String(length=500), nullable=True),
        sa.Column("device_code", sa.String(length=500), nullable=True),
        sa.Column("mfa_requested", sa.Boolean(), nullable=False),
        sa.Column("invitation_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", levere.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", levere.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", levere.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_flows")),
    )
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(
            sa.Column("second_factor", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("uploads") as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch_op:
        batch_op.drop_column("token_id")
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_column("second_factor")
    op.drop_table("sign_in_flows")
    op.drop_index(op.f("ix_federated_identities_user_id"), table_name="federated_identities")
    op.drop_table("federated_identities")
