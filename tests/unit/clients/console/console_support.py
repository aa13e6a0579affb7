"""A small audit log written straight to an export file: the console's unit tests read it back.

The `log` fixture (conftest.py) builds a `Log`; tests import the names from here, never from conftest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit import AuditEvent
from broker.protocol import _merkle, _note
from clients.audit import ExportWriter

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
ORIGIN = "isb.test/audit"
KEY_NAME = "isb.test/audit"
M1, M2, FWD = (
    "01900000-0000-7000-8000-000000000001",
    "01900000-0000-7000-8000-000000000002",
    "01900000-0000-7000-8000-000000000003",
)


def accepted(
    minute: int,
    message_id: str,
    sender: str,
    recipients: list[str],
    *,
    kind: str = "ALERT",
    tlp: str = "TLP_GREEN",
    references: str = "",
) -> AuditEvent:
    fields: dict[str, str | int | list[str]] = {
        "kind": kind,
        "tlp": tlp,
        "recipients": recipients,
        "addressed": recipients,
        "rule": "dev-exchange",
        "size": 100,
    }
    if references:
        fields["references"] = references
    return AuditEvent(
        event="envelope.accepted",
        actor=f"spiffe://isb.test/agency/{sender}",
        time=T0 + timedelta(minutes=minute),
        message_id=message_id,
        agency=sender,
        fields=fields,
    )


def delivered(minute: int, message_id: str, recipient: str) -> AuditEvent:
    return AuditEvent(
        event="delivery.delivered",
        actor="broker:node-1",
        time=T0 + timedelta(minutes=minute),
        message_id=message_id,
        agency=recipient,
        fields={"recipient": recipient, "attempt": 1},
    )


def receipt(minute: int, message_id: str, recipient: str) -> AuditEvent:
    return AuditEvent(
        event="receipt.received",
        actor=f"spiffe://isb.test/agency/{recipient}",
        time=T0 + timedelta(minutes=minute),
        message_id=message_id,
        agency=recipient,
        fields={"recipient": recipient, "status": "DELIVERED", "receipt_sha256": "00" * 32},
    )


def refused(minute: int, reason: str, status: str = "PERMISSION_DENIED") -> AuditEvent:
    return AuditEvent(
        event="request.rejected",
        actor="spiffe://isb.test/agency/FR-CUSTOMS",
        time=T0 + timedelta(minutes=minute),
        agency="FR-CUSTOMS",
        fields={"rpc": "Send", "reason": reason, "status": status},
    )


def session() -> list[AuditEvent | None]:
    """Events in log order; None marks where a checkpoint is signed."""
    return [
        accepted(0, M1, "FR-CUSTOMS", ["DE-BKA"]),
        delivered(1, M1, "DE-BKA"),
        receipt(2, M1, "DE-BKA"),
        None,
        accepted(3, M2, "FR-CUSTOMS", ["DE-BKA", "NL-FIOD"], kind="REQUEST", tlp="TLP_AMBER"),
        refused(4, "refused by policy (builtin:red-to-named-agencies-only): RED may be addressed only to ..."),
        refused(5, "envelope header signature does not verify", status="INVALID_ARGUMENT"),
        accepted(6, FWD, "DE-BKA", ["NL-FIOD"], references=M1),
        None,
    ]


@dataclass
class Log:
    """The key the log is signed with and a writer of export files."""

    key: Ed25519PrivateKey

    @property
    def vkey(self) -> str:
        return _note.encode_vkey(KEY_NAME, self.key.public_key())

    def write(
        self, path: Path, items: Sequence[AuditEvent | None] | None = None, key: Ed25519PrivateKey | None = None
    ) -> Path:
        """Write `items` (default: `session()`) as an export; None signs a checkpoint (with `key`, default ours)."""
        tree = _merkle.MemoryTree()
        signing = key or self.key
        with path.open("wb") as stream:
            writer = ExportWriter(stream, ORIGIN, KEY_NAME, self.vkey)
            for item in session() if items is None else items:
                if item is None:
                    when = T0 + timedelta(minutes=tree.size)
                    note = _note.sign_checkpoint(
                        ORIGIN, tree.size, tree.root(), KEY_NAME, signing, extensions=(_note.timestamp_extension(when),)
                    )
                    writer.checkpoint(note)
                    continue
                entry = item.to_entry_bytes(tree.size)
                leaf = _merkle.leaf_hash(entry)
                writer.entry(tree.size, entry, leaf)
                tree.append(leaf)
        return path
