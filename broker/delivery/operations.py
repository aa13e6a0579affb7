"""Writer operations for the message lifecycle. Each stages its rows and its audit entry in the
writer's transaction (see `broker.store.writer`), so state and log never disagree."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
import structlog

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.attachments import tables as attachment_tables
from broker.attachments.blobs import BlobStore
from broker.attachments.operations import attach_to_message, delete_attachments
from broker.audit import AuditEvent, justification_fields, refusals
from broker.errors import STORAGE_FAULTS, AlreadyExists, FailedPrecondition, InvalidRequest, NotFound
from broker.metrics import AUDIT_WRITE_FAILURES
from broker.store import tables
from broker.store.db import bulk_update
from broker.store.writer import Batch, RecordEvent, Writer

log = structlog.get_logger(__name__)

PENDING = broker_pb2.PENDING
IN_FLIGHT = broker_pb2.IN_FLIGHT
ACKNOWLEDGED = broker_pb2.ACKNOWLEDGED
EXPIRED = broker_pb2.EXPIRED
RECALLED = broker_pb2.RECALLED


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of an accepted (or idempotently repeated) send."""

    message_id: str
    accepted_us: int
    audit_index: int
    duplicate: bool
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueuedDelivery:
    """What the dispatcher needs to hand one message to one recipient."""

    message_id: str
    recipient: str
    priority: int
    seq: int
    expires_us: int | None
    accepted_us: int
    envelope: envelope_pb2.Envelope | None  # as received (not re-parsed); None: load when dispatched
    attempts: int = 0
    sender_cert: bytes | None = None  # DER; None: load from the store when dispatched


@dataclass
class AcceptEnvelope:
    """Store an envelope and one delivery per recipient; idempotent on the message id."""

    replica_safe: ClassVar[bool] = True  # row-level writes only: runs beside other replicas' batches

    header: envelope_pb2.Header
    parsed: envelope_pb2.Envelope
    envelope: bytes
    envelope_sha256: bytes
    sender_cert_fingerprint: bytes
    sender_cert_der: bytes
    caller: str
    recipients: tuple[str, ...]  # expanded agency ids
    expansion: dict[str, list[str]]  # group -> members, as recorded in the audit entry
    policy_rule: str
    known_certs: set[bytes]
    on_commit: Callable[[list[QueuedDelivery], str | None], None]
    expires_us: int | None = None
    blobs: BlobStore | None = None  # where a recall deletes the recalled message's attachments

    def stage(self, batch: Batch) -> Accepted:
        h = self.header
        existing = _known_messages(batch).get(h.message_id)
        if existing is not None:
            if existing[0] == self.envelope_sha256:
                return Accepted(h.message_id, existing[2], existing[1], True, self.recipients)
            raise AlreadyExists(
                f"message id {h.message_id} was already accepted with different content; "
                "use a new message id for a new message"
            )
        if h.attachments:  # refused before anything is staged; the caller's refusal scope audits it
            attach_to_message(
                batch, h.sender, h.message_id, [(a.sha256, a.size, a.chunk_size, a.media_type) for a in h.attachments]
            )
        recalled: str | None = None
        if h.kind == envelope_pb2.RECALL:
            recalled = self._stage_recall(batch)
        fields: dict[str, str | int | list[str]] = {
            "envelope_sha256": self.envelope_sha256.hex(),
            "kind": envelope_pb2.Kind.Name(h.kind),
            "tlp": envelope_pb2.Tlp.Name(h.handling.tlp),
            "addressed": list(h.recipients),
            "recipients": list(self.recipients),
            "expansion": [f"{g}={','.join(m)}" for g, m in sorted(self.expansion.items())],
            "rule": self.policy_rule,
            "size": len(self.envelope),
        }
        if h.references:
            # The recalled or forwarded original: so that an auditor can follow a message's forwards.
            fields["references"] = h.references
        fields |= justification_fields(h.legal_basis, h.case_reference, h.operator, h.sender)
        index = batch.audit(
            AuditEvent(
                event="envelope.accepted",
                actor=self.caller,
                time=batch.now,
                message_id=h.message_id,
                agency=h.sender,
                fields=fields,
            )
        )
        # Arrival order, unique across replicas: after its accepted entry's index (+1: above every
        # sequence number of a database whose messages were counted before, docs/protocol.md section 24).
        seq = index + 1
        message_row = {
            "message_id": h.message_id,
            "seq": seq,
            "sender": h.sender,
            "kind": h.kind,
            "priority": h.priority,
            "tlp": h.handling.tlp,
            "references": h.references,
            "accepted_us": batch.now_us,
            "expires_us": self.expires_us,
            "envelope": self.envelope,
            "envelope_sha256": self.envelope_sha256,
            "sender_cert": self.sender_cert_fingerprint,
            "audit_index": index,
        }
        batch.insert(tables.messages, message_row)
        _known_messages(batch)[h.message_id] = (self.envelope_sha256, index, batch.now_us)
        remember_certificate(batch, self.known_certs, self.sender_cert_fingerprint, self.sender_cert_der)
        queued = []
        for recipient in self.recipients:
            batch.insert(
                tables.deliveries,
                {
                    "message_id": h.message_id,
                    "recipient": recipient,
                    "seq": seq,
                    "priority": h.priority,
                    "state": PENDING,
                    "attempts": 0,
                    "updated_us": batch.now_us,
                    "receipt": None,
                    "receipt_signature": None,
                    "receipt_batch": None,
                    "receipt_cert": None,
                },
            )
            queued.append(
                QueuedDelivery(
                    h.message_id,
                    recipient,
                    h.priority,
                    seq,
                    self.expires_us,
                    batch.now_us,
                    self.parsed,
                    0,
                    self.sender_cert_der,
                )
            )
        batch.notify.update(self.recipients)
        batch.after_commit.append(lambda: self.on_commit(queued, recalled))
        return Accepted(h.message_id, batch.now_us, index, False, self.recipients)

    def _stage_recall(self, batch: Batch) -> str:
        target = self.header.references
        row = batch.conn.execute(
            sa.select(tables.messages.c.sender).where(tables.messages.c.message_id == target)
        ).first()
        if row is None:
            raise NotFound(f"RECALL references message {target or '(none)'}, which the broker does not hold")
        if row[0] != self.header.sender:
            raise FailedPrecondition(f"only the original sender may recall message {target}")
        dropped = batch.conn.execute(
            tables.deliveries.update()
            .where(tables.deliveries.c.message_id == target, UNSETTLED)
            .values(state=RECALLED, updated_us=batch.now_us)
        ).rowcount
        batch.audit(
            AuditEvent(
                event="envelope.recalled",
                actor=self.caller,
                time=batch.now,
                message_id=target,
                agency=self.header.sender,
                fields={"recall_message_id": self.header.message_id, "undelivered_dropped": dropped},
            )
        )
        if self.blobs is not None:
            # The recalled message's attachments go with it: no recipient may fetch them any more.
            delete_attachments(
                batch, self.blobs, attachment_tables.attachments.c.message_id == target, "recalled", self.caller
            )
        return target


