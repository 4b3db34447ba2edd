"""Greylisting state: triplets, auto-allowed client networks, the administrators' allow list.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "greylist_triplets",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("client_network", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(512), nullable=False),
        sa.Column("recipient", sa.String(512), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_greylist_triplets"),
    )
    op.create_index("ix_greylist_triplets_last_seen", "greylist_triplets", ["last_seen"])
    op.create_table(
        "greylist_clients",
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("network", name="pk_greylist_clients"),
    )
    op.create_index("ix_greylist_clients_last_seen", "greylist_clients", ["last_seen"])
    op.create_table(
        "greylist_allow",
        sa.Column("id", sa.Integer()),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(254), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('network', 'domain', 'recipient')", name="ck_greylist_allow_kind"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_greylist_allow"),
        sa.UniqueConstraint("kind", "value", name="uq_greylist_allow_entry"),
    )


def downgrade() -> None:
    op.drop_table("greylist_allow")
    op.drop_table("greylist_clients")
    op.drop_table("greylist_triplets")
