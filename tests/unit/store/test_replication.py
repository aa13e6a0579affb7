"""Replicas on one PostgreSQL database: the NOTIFY notes of one commit."""

from __future__ import annotations

from broker.store.replication import parse_replica_note, replica_notes


def test_replica_notes_carry_settled_ids_under_postgresql_payload_limit() -> None:
    """New deliveries are one `node|agency` note; settled ids are split into notes under 8000 bytes and parse back."""
    ids = [f"0190a0b0-0000-7000-8000-{i:012d}" for i in range(500)]
    notes = replica_notes("node-2", {"DE-BKA"}, {"FR-CUSTOMS": ids})
    assert notes[0] == "node-2|DE-BKA"
    assert parse_replica_note(notes[0]) == ("node-2", "DE-BKA", None)
    assert all(len(note.encode()) < 8000 for note in notes)
    back = [m for note in notes[1:] for m in (parse_replica_note(note)[2] or [])]
    assert back == ids
    assert {parse_replica_note(note)[:2] for note in notes[1:]} == {("node-2", "FR-CUSTOMS")}