_EXISTING_MESSAGES = sa.select(
    tables.messages.c.message_id,
    tables.messages.c.envelope_sha256,
    tables.messages.c.audit_index,
    tables.messages.c.accepted_us,
).where(tables.messages.c.message_id.in_(sa.bindparam("ids", expanding=True)))


def _known_messages(batch: Batch) -> dict[str, tuple[bytes, int, int]]:
    """Digest, audit index and acceptance time of every message id this batch sends, known already.

    One query for all the batch's sends (not one per envelope); sends staged in this batch are
    added as they are staged, so a second send of one id in the same batch sees the first.
    """
    known = batch.known_messages
    if known is None:
        ids = [op.header.message_id for op in batch.ops if isinstance(op, AcceptEnvelope)]
        known = {
            row.message_id: (bytes(row.envelope_sha256), int(row.audit_index), int(row.accepted_us))
            for row in batch.conn.execute(_EXISTING_MESSAGES, {"ids": ids})
        }
        batch.known_messages = known
    return known


def remember_certificate(batch: Batch, known: set[bytes], fingerprint: bytes, der: bytes) -> None:
    """Store a certificate seen on a verified call once, so its signatures stay checkable later."""
    if fingerprint in known:
        return
    if fingerprint in batch.staged_certificates:
        return
    batch.staged_certificates.add(fingerprint)
    if batch.conn.execute(_CERTIFICATE_KNOWN, {"f": fingerprint}).first() is None:
        batch.insert(tables.peer_certificates, {"fingerprint": fingerprint, "der": der})
    # Known for good only once stored: a batch that rolls back must not leave it marked.
    batch.after_commit.append(lambda: known.add(fingerprint))


# PENDING or IN_FLIGHT: the states before an outcome (ACKNOWLEDGED, EXPIRED, RECALLED are higher).
UNSETTLED = tables.deliveries.c.state <= IN_FLIGHT

_CERTIFICATE_KNOWN = sa.select(tables.peer_certificates.c.fingerprint).where(
    tables.peer_certificates.c.fingerprint == sa.bindparam("f")
)

