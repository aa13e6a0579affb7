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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit import AuditEvent, AuditLog, CheckpointSigner
from broker.protocol import _merkle
from broker.store.db import create_engine
from broker.store.schema import upgrade_schema
from broker.store.writer import Batch, Writer
from tests.e2e.broker_support import Database

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


async def _tree_reaches(database: Database, size: int, seconds: float = 10.0) -> None:
    """Wait until the stored tree size is at least `size` (the writers integrate on their own)."""
    for _ in range(int(seconds / 0.05)):
        if database.scalar("SELECT tree_size FROM audit_tree") >= size:
            return
        await asyncio.sleep(0.05)


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
    are dense, their rounds integrate all of them, and the checkpoints the two replicas sign (one
    half-way, one at the end) are consistent."""

    async def run() -> tuple[list[int], Any, Any]:
        first, second = (_writer(e, f"node-{n}", integrate_interval=0.01) for n, e in enumerate(engines))
        first.start()
        second.start()
        answered = await asyncio.gather(*((first if i % 2 else second).submit(Audit(f"e{i}")) for i in range(150)))
        earlier = await _sign(second, signer)()
        answered += await asyncio.gather(
            *((first if i % 2 else second).submit(Audit(f"e{i}")) for i in range(150, 300))
        )
        await _tree_reaches(database, 300)  # the writers' own integration rounds, no checkpoint asked yet
        assert database.scalar("SELECT tree_size FROM audit_tree") == 300
        checkpoint = await _sign(first, signer)()
        await first.stop()
        await second.stop()
        return list(answered), earlier, checkpoint

    answered, earlier, checkpoint = asyncio.run(run())
    assert earlier.tree_size >= 150
    with engines[0].connect() as conn:
        proof = AuditLog.open(conn).consistency_proof(conn, earlier.tree_size, checkpoint.tree_size)
    _merkle.verify_consistency(earlier.tree_size, checkpoint.tree_size, earlier.root_hash, checkpoint.root_hash, proof)
    assert len(set(answered)) == 300
    entries = _assert_one_dense_tree(database, checkpoint.tree_size, checkpoint.root_hash)
    by_index = {i: event for i, event, _ in entries}
    assert all(by_index[index] == f"e{i}" for i, index in enumerate(answered))
    assert checkpoint.tree_size == len(entries) == database.scalar("SELECT tree_size FROM audit_tree")


_CRASHING_INTEGRATOR = """
import sys, time, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    # Half a round, the tree's row locked: a node that does not belong to the tree, the size moved on.
    conn.execute("INSERT INTO audit_nodes (level, node_index, hash) VALUES (7, 123456, %s)", (bytes(32),))
    size = conn.execute("UPDATE audit_tree SET tree_size = tree_size + 1000 RETURNING tree_size").fetchone()[0]
    print("holding", size, flush=True)
    time.sleep(120)
"""


def test_an_integrator_killed_holding_the_lock_loses_nothing(
    database: Database, engines: list[sa.engine.Engine], signer: CheckpointSigner
) -> None:
    """A replica's integrator process is killed (SIGKILL) in the middle of a round, the tree's row
    locked: the other replica's sends are answered meanwhile (its rounds give up on the lock instead
    of stalling its writer), its rounds take over once the database has rolled the dead one back,
    and the checkpoint covers every answered entry, densely, with none of the dead round's writes."""
    integrator = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_INTEGRATOR, database.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert integrator.stdout is not None
        assert integrator.stdout.readline().split()[0] == "holding"

        async def run() -> tuple[list[int], int, Any]:
            writer = _writer(engines[0], "node-2", integrate_interval=0.01)
            writer.start()
            answered = list(await asyncio.gather(*(writer.submit(Audit(f"e{i}")) for i in range(50))))
            await asyncio.sleep(0.3)
            while_held = database.scalar("SELECT tree_size FROM audit_tree")
            # The rounds that gave up on the lock left no connection in autocommit: a batch that
            # fails still rolls back whole (its entry is not stored, its index is voided).
            with pytest.raises(Exception, match="could not store"):
                await writer.submit(AuditThenFail())
            os.kill(integrator.pid, signal.SIGKILL)
            integrator.wait(10)
            await _tree_reaches(database, 51)
            checkpoint = await _sign(writer, signer)()
            await writer.stop()
            return answered, while_held, checkpoint

        answered, while_held, checkpoint = asyncio.run(run())
    finally:
        if integrator.poll() is None:
            integrator.kill()
    assert while_held == 0  # nothing integrated while the dead one held the lock, nothing lost either
    assert sorted(answered) == list(range(50))
    assert checkpoint.tree_size == 51
    entries = _assert_one_dense_tree(database, 51, checkpoint.root_hash)
    assert [(e, d["fields"]) for _, e, d in entries[50:]] == [("audit.void", {"reason": "rolled_back"})]
    assert database.scalar("SELECT count(*) FROM audit_nodes WHERE level = 7") == 0


