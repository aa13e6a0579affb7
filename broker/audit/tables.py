"""The audit log's tables, registered on `SQLModel.metadata` (all named `audit_*`).

- `audit_entries`: one row per leaf. `leaf_index` is the position in the tree (0-based, dense).
  Times are integer microseconds since the epoch: exact, portable between SQLite and PostgreSQL,
  and cheap to index.
- `audit_nodes`: every complete perfect subtree of level >= 1 (`level`, `node_index` = start >> level),
  written as it completes, so any proof reads O(log n) rows; level 0 is `audit_entries.leaf_hash`.
- `audit_checkpoints`: every signed checkpoint, keyed by tree size.
- `audit_tree`: one row, the tree's size: entries at or above it are committed but not yet
  integrated into the tree (docs/protocol.md section 24); only the integrator changes it.

The hot path writes these with SQLAlchemy Core (`AuditLog.append`); the classes exist for the schema,
Alembic and readable ad-hoc queries.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, SmallInteger, Table
from sqlmodel import Field, SQLModel

from broker.store.tables import table_of

# On SQLite only an `INTEGER PRIMARY KEY` aliases the rowid: the row is stored in the key's B-tree,
# which makes appends and range scans by index cheapest. PostgreSQL needs 64 bits.
_Index64 = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntryRow(SQLModel, table=True):
    """One entry (leaf) of the audit log."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_agency", "agency", "leaf_index"),
        Index("ix_audit_entries_event", "event", "leaf_index"),
        Index("ix_audit_entries_message_id", "message_id"),
        Index("ix_audit_entries_time_us", "time_us"),
    )

    leaf_index: int = Field(primary_key=True, sa_type=_Index64, sa_column_kwargs={"autoincrement": False})
    time_us: int = Field(sa_type=BigInteger)
    event: str = Field(max_length=64)
    actor: str = Field(max_length=255)
    agency: str | None = Field(default=None, max_length=64)
    message_id: str | None = Field(default=None, max_length=64)
    entry: bytes = Field(sa_type=LargeBinary)
    leaf_hash: bytes = Field(sa_type=LargeBinary)


class AuditNodeRow(SQLModel, table=True):
    """The hash of one complete perfect subtree of level >= 1."""

    __tablename__ = "audit_nodes"

    level: int = Field(primary_key=True, sa_type=SmallInteger, sa_column_kwargs={"autoincrement": False})
    node_index: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    hash: bytes = Field(sa_type=LargeBinary)


class AuditCheckpointRow(SQLModel, table=True):
    """A signed checkpoint (C2SP tlog-checkpoint note) over the first `tree_size` entries."""

    __tablename__ = "audit_checkpoints"

    tree_size: int = Field(primary_key=True, sa_type=_Index64, sa_column_kwargs={"autoincrement": False})
    time_us: int = Field(sa_type=BigInteger)
    root_hash: bytes = Field(sa_type=LargeBinary)
    note: bytes = Field(sa_type=LargeBinary)


class AuditTreeRow(SQLModel, table=True):
    """The size of the Merkle tree: how many entries the integrator has folded in (one row, id 1)."""

    __tablename__ = "audit_tree"

    id: int = Field(primary_key=True, sa_type=SmallInteger, sa_column_kwargs={"autoincrement": False})
    tree_size: int = Field(sa_type=BigInteger)


entries_table = table_of(AuditEntryRow)
nodes_table = table_of(AuditNodeRow)
checkpoints_table = table_of(AuditCheckpointRow)
tree_table = table_of(AuditTreeRow)

AUDIT_TABLES: tuple[Table, ...] = (entries_table, nodes_table, checkpoints_table, tree_table)
"""The tables to create (e.g. `SQLModel.metadata.create_all(engine, tables=AUDIT_TABLES)`)."""