_DELIVERED_DIGESTS = (
    sa.select(
        tables.deliveries.c.message_id,
        tables.deliveries.c.state,
        tables.messages.c.envelope_sha256,
        tables.messages.c.kind,
        tables.messages.c.references,
    )
    .join(tables.messages, tables.messages.c.message_id == tables.deliveries.c.message_id)
    .where(
        tables.deliveries.c.message_id.in_(sa.bindparam("ids", expanding=True)),
        tables.deliveries.c.recipient == sa.bindparam("r"),
    )
)

_DELIVERY_KEY = ("message_id", "recipient")


def refusal_record(writer: Writer) -> refusals.Record:
    """How a refusal's audit entry is written (`broker.audit.refusals` decides when): at once if the
    store commits, else held until it does (`Writer.submit_nowait`), the miss logged and counted."""

    async def record(event: AuditEvent) -> None:
        try:
            await writer.submit(RecordEvent(event))
        except STORAGE_FAULTS as fault:
            # The refusal's own status still goes to the caller.
            AUDIT_WRITE_FAILURES.labels("refusal").inc()
            log.warning(
                "audit.refusal_not_written",
                rpc=event.fields.get("rpc"),
                refused_status=event.fields.get("status"),
                cause=fault.status.name,
                held=True,
            )
            writer.submit_nowait(RecordEvent(event))

    return record


@dataclass
class RecordDelivered:
    """Count delivery attempts and audit them; queued without waiting by the dispatcher."""

    replica_safe: ClassVar[bool] = True  # row-level writes only: runs beside other replicas' batches

    items: Sequence[tuple[str, str, int]]  # message id, recipient, attempt
    actor: str

    @property
    def expected_entries(self) -> int:
        """One entry per delivery (the writer reserves their indices up front)."""
        return len(self.items)

    def stage(self, batch: Batch) -> None:
        batch.expect_entries(len(self.items))
        bulk_update(
            batch.conn,
            tables.deliveries,
            _DELIVERY_KEY,
            ("attempts", "updated_us"),
            [(m, r, a, batch.now_us) for m, r, a in self.items],
            constants={"state": IN_FLIGHT},
            where=UNSETTLED,
        )
        for message_id, recipient, attempt in self.items:
            batch.audit(
                AuditEvent(
                    event="delivery.delivered",
                    actor=self.actor,
                    time=batch.now,
                    message_id=message_id,
                    agency=recipient,
                    fields={"recipient": recipient, "attempt": attempt},
                )
            )


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt whose signature the broker has checked against the recipient's certificate."""

    message_id: str
    recipient: str
    status: envelope_pb2.ReceiptStatus.ValueType
    receipt: bytes
    signature: bytes
    batch_signature: bytes | None  # serialized BatchSignature of a batch-signed receipt (section 21)
    cert_fingerprint: bytes
    cert_der: bytes
    envelope_sha256: bytes
    reason: str = ""


@dataclass
class RecordReceipts:
    """Store signed receipts and take the deliveries off the queue."""

    replica_safe: ClassVar[bool] = True  # row-level writes only: runs beside other replicas' batches

    receipts: Sequence[VerifiedReceipt]
    actor: str
    known_certs: set[bytes]
    on_commit: Callable[[list[tuple[str, str]]], None]

    @property
    def expected_entries(self) -> int:
        """One entry per receipt (the writer reserves their indices up front)."""
        return len(self.receipts)

    def stage(self, batch: Batch) -> int:
        ids = [r.message_id for r in self.receipts]
        recipient = self.receipts[0].recipient
        rows = {row.message_id: row for row in batch.conn.execute(_DELIVERED_DIGESTS, {"ids": ids, "r": recipient})}
        problems = []
        for r in self.receipts:
            row = rows.get(r.message_id)
            if row is None:
                problems.append(f"{r.message_id}: no delivery of this message to {recipient}")
            elif row.envelope_sha256 != r.envelope_sha256:
                problems.append(f"{r.message_id}: receipt names another envelope digest than the one delivered")
        if problems:  # audited once by the caller's refusal scope
            raise InvalidReceipt("receipts refused, none recorded: " + "; ".join(problems))
        erased = _check_erasures(self.receipts, rows)
        batch.expect_entries(len(self.receipts))
        for r in self.receipts:
            remember_certificate(batch, self.known_certs, r.cert_fingerprint, r.cert_der)
        bulk_update(
            batch.conn,
            tables.deliveries,
            _DELIVERY_KEY,
            ("updated_us", "receipt", "receipt_signature", "receipt_batch", "receipt_cert"),
            [
                (r.message_id, r.recipient, batch.now_us, r.receipt, r.signature, r.batch_signature, r.cert_fingerprint)
                for r in self.receipts
            ],
            constants={"state": ACKNOWLEDGED},
        )
        for r in self.receipts:
            batch.audit(
                AuditEvent(
                    event="receipt.received",
                    actor=self.actor,
                    time=batch.now,
                    message_id=r.message_id,
                    agency=r.recipient,
                    fields={
                        "recipient": r.recipient,
                        "status": envelope_pb2.ReceiptStatus.Name(r.status),
                        "receipt_sha256": _sha256(r.receipt),
                        **({"erased": erased[r.message_id]} if r.message_id in erased else {}),
                    },
                )
            )
        done = [(r.message_id, r.recipient) for r in self.receipts]
        for message_id, recipient in done:
            batch.settled.setdefault(recipient, []).append(message_id)
        batch.after_commit.append(lambda: self.on_commit(done))
        return len(self.receipts)


