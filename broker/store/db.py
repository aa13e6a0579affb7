"""Engine set-up for SQLite (embedded default, WAL, synchronous=FULL) and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine

_INSERT_SQL: dict[tuple[str, str, tuple[str, ...]], tuple[str, bool]] = {}


def bulk_insert(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """`INSERT` many rows through the DB-API's executemany, compiled once per dialect and column set.

    The hot path: `conn.execute(table.insert(), dicts)` spends more time building SQLAlchemy's
    per-row parameters than the database spends inserting. Our values are ints, strings, None and
    bytes, which every driver takes as they are, so no type processing that matters is skipped.
    """
    key = (conn.dialect.name, table.name, columns)
    cached = _INSERT_SQL.get(key)
    if cached is None:
        compiled = table.insert().values({name: sa.bindparam(name) for name in columns}).compile(dialect=conn.dialect)
        order = compiled.positiontup
        if compiled.positional and order is not None and tuple(order) != columns:
            raise RuntimeError(f"unexpected parameter order {order} for {table.name}")
        cached = (str(compiled), compiled.positional)
        _INSERT_SQL[key] = cached
    sql, positional = cached
    if positional:
        conn.exec_driver_sql(sql, list(rows))
    else:
        conn.exec_driver_sql(sql, [dict(zip(columns, row, strict=True)) for row in rows])


def now_us() -> int:
    """The current time in integer microseconds since the Unix epoch, as stored in every table."""
    return time.time_ns() // 1000


def normalise_url(url: str) -> str:
    """Accept the usual `postgresql://` spelling and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; synchronous=FULL makes every commit durable
    # before the sender is answered (the benchmark issue's durability rule).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> Engine:
    """An engine for `url`; a relative SQLite path is created with its folder."""
    url = normalise_url(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=8,
            max_overflow=8,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
