"""The console's snapshot of an export: the verdict, each entry's and each checkpoint's own status, proofs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import VerificationError
from broker.protocol import _merkle, _note
from clients.audit import verify_export
from clients.console.snapshot import load_snapshot
from tests.unit.clients.console.console_support import ORIGIN, Log


def _rewrite_entry(path: Path, index: int, old: bytes, new: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    for n, raw in enumerate(lines):
        record = json.loads(raw)
        if record["type"] == "entry" and record["index"] == index:
            entry = base64.b64decode(record["entry"])
            assert old in entry
            record["entry"] = base64.b64encode(entry.replace(old, new)).decode()
            lines[n] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def test_a_good_export_verifies_with_every_checkpoint_verified(log: Log, tmp_path: Path) -> None:
    """No failure, every entry and checkpoint fine, proofs against the last checkpoint."""
    snapshot = load_snapshot(log.write(tmp_path / "a.jsonl"), log.vkey)
    assert snapshot.failure is None
    assert snapshot.origin == ORIGIN
    assert len(snapshot.entries) == 7
    assert snapshot.bad_entries == []
    assert [(c.size, c.verified) for c in snapshot.checkpoints] == [(3, True), (7, True)]
    assert snapshot.verified_size == 7
    assert snapshot.proof_checkpoint is not None
    assert snapshot.proof_checkpoint.size == 7


def test_a_changed_entry_is_named_by_the_verdict_by_itself_and_by_the_checkpoints_after_it(
    log: Log,
    tmp_path: Path,
) -> None:
    """Entry 3 changed (leaf hash kept): the verdict names it, it is marked, the checkpoint before it still verifies."""
    path = log.write(tmp_path / "a.jsonl")
    _rewrite_entry(path, 3, b"REQUEST", b"ALERT")
    snapshot = load_snapshot(path, log.vkey)
    assert snapshot.failure is not None
    assert "entry 3 " in snapshot.failure
    assert [e.index for e in snapshot.bad_entries] == [3]
    first, second = snapshot.checkpoints
    assert first.verified
    assert not second.verified
    assert second.signature_ok
    assert second.problem is not None
    assert "entry 3 does not match" in second.problem
    assert snapshot.verified_size == 3


def test_a_checkpoint_signed_by_another_key_fails_on_its_signature(log: Log, tmp_path: Path) -> None:
    """A checkpoint the auditor's key did not sign is not trusted, and nothing is proven against it."""
    path = log.write(tmp_path / "a.jsonl", key=Ed25519PrivateKey.generate())
    snapshot = load_snapshot(path, log.vkey)
    assert snapshot.failure is not None
    assert [c.signature_ok for c in snapshot.checkpoints] == [False, False]
    assert snapshot.proof_checkpoint is None
    with pytest.raises(VerificationError, match="not covered"):
        snapshot.inclusion_proof(0)


def test_inclusion_proofs_over_the_stored_hashes_verify_against_the_signed_root(log: Log, tmp_path: Path) -> None:
    """Each entry's proof, as handed to the browser, verifies with the RFC 9162 verifier."""
    snapshot = load_snapshot(log.write(tmp_path / "a.jsonl"), log.vkey)
    checkpoint = snapshot.proof_checkpoint
    assert checkpoint is not None
    for entry in snapshot.entries:
        proof = snapshot.inclusion_proof(entry.index)
        _merkle.verify_inclusion(_merkle.leaf_hash(entry.entry), entry.index, checkpoint.size, proof, checkpoint.root)


def test_witness_signatures_are_listed_as_cosigners_without_being_trusted(log: Log, tmp_path: Path) -> None:
    """A second signature line on a checkpoint names its signer; the checkpoint still verifies by our key."""
    path = log.write(tmp_path / "a.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    note = base64.b64decode(record["note"]).decode()
    text = note[: note.rfind("\n\n") + 1]
    witness_line = _note.sign_note(text, "witness.example/w1", Ed25519PrivateKey.generate()).decode().splitlines()[-1]
    record["note"] = base64.b64encode((note + witness_line + "\n").encode()).decode()
    lines[-1] = json.dumps(record).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    snapshot = load_snapshot(path, log.vkey)
    assert snapshot.failure is None
    assert snapshot.checkpoints[-1].cosigners == ("witness.example/w1",)
    assert snapshot.checkpoints[0].cosigners == ()


def test_a_file_that_is_not_an_export_is_refused(log: Log, tmp_path: Path) -> None:
    """No header line: a VerificationError that says so."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"type": "entry"}\n')
    with pytest.raises(VerificationError, match="not an audit export"):
        load_snapshot(path, log.vkey)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_is_a_verification_error_or_a_verdict_agreeing_with_verify_export(
    log: Log,
    tmp_path: Path,
    data: st.DataObject,
) -> None:
    """One byte changed after the header: only VerificationError escapes, and the verdict matches `isb audit verify`."""
    path = log.write(tmp_path / "h.jsonl")
    raw = bytearray(path.read_bytes())
    header_end = raw.index(b"\n") + 1
    at = data.draw(st.integers(header_end, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    path.write_bytes(bytes(raw))
    try:
        snapshot = load_snapshot(path, log.vkey)
    except VerificationError:
        return
    try:
        verify_export(path, log.vkey)
    except VerificationError:
        assert snapshot.failure is not None
    else:
        assert snapshot.failure is None
