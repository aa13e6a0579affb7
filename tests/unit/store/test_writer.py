"""The group-commit writer, on a real SQLite database: batching, audit indices, refusals, failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from broker.audit import AuditEvent, AuditLog
from broker.delivery.operations import IN_FLIGHT, PENDING, RecordDelivered
from broker.errors import InvalidRequest, StorageFull, StorageUnavailable
from broker.store.db import create_engine, storage_fault
from broker.store.schema import upgrade_schema
from broker.store.writer import Batch, Writer


def _event(name: str) -> AuditEvent:
    return AuditEvent(event=name, actor="test", time=dt.datetime.now(dt.UTC))


@dataclass
class Audit:
    name: str

    def stage(self, batch: Batch) -> int:
        return batch.audit(_event(self.name))


@dataclass
class Refuse:
    def stage(self, batch: Batch) -> int:
        batch.audit(_event("request.rejected"))
        raise InvalidRequest("refused on purpose")


@dataclass
class Explode:
    def stage(self, batch: Batch) -> None:
        batch.conn.execute(sa.text("INSERT INTO no_such_table VALUES (1)"))


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade_schema(engine)
    return engine


def _writer(engine: sa.engine.Engine) -> Writer:
    with engine.begin() as conn:
        return Writer(engine, AuditLog.open(conn))


def test_concurrent_operations_share_batches_and_get_consecutive_indices(engine: sa.engine.Engine) -> None:
    """Fifty operations submitted together commit in fewer batches, with audit indices 0..49 in order."""

    async def run() -> tuple[list[int], int]:
        writer = _writer(engine)
        writer.start()
        indices = await asyncio.gather(*(writer.submit(Audit(f"e{i}")) for i in range(50)))
        await writer.stop()
        return list(indices), writer.batches

    indices, batches = asyncio.run(run())
    assert indices == list(range(50))
    assert batches < 50
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_entries")).scalar() == 50


def test_refused_operation_keeps_its_audit_entry_and_fails_alone(engine: sa.engine.Engine) -> None:
    """A refusal raises for its caller only; its rejection entry and the neighbours' entries commit."""

    async def run() -> list[object]:
        writer = _writer(engine)
        writer.start()
        outcomes = await asyncio.gather(
            writer.submit(Audit("a")), writer.submit(Refuse()), writer.submit(Audit("b")), return_exceptions=True
        )
        await writer.stop()
        return list(outcomes)

    first, refused, last = asyncio.run(run())
    assert isinstance(refused, InvalidRequest)
    assert isinstance(first, int)
    assert isinstance(last, int)
    with engine.connect() as conn:
        events = [r[0] for r in conn.execute(sa.text("SELECT event FROM audit_entries ORDER BY leaf_index"))]
    assert events == ["a", "request.rejected", "b"]


def test_failing_operation_fails_alone_and_its_neighbours_commit(engine: sa.engine.Engine) -> None:
    """A batch whose SQL fails is retried one operation at a time: only the culprit gets UNAVAILABLE."""

    async def run() -> tuple[list[object], int]:
        writer = _writer(engine)
        writer.start()
        outcomes = await asyncio.gather(writer.submit(Audit("kept")), writer.submit(Explode()), return_exceptions=True)
        after = await writer.submit(Audit("after"))
        await writer.stop()
        return list(outcomes), after

    (kept, exploded), after = asyncio.run(run())
    assert kept == 0
    assert isinstance(exploded, StorageUnavailable)
    assert after == 1
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT event FROM audit_entries ORDER BY leaf_index"))] == [
            "kept",
            "after",
        ]


def test_several_deliveries_are_recorded_by_one_operation(engine: sa.engine.Engine) -> None:
    """RecordDelivered with many items updates every delivery and writes one entry each (executemany)."""
    with engine.begin() as conn:
        for i in range(3):
            conn.execute(
                sa.text(
                    "INSERT INTO deliveries (message_id, recipient, seq, priority, state, attempts, "
                    "updated_us) VALUES (:m, 'DE-BKA', :s, 2, :p, 0, 0)"
                ),
                {"m": f"m{i}", "s": i, "p": PENDING},
            )

    async def run() -> None:
        writer = _writer(engine)
        writer.start()
        await writer.submit(RecordDelivered([(f"m{i}", "DE-BKA", 1) for i in range(3)], actor="test"))
        await writer.stop()

    asyncio.run(run())
    with engine.connect() as conn:
        states = [r[0] for r in conn.execute(sa.text("SELECT state FROM deliveries ORDER BY message_id"))]
        events = conn.execute(sa.text("SELECT count(*) FROM audit_entries WHERE event = 'delivery.delivered'"))
        assert states == [IN_FLIGHT] * 3
        assert events.scalar() == 3


