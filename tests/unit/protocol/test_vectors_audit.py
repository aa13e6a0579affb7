"""The audit vectors: canonical entries and leaf hashes, checkpoints and signed notes, proofs, exports."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.audit.events import AuditEvent
from broker.errors import VerificationError
from broker.protocol import _merkle, _note
from clients.audit.verify import verify_export
from tests.unit.protocol.vector_support import VECTOR_DIR, load, unhex

ENTRIES = load("audit-entries")
VOIDS = load("audit-void")
CHECKPOINTS = load("checkpoint")
LOG = load("audit-log")


def _audit_key(block: dict[str, Any]) -> Ed25519PublicKey:
    key = load_pem_public_key(block["audit_pub_pem"].encode())
    assert isinstance(key, Ed25519PublicKey)
    return key


def _verify(note: str, block: dict[str, Any]) -> _note.Checkpoint:
    checkpoint = _note.verify_checkpoint(note.encode(), block["key_name"], _audit_key(block))
    if checkpoint.origin != block["origin"]:
        raise VerificationError(f"checkpoint is for log {checkpoint.origin!r}")
    return checkpoint


def test_audit_entry_vectors_are_canonical() -> None:
    """Each entry parses, re-encodes to the same bytes at its index, and hashes to the recorded leaf."""
    for case in ENTRIES["valid"]:
        entry = unhex(case["entry_hex"])
        assert entry.decode() == case["entry_utf8"]
        index, event = AuditEvent.from_entry_bytes(entry)
        assert index == case["index"]
        assert event.to_entry_bytes(index) == entry
        assert _merkle.leaf_hash(entry).hex() == case["leaf_hash_hex"]


@pytest.mark.parametrize("case", ENTRIES["must_be_refused"], ids=lambda c: c["description"])
def test_audit_entry_vectors_refused(case: dict[str, Any]) -> None:
    """Each entry that is not canonical JSON of a version-1 entry is refused."""
    with pytest.raises(VerificationError):
        AuditEvent.from_entry_bytes(case["entry_utf8"].encode())


def test_void_entry_vectors_are_canonical_entries() -> None:
    """Each void entry (section 24.3) is an ordinary canonical entry: event audit.void, its reason."""
    for case in VOIDS["valid"]:
        entry = unhex(case["entry_hex"])
        assert entry.decode() == case["entry_utf8"]
        index, event = AuditEvent.from_entry_bytes(entry)
        assert (index, event.event, dict(event.fields)) == (case["index"], "audit.void", {"reason": case["reason"]})
        assert event.to_entry_bytes(index) == entry
        assert _merkle.leaf_hash(entry).hex() == case["leaf_hash_hex"]


@pytest.mark.parametrize("case", VOIDS["must_be_refused"], ids=lambda c: c["description"])
def test_void_entry_vectors_refused(case: dict[str, Any]) -> None:
    """A void entry not in canonical form, or whose index is not its position, is invalid."""
    try:
        index, _ = AuditEvent.from_entry_bytes(case["entry_utf8"].encode())
    except VerificationError:
        return
    assert index != case["position"]


def test_audit_key_forms_agree() -> None:
    """The PEM key, the raw key, the key id and the vkey of the vectors name the same key."""
    block = CHECKPOINTS["audit_key"]
    key = _audit_key(block)
    assert key.public_bytes_raw().hex() == block["ed25519_public_key_hex"]
    assert _note.key_id(block["key_name"], key).hex() == block["key_id_hex"]
    name, parsed = _note.parse_vkey(block["vkey"])
    assert (name, parsed.public_bytes_raw()) == (block["key_name"], key.public_bytes_raw())


def test_checkpoint_vectors_verify() -> None:
    """Each valid checkpoint verifies, with the recorded size, root and timestamp."""
    for case in CHECKPOINTS["valid"]:
        checkpoint = _verify(case["note"], CHECKPOINTS["audit_key"])
        assert (checkpoint.size, checkpoint.root.hex()) == (case["tree_size"], case["root_hash_hex"])
        assert checkpoint.time is not None
        assert int(checkpoint.time.timestamp()) == case["timestamp"]
        assert case["note"].startswith(case["text"] + "\n")


@pytest.mark.parametrize("case", CHECKPOINTS["must_be_refused"], ids=lambda c: c["description"])
def test_checkpoint_vectors_refused(case: dict[str, Any]) -> None:
    """Each note under must_be_refused fails verification as a checkpoint of the vectors' log."""
    with pytest.raises(VerificationError):
        _verify(case["note"], CHECKPOINTS["audit_key"])


