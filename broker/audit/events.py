"""What one audit entry records, and its canonical bytes (the bytes that are hashed into the leaf).

An entry records metadata and digests, never plaintext (DESIGN.md section 8). Its bytes are
canonical JSON: keys sorted, no whitespace, UTF-8, integers only (no floats, whose text form is
ambiguous), `null` fields left out. The entry's own log index is part of it, so an entry names its
position: an entry moved, dropped or duplicated in an export no longer matches where it stands.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from broker.errors import VerificationError

ENTRY_VERSION = 1

FieldValue = str | int | list[str] | tuple[str, ...]
"""A field of an entry: a digest, reason, count, or a list of agency ids."""

# A key bundle's publication: its entry carries `bundle_sha256`, which the SDK checks against the bundle the
# directory serves (docs/protocol.md section 18.4).
KEYBUNDLE_PUBLISHED = "keybundle.published"
# A certificate's issuance and revocation: one name for the audit entry and for the log line.
CERTIFICATE_ISSUED = "certificate.issued"
CERTIFICATE_REVOKED = "certificate.revoked"

# An index no event holds (docs/protocol.md section 24.3): reserved by a transaction that did not use it or
# did not commit, filled so that the tree stays dense.
VOID_EVENT = "audit.void"

# The events the broker logs (DESIGN.md section 8). Not enforced: a new kind of event must not need a
# change here to be logged, but using these names keeps queries stable.
KNOWN_EVENTS = frozenset(
    {
        "envelope.accepted",
        "envelope.recalled",
        "request.rejected",
        "delivery.delivered",
        "receipt.received",
        "delivery.expired",
        "watchlist.created",
        "watchlist.published",
        "watchlist.delivered",
        "agency.registered",
        KEYBUNDLE_PUBLISHED,
        CERTIFICATE_ISSUED,
        CERTIFICATE_REVOKED,
        "policy.changed",
        "audit.query",
        "directory.lookup",
        "retention.purged",
        VOID_EVENT,
        "watchlist.review_notice",
        "watchlist.review_renewed",
    }
)


def justification_fields(legal_basis: str, case_reference: str, operator: str, asserted_by: str) -> dict[str, str]:
    """The justification members of a disclosure's or consultation's entry (docs/protocol.md section 22, Justification).

    Only the fields given appear. The operator is recorded as supplied, with `operator_asserted_by`
    naming the caller that asserted it: the broker cannot verify who sat at the agency's terminal.
    """
    fields = {"legal_basis": legal_basis, "case_reference": case_reference}
    if operator:
        fields |= {"operator": operator, "operator_asserted_by": asserted_by}
    return {name: value for name, value in fields.items() if value}


Consultation = Callable[[str, str, str, str], dict[str, str]]
"""Checks a consultation's justification (caller, legal basis, case reference, operator) and returns
its `justification_fields` (the broker's: `broker.delivery.routing.Router.consultation`)."""


def _check_field(name: str, value: object) -> FieldValue:
    # bool is an int subclass; a JSON true/false would still be unambiguous, but we keep one type per
    # meaning so that entries stay easy to compare.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    kind = type(value).__name__
    raise TypeError(f"audit field {name!r} must be a str, an int or a list of str, not {kind}")


# One encoder for every entry (json.dumps with options builds a new one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=16)  # the entries of one writer batch share one time: format it once
def _format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened: `event` (e.g. "envelope.accepted"), who did it, when, whom it concerns."""

    event: str
    actor: str
    """SPIFFE id or agency id of the caller that caused the event."""
    time: datetime
    message_id: str | None = None
    agency: str | None = None
    """The agency the entry concerns (sender, recipient, subject of a key or certificate), for queries."""
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    """Digests, reasons, recipients, counts: never plaintext."""

    def __post_init__(self) -> None:
        """Refuse values that have no canonical form."""
        if not self.event or not self.actor:
            raise ValueError("an audit event needs an event name and an actor")
        if self.time.tzinfo is None:
            raise TypeError("audit event time must be timezone-aware")
        checked = {str(k): _check_field(str(k), v) for k, v in self.fields.items()}
        object.__setattr__(self, "fields", MappingProxyType(checked))

    @property
    def time_us(self) -> int:
        """The time as integer microseconds since the Unix epoch (how the database stores it)."""
        delta = self.time - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def to_entry_bytes(self, index: int) -> bytes:
        """The canonical JSON of this event as the entry at log position `index`."""
        document: dict[str, Any] = {
            "v": ENTRY_VERSION,
            "index": index,
            "event": self.event,
            "actor": self.actor,
            "time": _format_time(self.time),
        }
        if self.message_id is not None:
            document["message_id"] = self.message_id
        if self.agency is not None:
            document["agency"] = self.agency
        if self.fields:
            document["fields"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.fields.items()}
        return _CANONICAL.encode(document).encode()

    @classmethod
    def from_entry_bytes(cls, entry: bytes) -> tuple[int, AuditEvent]:
        """Parse an entry back into its index and event; raise `VerificationError` if it is not one."""
        try:
            document = json.loads(entry.decode("utf-8"))
            if not isinstance(document, dict) or document.get("v") != ENTRY_VERSION:
                raise VerificationError("audit entry is not a version 1 entry object")
            index = document["index"]
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise VerificationError("audit entry index is not a non-negative integer")
            when = datetime.strptime(document["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            event = cls(
                event=document["event"],
                actor=document["actor"],
                time=when,
                message_id=document.get("message_id"),
                agency=document.get("agency"),
                fields=document.get("fields", {}),
            )
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise VerificationError(f"audit entry is malformed: {exc}") from exc
        if event.to_entry_bytes(index) != entry:
            raise VerificationError(f"audit entry {index} is not in canonical form")
        return index, event
