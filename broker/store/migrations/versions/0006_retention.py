"""retention: purged messages and attachments are kept as digest-only tombstones

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_us", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("purge_rule", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True))
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purge_rule", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.drop_column("purge_rule")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("purge_rule")
        batch_op.drop_column("purged_us")