def test_log_vector_roots_and_checkpoints() -> None:
    """The roots recompute from the entries and the checkpoints sign them."""
    leaves = [_merkle.leaf_hash(unhex(e)) for e in LOG["entries_hex"]]
    assert [h.hex() for h in leaves] == LOG["leaf_hashes_hex"]
    assert [_merkle.root_from_leaves(leaves[:n]).hex() for n in range(len(leaves) + 1)] == LOG["roots_hex"]
    for recorded in LOG["checkpoints"]:
        checkpoint = _verify(recorded["note"], LOG["audit_key"])
        assert checkpoint.root.hex() == LOG["roots_hex"][recorded["tree_size"]]


def test_inclusion_proof_vectors_verify() -> None:
    """Every recorded inclusion proof verifies against its root."""
    for case in LOG["inclusion"]:
        _merkle.verify_inclusion(
            unhex(case["leaf_hash_hex"]),
            case["index"],
            case["tree_size"],
            [unhex(h) for h in case["proof_hex"]],
            unhex(case["root_hash_hex"]),
        )


def test_consistency_proof_vectors_verify() -> None:
    """Every recorded consistency proof verifies between its two roots."""
    for case in LOG["consistency"]:
        _merkle.verify_consistency(
            case["first"],
            case["second"],
            unhex(case["first_root_hex"]),
            unhex(case["second_root_hex"]),
            [unhex(h) for h in case["proof_hex"]],
        )


@pytest.mark.parametrize("case", LOG["inclusion_must_fail"], ids=lambda c: c["description"])
def test_inclusion_proof_vectors_refused(case: dict[str, Any]) -> None:
    """Each inclusion proof under inclusion_must_fail does not verify."""
    with pytest.raises(VerificationError):
        _merkle.verify_inclusion(
            unhex(case["leaf_hash_hex"]),
            case["index"],
            case["tree_size"],
            [unhex(h) for h in case["proof_hex"]],
            unhex(case["root_hash_hex"]),
        )


@pytest.mark.parametrize("case", LOG["consistency_must_fail"], ids=lambda c: c["description"])
def test_consistency_proof_vectors_refused(case: dict[str, Any]) -> None:
    """Each consistency proof under consistency_must_fail does not verify."""
    with pytest.raises(VerificationError):
        _merkle.verify_consistency(
            case["first"],
            case["second"],
            unhex(case["first_root_hex"]),
            unhex(case["second_root_hex"]),
            [unhex(h) for h in case["proof_hex"]],
        )


def test_export_vector_verifies() -> None:
    """audit-export.jsonl verifies with the audit key: 7 entries, 2 checkpoints, the recorded root."""
    report = verify_export(VECTOR_DIR / LOG["export"]["file"], _audit_key(LOG["audit_key"]))
    assert (report.entries, report.checkpoints, report.tree_size) == (7, 2, 7)
    assert report.root_hash.hex() == LOG["export"]["root_hash_hex"]
    assert report.unverified_entries == 0


def test_export_vector_with_an_unsigned_tail_reports_it(tmp_path: Path) -> None:
    """An entry after the last checkpoint is not covered by any signature, and the verifier says so."""
    path = tmp_path / "tail.jsonl"
    path.write_text("\n".join(LOG["export_with_unsigned_tail"]["lines"]) + "\n")
    report = verify_export(path, _audit_key(LOG["audit_key"]), allow_unsigned_tail=True)
    assert (report.entries, report.tree_size, report.unverified_entries) == (8, 7, 1)
    # Without the explicit allowance, the unsigned entry is a failure (docs/protocol.md, export files).
    with pytest.raises(VerificationError, match="1 entries after the last checkpoint"):
        verify_export(path, _audit_key(LOG["audit_key"]))


@pytest.mark.parametrize("case", LOG["exports_must_fail"], ids=lambda c: c["description"])
def test_export_vectors_refused(case: dict[str, Any], tmp_path: Path) -> None:
    """Each export under exports_must_fail does not verify."""
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(case["lines"]) + "\n")
    with pytest.raises(VerificationError):
        verify_export(path, _audit_key(LOG["audit_key"]))


def test_export_vector_checkpoints_are_the_log_checkpoints() -> None:
    """The export file carries the log vector's checkpoint notes, byte for byte."""
    lines = (VECTOR_DIR / LOG["export"]["file"]).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    notes = [base64.b64decode(r["note"]).decode() for r in records if r["type"] == "checkpoint"]
    assert notes == [c["note"] for c in LOG["checkpoints"]]
