"""watchlist review: the owners' review schedules and the notices sent to them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watchlist_reviews",
        sa.Column("watchlist_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("review_date", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("notice_index", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("watchlist_id", "review_date"),
    )
    op.create_table(
        "watchlist_review_notices",
        sa.Column("audit_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("watchlist_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("due", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("notice_period", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("audit_index"),
    )
    with op.batch_alter_table("watchlist_review_notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_watchlist_review_notices_owner"), ["owner"], unique=False)
        batch_op.create_index(batch_op.f("ix_watchlist_review_notices_watchlist_id"), ["watchlist_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("watchlist_review_notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_watchlist_review_notices_watchlist_id"))
        batch_op.drop_index(batch_op.f("ix_watchlist_review_notices_owner"))
    op.drop_table("watchlist_review_notices")
    op.drop_table("watchlist_reviews")
