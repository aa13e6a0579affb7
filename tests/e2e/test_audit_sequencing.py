"""Audit sequencing across replicas (docs/protocol.md section 24), on a real PostgreSQL database:
writers stage entries at indices from the database's sequence, one integrator at a time folds them
into the tree, and gaps left by transactions that never committed are filled with void entries.

Each `Writer` here is one replica's writer, with its own engine and connections; the crashed
integrator is a separate process killed with SIGKILL while it holds the sequencer lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit import AuditEvent, AuditLog, CheckpointSigner
from broker.errors import InvalidRequest
from broker.protocol import _merkle
from broker.store.db import create_engine
from broker.store.schema import upgrade_schema
from broker.store.writer import Batch, Writer
from tests.e2e.conftest import Database

pytestmark = pytest.mark.usefixtures("postgresql_only")


@pytest.fixture
def postgresql_only(database: Database) -> None:
    if database.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database; SQLite integrates inline (tests/unit/store)")


@pytest.fixture
def engines(database: Database) -> Iterator[list[sa.engine.Engine]]:
    upgrade_schema(database.engine)
    made = [create_engine(database.url) for _ in range(2)]
    yield made
    for engine in made:
        engine.dispose()


def _event(name: str) -> AuditEvent:
    return AuditEvent(event=name, actor="test", time=dt.datetime.now(dt.UTC))


@dataclass
class Audit:
    name: str
    replica_safe = True

    def stage(self, batch: Batch) -> int:
        return batch.audit(_event(self.name))


@dataclass
class ReserveMore:
    """Reserves three indices and uses one: the other two become `unused` voids in its batch."""

    replica_safe = True

    def stage(self, batch: Batch) -> int:
        batch.expect_entries(3)
        return batch.audit(_event("one.of.three"))


@dataclass
class AuditThenFail:
    """Logs an entry, then fails: its batch rolls back after reserving the entry's index."""

    replica_safe = True

    def stage(self, batch: Batch) -> None:
        batch.audit(_event("rolled.back"))
        batch.conn.execute(sa.text("INSERT INTO no_such_table VALUES (1)"))


def _writer(engine: sa.engine.Engine, node: str, **options: Any) -> Writer:
    with engine.begin() as conn:
        return Writer(engine, AuditLog.open(conn), node=node, **options)


def _entries(database: Database) -> list[tuple[int, str, dict[str, Any]]]:
    rows = database.rows("SELECT leaf_index, event, entry FROM audit_entries ORDER BY leaf_index")
    return [(int(i), str(e), json.loads(bytes(entry))) for i, e, entry in rows]


def _sign(writer: Writer, signer: CheckpointSigner) -> Any:
    async def run() -> Any:
        return await writer.run_in_thread(lambda conn: writer.audit_log.sign_checkpoint(conn, signer))

    return run


def _assert_one_dense_tree(database: Database, tree_size: int, root: bytes) -> list[tuple[int, str, dict[str, Any]]]:
    """Every index below `tree_size` holds exactly one canonical entry naming its index, and the
    checkpoint's root is the RFC 9162 root of exactly those entries."""
    entries = _entries(database)
    assert [i for i, _, _ in entries[:tree_size]] == list(range(tree_size))
    assert all(doc["index"] == i for i, _, doc in entries)
    blobs = [bytes(r[0]) for r in database.rows("SELECT entry FROM audit_entries ORDER BY leaf_index")]
    assert _merkle.root_from_leaves([_merkle.leaf_hash(b) for b in blobs[:tree_size]]) == root
    return entries


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate(), origin="isb.test/audit")


def test_two_replicas_stage_concurrently_into_one_dense_tree(
    database: Database, engines: list[sa.engine.Engine], signer: CheckpointSigner
) -> None:
    """Two writers send 300 entries concurrently: every answered index holds its own entry, the indices
    are dense, both integrate (taking turns at the lock) and a checkpoint covers them all."""

    async def run() -> tuple[list[int], Any]:
        first, second = (_writer(e, f"node-{n}", integrate_interval=0.01) for n, e in enumerate(engines))
        first.start()
        second.start()
        answered = await asyncio.gather(
            *((first if i % 2 else second).submit(Audit(f"e{i}")) for i in range(300))
        )
        deadline = time.monotonic() + 10
        while database.scalar("SELECT tree_size FROM audit_tree") < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the writers' own integration rounds, no checkpoint asked yet
        assert database.scalar("SELECT tree_size FROM audit_tree") == 300
        checkpoint = await _sign(first, signer)()
        await first.stop()
        await second.stop()
        return list(answered), checkpoint

    answered, checkpoint = asyncio.run(run())
    assert len(set(answered)) == 300
    entries = _assert_one_dense_tree(database, checkpoint.tree_size, checkpoint.root_hash)
    by_index = {i: event for i, event, _ in entries}
    assert all(by_index[index] == f"e{i}" for i, index in enumerate(answered))
    assert checkpoint.tree_size == len(entries) == database.scalar("SELECT tree_size FROM audit_tree")
