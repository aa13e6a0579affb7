"""Audit events and their canonical entry bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from broker.audit import AuditEvent
from broker.errors import VerificationError

WHEN = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def accepted() -> AuditEvent:
    return AuditEvent(
        event="envelope.accepted",
        actor="spiffe://isb.dev/agency/FR-CUSTOMS",
        time=WHEN,
        message_id="0190f5e2-0000-7000-8000-000000000001",
        agency="FR-CUSTOMS",
        fields={"recipients": ["DE-BKA", "NL-FIOD"], "size": 1234, "ciphertext_sha256": "ab" * 32},
    )


def test_entry_bytes_are_canonical_json() -> None:
    """Keys are sorted, there is no whitespace, and the index is part of the entry."""
    entry = accepted().to_entry_bytes(7)
    document = json.loads(entry)
    assert entry == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["index"] == 7
    assert document["time"] == "2026-05-01T12:00:00.123456Z"
    assert document["fields"]["recipients"] == ["DE-BKA", "NL-FIOD"]


def test_entry_bytes_depend_on_the_index() -> None:
    """The same event at two positions gives two different entries."""
    assert accepted().to_entry_bytes(1) != accepted().to_entry_bytes(2)


def test_times_in_other_zones_are_normalised_to_utc() -> None:
    """An aware time in another zone is written as the same instant in UTC."""
    paris = WHEN.astimezone(timezone(timedelta(hours=2)))
    shifted = AuditEvent(event="audit.query", actor="a", time=paris)
    assert json.loads(shifted.to_entry_bytes(0))["time"] == "2026-05-01T12:00:00.123456Z"


def test_entry_round_trips_through_parsing() -> None:
    """Parsing an entry gives back its index and an equal event."""
    index, event = AuditEvent.from_entry_bytes(accepted().to_entry_bytes(3))
    assert index == 3
    assert event.to_entry_bytes(3) == accepted().to_entry_bytes(3)


def test_non_canonical_entries_are_rejected_on_parse() -> None:
    """An entry with extra whitespace is not the canonical form and is refused."""
    pretty = json.dumps(json.loads(accepted().to_entry_bytes(3)), indent=1).encode()
    with pytest.raises(VerificationError, match="canonical"):
        AuditEvent.from_entry_bytes(pretty)


def test_malformed_entries_raise_verification_error() -> None:
    """Garbage entries surface as VerificationError, never a raw ValueError."""
    for bad in (b"not json", b"[]", b'{"v":1}', b'{"v":1,"index":-1,"event":"x","actor":"y","time":"t"}'):
        with pytest.raises(VerificationError):
            AuditEvent.from_entry_bytes(bad)


def test_naive_times_are_refused() -> None:
    """An event time without a zone is ambiguous and refused."""
    with pytest.raises(TypeError, match="timezone"):
        AuditEvent(event="audit.query", actor="a", time=datetime(2026, 1, 1))


def test_fields_without_a_canonical_form_are_refused() -> None:
    """Floats, booleans and nested objects are not allowed in fields."""
    for value in (1.5, True, {"a": 1}, [1, 2]):
        with pytest.raises(TypeError, match="must be"):
            AuditEvent(event="audit.query", actor="a", time=WHEN, fields={"x": value})  # type: ignore[dict-item]


def test_time_us_is_microseconds_since_the_epoch() -> None:
    """The stored time is exact to the microsecond."""
    assert accepted().time_us == int(datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp()) * 1_000_000 + 123456
