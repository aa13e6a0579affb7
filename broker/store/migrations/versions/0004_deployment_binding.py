"""deployment binding and writer heartbeat

The database records, once, which deployment it belongs to (trust domain, CA certificate
fingerprint, audit key id), so that a broker with another PKI refuses to write into it; and each
writer's last successful probe, the write with which a writer that lost its store finds it again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trust_domain", sqlmodel.sql.sqltypes.AutoString(length=253), nullable=False),
        sa.Column("ca_fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("audit_key_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "writer_heartbeat",
        sa.Column("node", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("beat_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node"),
    )


def downgrade() -> None:
    op.drop_table("writer_heartbeat")
    op.drop_table("deployment")
