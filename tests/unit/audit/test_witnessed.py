"""The broker picks the largest checkpoint its witness policy accepts for the directory's proofs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, create_engine
from sqlmodel import SQLModel

from broker.audit import AUDIT_TABLES, AuditEvent, AuditLog, CheckpointSigner
from broker.audit.witnessed import WitnessedCheckpoints
from broker.protocol import _cosignature, _merkle, _note
from broker.protocol.witness_policy import parse_policy

ORIGIN = "isb.test/audit"
LOG_KEY = Ed25519PrivateKey.generate()
WITNESS_KEY = Ed25519PrivateKey.generate()
WITNESS = "w.test/w1"
POLICY = parse_policy(
    f"log {_note.encode_vkey(ORIGIN, LOG_KEY.public_key())}\n"
    f"witness w1 {_cosignature.encode_cosigner_vkey(WITNESS, WITNESS_KEY.public_key())}\nquorum w1\n".encode()
)


def _engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
    return engine


def _grow(engine: Engine, log: AuditLog, n: int, *, cosign: bool) -> int:
    with engine.begin() as conn:
        log.append(conn, [AuditEvent("audit.query", "spiffe://isb.test/auditor/a", datetime.now(UTC))] * n)
    log.commit()
    with engine.begin() as conn:
        record = log.sign_checkpoint(conn, CheckpointSigner(LOG_KEY, ORIGIN))
        if cosign:
            text = record.note.decode().split("\n\n")[0] + "\n"
            log.attach_cosignatures(conn, record.tree_size, [_cosignature.cosign(text, WITNESS, WITNESS_KEY, 1)])
    return record.tree_size


def test_the_largest_cosigned_checkpoint_is_chosen_and_proofs_lead_to_it(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    witnessed = WitnessedCheckpoints(lambda: log, POLICY, ORIGIN)
    with engine.connect() as conn:
        assert witnessed.latest(conn) is None
    first = _grow(engine, log, 3, cosign=True)
    _grow(engine, log, 2, cosign=False)  # the witness did not answer: not chosen
    with engine.connect() as conn:
        proofs = witnessed.prove(conn, [1, 4], known_size=2)
    assert proofs is not None
    assert proofs.checkpoint.tree_size == first
    assert set(proofs.publications) == {1}  # entry 4 is after the checkpoint: no proof yet
    publication = proofs.publications[1]
    _merkle.verify_inclusion(
        _merkle.leaf_hash(publication.entry), 1, first, publication.path, proofs.checkpoint.root_hash
    )
    with engine.connect() as conn:
        _merkle.verify_consistency(2, first, _root(log, conn, 2), proofs.checkpoint.root_hash, proofs.consistency)
    later = _grow(engine, log, 1, cosign=True)
    with engine.connect() as conn:
        latest = witnessed.latest(conn)
        # A caller holding more than the broker can prove gets no consistency path (the SDK refuses).
        beyond = witnessed.prove(conn, [], known_size=later + 1)
    assert latest is not None
    assert latest.tree_size == later
    assert beyond is not None
    assert beyond.consistency == []


def _root(log: AuditLog, conn: Connection, size: int) -> bytes:
    return _merkle.root_from_leaves([r.leaf_hash for r in log.query(conn, limit=size).records])


def test_without_a_policy_the_latest_checkpoint_is_chosen(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    size = _grow(engine, log, 2, cosign=False)
    with engine.connect() as conn:
        latest = WitnessedCheckpoints(lambda: log, None, ORIGIN).latest(conn)
    assert latest is not None
    assert latest.tree_size == size
