"""watchlists: watchlist_lists and watchlist_versions (issue 6)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:05:52.582795
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watchlist_lists",
        sa.Column("watchlist_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("entry_types", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("subscribers", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("tlp", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_version", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("watchlist_id"),
    )
    with op.batch_alter_table("watchlist_lists", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_watchlist_lists_owner"), ["owner"], unique=False)

    op.create_table(
        "watchlist_versions",
        sa.Column("watchlist_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("snapshot", sa.Boolean(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("envelope_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sender_cert", sa.LargeBinary(length=32), nullable=False),
        sa.Column("accepted_us", sa.BigInteger(), nullable=False),
        sa.Column("audit_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("watchlist_id", "version"),
        sa.UniqueConstraint("message_id"),
    )


def downgrade() -> None:
    op.drop_table("watchlist_versions")
    with op.batch_alter_table("watchlist_lists", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_watchlist_lists_owner"))

    op.drop_table("watchlist_lists")
