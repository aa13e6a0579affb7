"""Engine set-up for SQLite (embedded default, WAL, synchronous=FULL) and PostgreSQL."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine

from broker.errors import ConfigurationError, StorageFull, StorageUnavailable

_COMPILED: dict[tuple[str, int], tuple[str, bool, tuple[str, ...], dict[str, Any]]] = {}
_INSERTS: dict[tuple[str, tuple[str, ...]], sa.Insert] = {}


def executemany(conn: Connection, statement: sa.Executable, columns: tuple[str, ...],
                rows: Sequence[tuple[Any, ...]]) -> None:
    """Run a prebuilt statement for many rows through the DB-API's executemany, compiled once per dialect.

    The hot path: `conn.execute(statement, dicts)` spends more time building SQLAlchemy's per-row
    parameters than the database spends writing them. Our values are ints, strings, None and bytes,
    which every driver takes as they are, so no type processing that matters is skipped. `statement`
    must be a long-lived object (a module constant): compiled SQL is cached by its identity.
    `columns` name the statement's bind parameters in the order of each row; literal values
    written into the statement (`state <= 2`) are bound from the compiled constants.
    """
    key = (conn.dialect.name, id(statement))
    cached = _COMPILED.get(key)
    if cached is None:
        compiled = statement.compile(dialect=conn.dialect)  # type: ignore[attr-defined]
        constants = {name: value for name, value in compiled.params.items() if name not in columns}
        missing = [name for name in columns if name not in compiled.params]
        if missing:
            raise RuntimeError(f"statement has no parameters {missing}")
        order = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.params)
        cached = (str(compiled), compiled.positional, order, constants)
        _COMPILED[key] = cached
    sql, positional, order, constants = cached
    if positional:
        slots = [(columns.index(name), None) if name in columns else (-1, constants[name]) for name in order]
        conn.exec_driver_sql(sql, [tuple(row[i] if i >= 0 else c for i, c in slots) for row in rows])
    else:
        conn.exec_driver_sql(sql, [{**constants, **dict(zip(columns, row, strict=True))} for row in rows])


def bulk_insert(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """`INSERT` many rows of `columns` into `table` (see `executemany`)."""
    key = (table.name, columns)
    statement = _INSERTS.get(key)
    if statement is None:
        statement = table.insert().values({name: sa.bindparam(name) for name in columns})
        _INSERTS[key] = statement
    executemany(conn, statement, columns, rows)


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
    # A bounded connect, so that a database host that does not answer is an error, not a hang.
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True,
                            connect_args={"connect_timeout": 5})


class WriterLock:
    """An exclusive `flock` on `<database>.lock`, held by the one broker that writes an SQLite database.

    SQLite's own `PRAGMA locking_mode=EXCLUSIVE` cannot serve: in WAL mode it shuts out every other
    connection, the broker's own pooled readers included ("database is locked" after busy_timeout),
    and the broker reads beside its writer. The kernel drops the lock when the process dies, so a
    crashed broker never leaves a stale lock; the file only names the holder's pid for the message.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, database: Path) -> WriterLock:
        """Take the lock beside `database`; `ConfigurationError` naming the holder if another broker has it."""
        path = database.with_name(database.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigurationError(
                f"database {database} is in use by another broker (pid {holder} holds {path}); one broker writes "
                "one SQLite database: stop the other broker or give this one its own database_url") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Let go of the lock (also done by the kernel when the process ends)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def writer_lock(engine: Engine) -> WriterLock | None:
    """The lock of an SQLite file database; None for PostgreSQL (replicas share it) or an in-memory one."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    return WriterLock.acquire(Path(engine.url.database).resolve())


# SQLite primary result codes (the low byte of an extended code) that mean the store, not the
# statement, failed: https://sqlite.org/rescode.html
_SQLITE_FULL = 13
_SQLITE_UNAVAILABLE = {5, 6, 8, 10, 11, 14, 26}  # BUSY, LOCKED, READONLY, IOERR, CORRUPT, CANTOPEN, NOTADB
# PostgreSQL SQLSTATE: class 08 connection exception, 57P0x shutdown/crash, class 53 insufficient
# resources (53100 is disk full), 58 system error (I/O).
_PG_FULL = "53100"
_PG_UNAVAILABLE_PREFIXES = ("08", "57P", "53", "58")


def storage_fault(exc: BaseException) -> StorageUnavailable | StorageFull | None:
    """The broker error for a database failure that is the store's, not the statement's, else None.

    A full disk is `StorageFull` (RESOURCE_EXHAUSTED: retrying will not help until space is freed);
    a database that cannot be reached or written is `StorageUnavailable` (UNAVAILABLE: retry).
    Anything else (a bug in one statement, a constraint) is None, so that the writer can isolate it.
    """
    cause: BaseException | None = exc
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        cause = exc.orig
    elif isinstance(exc, sa.exc.TimeoutError):  # the connection pool is exhausted
        return StorageUnavailable(_unavailable("no database connection was free in time"))
    full = False
    unavailable = False
    if isinstance(cause, sqlite3.Error):
        code = (getattr(cause, "sqlite_errorcode", 0) or 0) & 0xFF
        full = code == _SQLITE_FULL
        unavailable = code in _SQLITE_UNAVAILABLE
    elif isinstance(cause, OSError):
        full = cause.errno == errno.ENOSPC
        unavailable = not full
    else:
        sqlstate = str(getattr(cause, "sqlstate", "") or "")
        full = sqlstate == _PG_FULL
        unavailable = sqlstate.startswith(_PG_UNAVAILABLE_PREFIXES) or (
            not sqlstate and type(cause).__name__ == "OperationalError")  # psycopg: no connection at all
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            unavailable = True
    if full:
        return StorageFull("the broker's database disk is full; nothing was stored. Retrying will not help until "
                           "the operator frees space")
    if unavailable:
        return StorageUnavailable(_unavailable(f"{type(cause).__name__}"))
    return None


def _unavailable(cause: str) -> str:
    return (f"the broker's database is unavailable ({cause}); nothing was stored. It is safe to retry "
            "(sends are idempotent: the same message id gets the same answer)")
