"""The database-backed audit log on SQLite and PostgreSQL: appends, transactions, proofs, reads."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import SQLModel

from broker.audit import AUDIT_TABLES, AuditEvent, AuditLog, AuditRecord, CheckpointRecord, CheckpointSigner
from broker.errors import InvalidRequest, NotFound
from broker.protocol import _merkle, _note

POSTGRES_URL = os.environ.get("ISB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _postgres_engine() -> Iterator[Engine]:
    schema = f"audit_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError:
        admin.dispose()
        pytest.skip("PostgreSQL is not reachable")
    engine = create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh database with the audit tables: a SQLite file, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
        SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
        yield engine
        engine.dispose()
        return
    for engine in _postgres_engine():
        SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
        yield engine


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate(), "isb.test/audit")


def event(i: int, agency: str = "FR-CUSTOMS", kind: str = "envelope.accepted") -> AuditEvent:
    return AuditEvent(
        event=kind,
        actor=f"spiffe://isb.test/agency/{agency}",
        time=T0 + timedelta(seconds=i),
        message_id=f"msg-{i}",
        agency=agency,
        fields={"digest": f"{i:064x}"},
    )


def append_batch(engine: Engine, log: AuditLog, events: list[AuditEvent]) -> list[int]:
    with engine.begin() as conn:
        indices = log.append(conn, events)
    log.commit()
    return indices


def leaf_hashes(engine: Engine, log: AuditLog) -> list[bytes]:
    with engine.connect() as conn:
        return [r.leaf_hash for r in log.export(conn, 0, log.size) if isinstance(r, AuditRecord)]


def test_appends_across_transactions_get_dense_indices(engine: Engine) -> None:
    """Batches in separate transactions continue the index sequence and the root matches the reference."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    assert append_batch(engine, log, [event(0), event(1), event(2)]) == [0, 1, 2]
    assert append_batch(engine, log, [event(3)]) == [3]
    assert append_batch(engine, log, [event(i) for i in range(4, 40)]) == list(range(4, 40))
    assert log.size == 40
    assert log.root() == _merkle.root_from_leaves(leaf_hashes(engine, log))


def test_rolled_back_transaction_leaves_no_trace(engine: Engine) -> None:
    """Entries of a rolled-back transaction vanish from the database and from the in-memory tree."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    append_batch(engine, log, [event(0), event(1)])
    root_before = log.root()
    with engine.connect() as conn:
        transaction = conn.begin()
        assert log.append(conn, [event(2), event(3)]) == [2, 3]
        assert log.staged_size == 4
        transaction.rollback()  # the state change failed
    log.rollback()
    assert (log.size, log.staged_size, log.root()) == (2, 2, root_before)
    assert append_batch(engine, log, [event(4)]) == [2]
    with engine.connect() as conn:
        assert log.query(conn).records[-1].message_id == "msg-4"
    assert log.root() == _merkle.root_from_leaves(leaf_hashes(engine, log))


def test_reopened_log_has_the_same_size_and_root_and_continues(engine: Engine) -> None:
    """A log opened again from the database continues exactly where the first left off."""
    with engine.connect() as conn:
        first = AuditLog.open(conn)
    append_batch(engine, first, [event(i) for i in range(27)])
    with engine.connect() as conn:
        second = AuditLog.open(conn)
    assert (second.size, second.root()) == (27, first.root())
    append_batch(engine, second, [event(i) for i in range(27, 70)])
    assert second.root() == _merkle.root_from_leaves(leaf_hashes(engine, second))


def test_proofs_from_the_database_verify(engine: Engine) -> None:
    """Inclusion proofs of every entry and consistency proofs of every pair of sizes verify."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    for start in range(0, 45, 9):
        append_batch(engine, log, [event(i) for i in range(start, start + 9)])
    leaves = leaf_hashes(engine, log)
    roots = [_merkle.root_from_leaves(leaves[:n]) for n in range(len(leaves) + 1)]
    with engine.connect() as conn:
        for size in (1, 2, 7, 8, 9, 16, 17, 31, 32, 33, 45):
            for index in range(size):
                proof = log.inclusion_proof(conn, index, size)
                _merkle.verify_inclusion(leaves[index], index, size, proof, roots[size])
        for second in range(1, 46):
            for first in range(0, second + 1):
                proof = log.consistency_proof(conn, first, second)
                _merkle.verify_consistency(first, second, roots[first], roots[second], proof)


