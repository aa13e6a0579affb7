"""staged audit entries and one integrator (docs/protocol.md section 24)

`audit_tree` holds the tree's size: entries at or above it are committed but not yet integrated.
Every entry of an older database is integrated, so the size starts at the number of entries. On
PostgreSQL, writers reserve entry indices from the sequence `audit_index_seq`, which starts there.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_tree",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO audit_tree (id, tree_size) SELECT 1, coalesce(max(leaf_index) + 1, 0) FROM audit_entries")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_index_seq MINVALUE 0 START WITH 0")
        op.execute("SELECT setval('audit_index_seq', tree_size, false) FROM audit_tree WHERE tree_size > 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE audit_index_seq")
    op.drop_table("audit_tree")