def _full_disk() -> sa.exc.OperationalError:
    orig = sqlite3.OperationalError("database or disk is full")
    orig.sqlite_errorcode = 13  # SQLITE_FULL
    return sa.exc.OperationalError("COMMIT", {}, orig)


@dataclass
class DiskFull:
    def stage(self, batch: Batch) -> None:
        raise _full_disk()


def test_storage_faults_are_classified_by_cause_not_statement() -> None:
    """A full disk is StorageFull, a lost connection StorageUnavailable, a bad statement no fault at all."""
    assert isinstance(storage_fault(_full_disk()), StorageFull)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5
    assert isinstance(storage_fault(sa.exc.OperationalError("x", {}, busy)), StorageUnavailable)
    no_table = sqlite3.OperationalError("no such table: t")
    no_table.sqlite_errorcode = 1
    assert storage_fault(sa.exc.OperationalError("x", {}, no_table)) is None
    assert isinstance(storage_fault(sa.exc.OperationalError("x", {}, psycopg.errors.DiskFull("full"))), StorageFull)
    assert isinstance(
        storage_fault(sa.exc.OperationalError("x", {}, psycopg.OperationalError("refused"))), StorageUnavailable
    )
    unavailable = storage_fault(sa.exc.OperationalError("x", {}, psycopg.errors.AdminShutdown("bye")))
    assert isinstance(unavailable, StorageUnavailable)
    assert ("grpc-retry-pushback-ms", "1000") in unavailable.trailing
    assert "safe to retry" in str(unavailable)


def test_a_store_fault_fails_calls_fast_holds_records_and_recovers_by_probe(engine: sa.engine.Engine) -> None:
    """After a full-disk commit the writer is unhealthy: submits fail at once, records are held; the probe
    finds the store again, health hooks hear both changes, and held records are committed."""

    async def run() -> tuple[list[bool], type[object], type[object], bool, int]:
        with engine.begin() as conn:
            writer = Writer(engine, AuditLog.open(conn), probe_interval=0.05)
        heard: list[bool] = []
        writer.on_health.append(heard.append)
        writer.start()
        first = await asyncio.gather(writer.submit(DiskFull()), return_exceptions=True)
        healthy_after_fault = writer.healthy
        during = await asyncio.gather(writer.submit(Audit("refused fast")), return_exceptions=True)
        writer.submit_nowait(Audit("held"))
        await writer.record(Audit("recorded later"))
        for _ in range(100):
            if writer.healthy:
                break
            await asyncio.sleep(0.02)
        after = await writer.submit(Audit("after"))
        await writer.stop()
        assert not healthy_after_fault
        return heard, type(first[0]), type(during[0]), writer.healthy, after

    heard, first, during, healthy, after = asyncio.run(run())
    assert first is StorageFull
    assert during is StorageFull
    assert heard == [False, True]
    assert healthy
    with engine.connect() as conn:
        events = [r[0] for r in conn.execute(sa.text("SELECT event FROM audit_entries ORDER BY leaf_index"))]
    assert events == ["held", "recorded later", "after"]
    assert after == 2


def test_committed_batches_reach_the_database_file_without_a_checkpoint_on_the_commit_path(
    engine: sa.engine.Engine, tmp_path: Path
) -> None:
    """A few commits (far below SQLite's 1,000-page automatic checkpoint) are copied from the WAL into
    the database file by the writer's background checkpoint: the file alone, without its WAL, holds them."""

    async def run() -> None:
        writer = _writer(engine)
        writer.start()
        for i in range(5):
            await writer.submit(Audit(f"e{i}"))
        await asyncio.sleep(0.6)  # past the checkpoint interval; the writer is idle meanwhile
        copy = tmp_path / "file-alone.db"
        copy.write_bytes((tmp_path / "w.db").read_bytes())  # the WAL is not copied
        await writer.stop()
        alone = sqlite3.connect(copy)
        try:
            assert alone.execute("SELECT count(*) FROM audit_entries").fetchone()[0] == 5
        finally:
            alone.close()

    asyncio.run(run())