def test_proof_beyond_the_log_is_refused(engine: Engine) -> None:
    """Asking for a tree larger than the log is an invalid request."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    append_batch(engine, log, [event(i) for i in range(5)])
    with engine.connect() as conn, pytest.raises(InvalidRequest, match="larger than the log"):
        log.inclusion_proof(conn, 1, 6)
    with engine.connect() as conn, pytest.raises(InvalidRequest):
        log.inclusion_proof(conn, 5, 5)


def test_signed_checkpoint_is_stored_and_verifies(engine: Engine, signer: CheckpointSigner) -> None:
    """A checkpoint is signed over the current root, stored, and verifies with the public key."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    append_batch(engine, log, [event(i) for i in range(11)])
    with engine.begin() as conn:
        record = log.sign_checkpoint(conn, signer, T0)
    with engine.connect() as conn:
        assert log.latest_checkpoint(conn) == record
        assert log.checkpoint(conn, 11) == record
    checkpoint = _note.verify_checkpoint(record.note, signer.key_name, signer.public_key)
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == ("isb.test/audit", 11, log.root())
    assert checkpoint.time == T0


def test_checkpoint_of_an_unchanged_log_is_reused(engine: Engine, signer: CheckpointSigner) -> None:
    """Signing again without new entries returns the existing checkpoint instead of a duplicate."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    append_batch(engine, log, [event(0)])
    with engine.begin() as conn:
        first = log.sign_checkpoint(conn, signer, T0)
    with engine.begin() as conn:
        assert log.sign_checkpoint(conn, signer, T0 + timedelta(seconds=5)) == first


def test_missing_checkpoint_is_not_found(engine: Engine) -> None:
    """A checkpoint size that was never signed is NotFound; no checkpoint at all is None."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
        assert log.latest_checkpoint(conn) is None
        with pytest.raises(NotFound):
            log.checkpoint(conn, 3)


def test_a_second_writer_collides_and_can_recover(engine: Engine) -> None:
    """Two appenders cannot both write an index: the loser fails, rolls back, reopens and continues."""
    with engine.connect() as conn:
        winner = AuditLog.open(conn)
        loser = AuditLog.open(conn)
    append_batch(engine, winner, [event(0), event(1)])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        loser.append(conn, [event(99)])
    loser.rollback()
    assert loser.size == 0
    with engine.connect() as conn:
        loser = AuditLog.open(conn)
    assert append_batch(engine, loser, [event(2)]) == [2]


def test_query_filters_and_paginates(engine: Engine) -> None:
    """Filters combine; pages follow `next_index` until it is None."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    events = [event(i, agency="DE-BKA" if i % 3 == 0 else "FR-CUSTOMS") for i in range(30)]
    events.append(event(30, kind="delivery.delivered", agency="DE-BKA"))
    append_batch(engine, log, events)
    with engine.connect() as conn:
        seen: list[int] = []
        cursor: int | None = 0
        while cursor is not None:
            page = log.query(conn, agency="DE-BKA", event="envelope.accepted", start_index=cursor, limit=4)
            seen += [r.index for r in page.records]
            cursor = page.next_index
        assert seen == list(range(0, 30, 3))
        window = log.query(conn, since=T0 + timedelta(seconds=5), until=T0 + timedelta(seconds=8))
        assert [r.index for r in window.records] == [5, 6, 7]
        by_message = log.query(conn, message_id="msg-30").records
        assert [(r.index, r.event, r.agency) for r in by_message] == [(30, "delivery.delivered", "DE-BKA")]
        assert by_message[0].time == T0 + timedelta(seconds=30)


def test_export_places_each_checkpoint_after_the_entries_it_covers(engine: Engine, signer: CheckpointSigner) -> None:
    """Export yields entries in order with checkpoints right after their last entry, up to the latest."""
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    for batch in ([0, 1, 2], [3, 4], [5, 6, 7, 8]):
        with engine.begin() as conn:
            log.append(conn, [event(i) for i in batch])
            log.sign_checkpoint(conn, signer, T0)
        log.commit()
    append_batch(engine, log, [event(9)])  # not yet covered by a checkpoint
    with engine.connect() as conn:
        items = list(log.export(conn))
    layout = [f"e{i.index}" if isinstance(i, AuditRecord) else f"c{i.tree_size}" for i in items]
    assert layout == ["e0", "e1", "e2", "c3", "e3", "e4", "c5", "e5", "e6", "e7", "e8", "c9"]
    assert all(isinstance(i, AuditRecord | CheckpointRecord) for i in items)