def test_an_index_reserved_and_never_committed_is_voided_after_the_grace(
    database: Database, engines: list[sa.engine.Engine], signer: CheckpointSigner
) -> None:
    """A replica reserved an index and died before committing it: integration stops at the gap,
    then after the grace the integrator fills it with an `abandoned` void entry and goes on."""

    async def run() -> tuple[int, int, Any]:
        writer = _writer(engines[0], "node-1", integrate_interval=0.01, void_grace_seconds=0.5)
        writer.start()
        await asyncio.gather(*(writer.submit(Audit(f"before{i}")) for i in range(5)))
        with engines[1].connect() as conn:  # the dead replica's reservation
            lost = int(conn.execute(sa.text("SELECT nextval('audit_index_seq')")).scalar_one())
        await asyncio.gather(*(writer.submit(Audit(f"after{i}")) for i in range(5)))
        await asyncio.sleep(0.2)
        stopped_at = database.scalar("SELECT tree_size FROM audit_tree")
        await _tree_reaches(database, 11)
        checkpoint = await _sign(writer, signer)()
        await writer.stop()
        return lost, stopped_at, checkpoint

    lost, stopped_at, checkpoint = asyncio.run(run())
    assert (lost, stopped_at) == (5, 5)
    assert checkpoint.tree_size == 11
    entries = _assert_one_dense_tree(database, 11, checkpoint.root_hash)
    index, event, document = entries[5]
    assert (index, event) == (5, "audit.void")
    assert document["fields"] == {"reason": "abandoned"}
    assert document["actor"] == "broker:node-1"
    assert [e for _, e, _ in entries[6:]] == [f"after{i}" for i in range(5)]


def test_rolled_back_and_unused_reservations_are_voided_at_once(
    database: Database, engines: list[sa.engine.Engine], signer: CheckpointSigner
) -> None:
    """A batch that rolls back voids the index it had reserved (`rolled_back`), and a batch that
    reserved more than it logged voids the rest (`unused`), without waiting for the grace."""

    async def run() -> tuple[int, Any]:
        writer = _writer(engines[0], "node-1", integrate_interval=0.01, void_grace_seconds=3600)
        writer.start()
        first = await writer.submit(Audit("first"))
        with pytest.raises(Exception, match="could not store"):
            await writer.submit(AuditThenFail())
        used = await writer.submit(ReserveMore())
        await writer.submit(Audit("last"))
        await _tree_reaches(database, 6)
        checkpoint = await _sign(writer, signer)()
        await writer.stop()
        assert first == 0
        return used, checkpoint

    used, checkpoint = asyncio.run(run())
    assert used == 2
    entries = _assert_one_dense_tree(database, 6, checkpoint.root_hash)
    assert [(e, d.get("fields", {}).get("reason")) for _, e, d in entries] == [
        ("first", None),
        ("audit.void", "rolled_back"),
        ("one.of.three", None),
        ("audit.void", "unused"),
        ("audit.void", "unused"),
        ("last", None),
    ]
    assert checkpoint.tree_size == 6


def test_a_late_commit_and_a_void_cannot_both_hold_an_index(
    database: Database, engines: list[sa.engine.Engine]
) -> None:
    """Whichever of an entry and a void commits first holds the index; the other is not stored."""
    with engines[0].begin() as conn:
        log = AuditLog.open(conn)
        log.void(conn, [0], "broker:node-1", "abandoned", dt.datetime.now(dt.UTC))
    with engines[1].connect() as conn, pytest.raises(sa.exc.IntegrityError), conn.begin():
        AuditLog.open(conn).stage(conn, [_event("too.late")], [0])
    with engines[0].begin() as conn:  # and a void after the entry changes nothing
        AuditLog.open(conn).stage(conn, [_event("in.time")], [1])
    with engines[1].begin() as conn:
        AuditLog.open(conn).void(conn, [1], "broker:node-2", "abandoned", dt.datetime.now(dt.UTC))
    assert [e for _, e, _ in _entries(database)] == ["audit.void", "in.time"]
