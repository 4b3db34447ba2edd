"""Per-user spam settings: the user's own junk threshold and whether filing into Junk is on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("spam_threshold", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("spam_filter", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("spam_filter")
        batch.drop_column("spam_threshold")
