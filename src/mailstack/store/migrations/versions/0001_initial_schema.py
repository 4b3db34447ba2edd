"""Initial schema: domains, alias domains, users, aliases, alias targets, sieve scripts.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer()),
        sa.Column("name", sa.String(253), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_domains"),
        sa.UniqueConstraint("name", name="uq_domains_name"),
    )
    op.create_table(
        "alias_domains",
        sa.Column("id", sa.Integer()),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["domains.id"],
            name="fk_alias_domains_target_id_domains",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alias_domains"),
        sa.UniqueConstraint("name", name="uq_alias_domains_name"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer()),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name="fk_users_domain_id_domains", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("address", name="uq_users_address"),
    )
    op.create_index("ix_users_domain_id", "users", ["domain_id"])
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer()),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(254), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name="fk_aliases_domain_id_domains", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_aliases"),
        sa.UniqueConstraint("source", name="uq_aliases_source"),
    )
    op.create_index("ix_aliases_domain_id", "aliases", ["domain_id"])
    op.create_table(
        "alias_targets",
        sa.Column("id", sa.Integer()),
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(254), nullable=False),
        sa.ForeignKeyConstraint(
            ["alias_id"],
            ["aliases.id"],
            name="fk_alias_targets_alias_id_aliases",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alias_targets"),
        sa.UniqueConstraint("alias_id", "target", name="uq_alias_targets_pair"),
    )
    op.create_index("ix_alias_targets_alias_id", "alias_targets", ["alias_id"])
    op.create_table(
        "sieve_scripts",
        sa.Column("id", sa.Integer()),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_sieve_scripts_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sieve_scripts"),
        sa.UniqueConstraint("user_id", "name", name="uq_sieve_scripts_user_name"),
    )
    op.create_index(
        "uq_sieve_scripts_one_active",
        "sieve_scripts",
        ["user_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )


def downgrade() -> None:
    op.drop_table("sieve_scripts")
    op.drop_table("alias_targets")
    op.drop_table("aliases")
    op.drop_table("users")
    op.drop_table("alias_domains")
    op.drop_table("domains")