@dataclass
class ExpireDeliveries:
    """Mark deliveries whose message expired; the sender sees EXPIRED in GetStatus."""

    replica_safe: ClassVar[bool] = True  # row-level writes only: runs beside other replicas' batches

    items: Sequence[tuple[str, str]]
    actor: str

    def stage(self, batch: Batch) -> None:
        for message_id, recipient in self.items:
            updated = batch.conn.execute(
                tables.deliveries.update()
                .where(
                    tables.deliveries.c.message_id == message_id, tables.deliveries.c.recipient == recipient, UNSETTLED
                )
                .values(state=EXPIRED, updated_us=batch.now_us)
            ).rowcount
            if updated:
                batch.audit(
                    AuditEvent(
                        event="delivery.expired",
                        actor=self.actor,
                        time=batch.now,
                        message_id=message_id,
                        agency=recipient,
                        fields={"recipient": recipient},
                    )
                )


def _check_erasures(receipts: Sequence[VerifiedReceipt], rows: dict[str, Any]) -> dict[str, str]:
    """RECALL id -> the message it erased, for each ERASED receipt; raise if one confirms no recall.

    An ERASED receipt acknowledges the delivery of a RECALL, and its signed reason starts with the
    recalled message id (docs/protocol.md section 22, Erasure), so the confirmation names what was erased.
    """
    erased: dict[str, str] = {}
    for r in receipts:
        if r.status != envelope_pb2.ERASED:
            continue
        row = rows[r.message_id]
        if row.kind != envelope_pb2.RECALL:
            raise InvalidRequest(
                f"receipt for {r.message_id}: ERASED confirms a RECALL, and this message is of kind "
                f"{envelope_pb2.Kind.Name(row.kind)}; acknowledge it as DELIVERED or READ"
            )
        if r.reason.split(":", 1)[0] != row.references:
            raise InvalidRequest(
                f"receipt for {r.message_id}: an ERASED receipt's reason must start with the "
                f"recalled message id {row.references}"
            )
        erased[r.message_id] = row.references
    return erased


class InvalidReceipt(NotFound):
    """A receipt does not match a delivery of the caller."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RecordForwardConsent:
    """Store the original sender's signed consent to a forward, with its audit entry."""

    consent: envelope_pb2.ForwardConsent
    consent_bytes: bytes
    signature: bytes
    actor: str
    owner: str

    def stage(self, batch: Batch) -> int:
        c = self.consent
        not_after_us = c.not_after.ToMicroseconds()
        key = (
            (tables.forward_consents.c.message_id == c.message_id)
            & (tables.forward_consents.c.forwarder == c.forwarder)
            & (tables.forward_consents.c.recipient.in_(list(c.recipients)))
        )
        batch.conn.execute(tables.forward_consents.delete().where(key))
        for recipient in c.recipients:
            batch.insert(
                tables.forward_consents,
                {
                    "message_id": c.message_id,
                    "forwarder": c.forwarder,
                    "recipient": recipient,
                    "not_after_us": not_after_us,
                    "consent": self.consent_bytes,
                    "signature": self.signature,
                },
            )
        return batch.audit(
            AuditEvent(
                event="forward.consented",
                actor=self.actor,
                time=batch.now,
                message_id=c.message_id,
                agency=self.owner,
                fields={
                    "forwarder": c.forwarder,
                    "recipients": sorted(c.recipients),
                    "consent_sha256": _sha256(self.consent_bytes),
                },
            )
        )


__all__ = [
    "UNSETTLED",
    "AcceptEnvelope",
    "Accepted",
    "ExpireDeliveries",
    "QueuedDelivery",
    "RecordDelivered",
    "RecordEvent",
    "RecordForwardConsent",
    "RecordReceipts",
    "VerifiedReceipt",
    "refusal_record",
    "remember_certificate",
]
