"""The writer's bulk statements (`bulk_insert`, `bulk_update`) round-trip every kind of value they
carry, on SQLite and on the shared PostgreSQL server (there, the column arrays go in psycopg's binary
format: small and large integers, NULL-only columns, empty and non-ASCII text, bytes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from broker.store.db import bulk_insert, bulk_update, create_engine

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

ROWS = [
    (1, 2**40, "ALERT", "é\u00e9中", b"\x00\xff", None),
    (2, 0, "", None, b"", True),
    (3, -(2**62), "x" * 64, "DE-BKA", None, False),
]
COLUMNS = ("id", "big", "name", "note", "blob", "flag")


def _postgres_up() -> bool:
    try:
        psycopg.connect(PG_URL, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh SQLite file or on the shared PostgreSQL server's `test` database."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    else:
        if not _postgres_up():
            pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
        engine = create_engine(PG_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def table(engine: Engine) -> Iterator[sa.Table]:
    """A table of one column per kind of value, dropped afterwards."""
    metadata = sa.MetaData()
    table = sa.Table(
        f"bulk_{uuid.uuid4().hex[:12]}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("big", sa.BigInteger),
        sa.Column("name", sa.String(64)),
        sa.Column("note", sa.String(255), nullable=True),
        sa.Column("blob", sa.LargeBinary, nullable=True),
        sa.Column("flag", sa.Boolean, nullable=True),
    )
    metadata.create_all(engine)
    yield table
    metadata.drop_all(engine)


def _read(engine: Engine, table: sa.Table) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*(table.c[c] for c in COLUMNS)).order_by(table.c.id)).all()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def test_bulk_insert_stores_every_value_as_given(engine: Engine, table: sa.Table) -> None:
    """Integers of any size, NULLs, empty and non-ASCII text, bytes and booleans come back unchanged."""
    with engine.begin() as conn:
        bulk_insert(conn, table, COLUMNS, ROWS)
    assert _read(engine, table) == ROWS


def test_bulk_insert_takes_a_column_of_nulls_only(engine: Engine, table: sa.Table) -> None:
    """A batch whose optional columns are all NULL (no type to infer from a value) is stored."""
    rows = [(10, None, "a", None, None, None), (11, None, "b", None, None, None)]
    with engine.begin() as conn:
        bulk_insert(conn, table, COLUMNS, rows)
    assert _read(engine, table) == rows


def test_bulk_update_sets_columns_by_key(engine: Engine, table: sa.Table) -> None:
    """`bulk_update` changes exactly the named rows, with values and a constant of their own."""
    with engine.begin() as conn:
        bulk_insert(conn, table, COLUMNS, ROWS)
    with engine.begin() as conn:
        bulk_update(conn, table, ("id",), ("blob", "big"), [(1, b"new", 7), (3, None, 2**50)], constants={"name": "z"})
    rows = _read(engine, table)
    assert rows[0] == (1, 7, "z", "é\u00e9中", b"new", None)
    assert rows[1] == ROWS[1]
    assert rows[2] == (3, 2**50, "z", "DE-BKA", None, False)
