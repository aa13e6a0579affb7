"""The group-commit writer, on a real SQLite database: batching, audit indices, refusals, failures."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from broker.audit import AuditEvent, AuditLog
from broker.errors import InvalidRequest, StorageUnavailable
from broker.store.db import create_engine
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
        outcomes = await asyncio.gather(writer.submit(Audit("a")), writer.submit(Refuse()),
                                        writer.submit(Audit("b")), return_exceptions=True)
        await writer.stop()
        return list(outcomes)

    first, refused, last = asyncio.run(run())
    assert isinstance(refused, InvalidRequest)
    assert isinstance(first, int)
    assert isinstance(last, int)
    with engine.connect() as conn:
        events = [r[0] for r in conn.execute(sa.text("SELECT event FROM audit_entries ORDER BY leaf_index"))]
    assert events == ["a", "request.rejected", "b"]


def test_storage_failure_rolls_back_the_batch_and_the_log_continues_consistently(engine: sa.engine.Engine) -> None:
    """A batch whose SQL fails stores nothing, answers UNAVAILABLE, and the next batch reuses the indices."""
    async def run() -> tuple[list[object], int]:
        writer = _writer(engine)
        writer.start()
        failed = await asyncio.gather(writer.submit(Audit("lost")), writer.submit(Explode()), return_exceptions=True)
        after = await writer.submit(Audit("kept"))
        await writer.stop()
        return list(failed), after

    failed, after = asyncio.run(run())
    assert all(isinstance(f, StorageUnavailable) for f in failed)
    assert after == 0
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT event FROM audit_entries"))] == ["kept"]
