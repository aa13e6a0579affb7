"""The exchange: accepting envelopes, handing out deliveries, taking receipts, reporting status.

Every public method takes the authenticated `Principal` and protobuf-free domain values, checks
the request, and changes state only through the writer, so each change commits with its audit
entry. A refused request raises a `BrokerError` after its rejection has been audited.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
import structlog
from cryptography import x509
from sqlalchemy.engine import Connection, Engine

from broker.api.v1 import envelope_pb2
from broker.attachments.blobs import BlobStore
from broker.audit import AuditEvent, justification_fields, refusals
from broker.config import BrokerConfig
from broker.delivery import operations as ops
from broker.delivery.dispatcher import Dispatcher, Stream
from broker.delivery.intake import take_in
from broker.directory import Registry
from broker.errors import (
    REFUSALS,
    STORAGE_FAULTS,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PolicyViolation,
)
from broker.identity import Principal, Role
from broker.metrics import AUDIT_WRITE_FAILURES, DELIVERIES, ENVELOPES, RECEIPTS
from broker.policy import Decision, RunningPolicy, kind_from_proto, tlp_from_proto
from broker.protocol import validation
from broker.protocol.batch import VerifiedRoots
from broker.protocol.envelope import verify_outer
from broker.protocol.errors import OutOfRange
from broker.protocol.forwarding import verify_forward_consent
from broker.protocol.receipts import verify_receipt
from broker.store import tables
from broker.store.db import now_us, storage_fault
from broker.store.writer import Writer

log = structlog.get_logger(__name__)

MAX_RECEIPTS_PER_ACK = 1000
MAX_RECEIPT_BYTES = 4096  # a receipt with the longest reason is about 1,200 bytes
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RecipientState:
    """One recipient's view in GetStatus."""

    recipient: str
    state: int
    attempts: int
    updated_us: int
    receipt: bytes | None
    receipt_signature: bytes | None
    receipt_batch: bytes | None
    receipt_cert: bytes | None


@dataclass(frozen=True, slots=True)
class MessageState:
    """What GetStatus answers: each recipient's state (with the receipt's certificate), the purge, and the
    RECALLs the sender sent of the message."""

    recipients: list[tuple[RecipientState, bytes | None]]
    purged_under: str  # the retention rule, or "" while the envelope is kept
    purged_us: int | None
    recalls: tuple[str, ...] = ()


class Exchange:
    """The broker's domain core for the message lifecycle."""

    def __init__(
        self, config: BrokerConfig, engine: Engine, writer: Writer, registry: Registry, policy: RunningPolicy
    ) -> None:
        self._config = config
        self._engine = engine
        self._writer = writer
        self._registry = registry
        self._policy = policy
        self.blobs: BlobStore | None = None  # set by the broker once its blob store is open
        self._certs: dict[bytes, x509.Certificate] = {}
        self._cert_der: dict[bytes, bytes] = {}  # fingerprint -> DER, for deliveries of the backlog
        self._delivered_buffer: list[tuple[str, str, int]] = []
        self._known_certs: set[bytes] = set()
        # Batch roots whose signature verified (protocol section 21): the other envelopes and receipts
        # of a batch cost a path check, not an ECDSA verification.
        self._roots = VerifiedRoots()
        self.dispatcher = Dispatcher(
            self._load_backlog, self._load_envelope, config.lease_seconds, self._delivered, self._expired
        )

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only query on a pooled connection, off the event loop."""

        def run() -> T:
            try:
                with self._engine.connect() as conn:
                    return fn(conn)
            except sa.exc.SQLAlchemyError as exc:
                fault = storage_fault(exc)
                if fault is None:
                    raise
                raise fault from exc

        return await asyncio.get_running_loop().run_in_executor(None, run)

    # -- audit of refusals ---------------------------------------------------------------------
    async def record_refusal(self, event: AuditEvent) -> None:
        """Write one refusal's audit entry (`broker.audit.refusals` decides when)."""
        try:
            await self._writer.submit(ops.RecordEvent(event))
        except STORAGE_FAULTS as fault:
            # The refusal's own status still goes to the caller; its entry is held until the store
            # commits again (Writer.submit_nowait), and the miss is logged and counted.
            AUDIT_WRITE_FAILURES.labels("refusal").inc()
            log.warning(
                "audit.refusal_not_written",
                rpc=event.fields.get("rpc"),
                refused_status=event.fields.get("status"),
                cause=fault.status.name,
                held=True,
            )
            self._writer.submit_nowait(ops.RecordEvent(event))

    # -- Send ----------------------------------------------------------------------------------
    async def send(self, caller: Principal, envelope: envelope_pb2.Envelope, raw_size: int) -> ops.Accepted:
        """Check and store one envelope; raise after auditing the refusal if it is refused."""
        async with refusals.audited(self.record_refusal, str(caller.spiffe_id), agency=caller.name) as refusal:
            try:
                accepted = await self._send(caller, envelope, raw_size, refusal)
            except REFUSALS:
                ENVELOPES.labels("refused").inc()
                raise
        ENVELOPES.labels("duplicate" if accepted.duplicate else "accepted").inc()
        return accepted

    async def _send(
        self, caller: Principal, envelope: envelope_pb2.Envelope, raw_size: int, refusal: refusals.RefusalScope
    ) -> ops.Accepted:
        # 1. Who, how big, well formed: cheap checks before any cryptography.
        intake = take_in(
            caller,
            envelope,
            raw_size,
            refusal,
            max_bytes=self._config.max_envelope_bytes,
            max_recipients=self._config.max_recipients,
            action="send",
            what="envelopes",
        )
        envelope_bytes, digest, header = intake.envelope_bytes, intake.digest, intake.header
        if header.sender in header.recipients:
            raise InvalidRequest("an agency cannot address itself")
        # 2. The outer signature and digests, with the caller's own certificate.
        header = verify_outer(
            envelope, self._certificate(caller), max_bytes=self._config.max_envelope_bytes, roots=self._roots
        )
        expires_us = header.expires.ToMicroseconds() if header.HasField("expires") else None
        if expires_us is not None and expires_us <= now_us():
            raise InvalidRequest("envelope expired before it was sent (header.expires is in the past)")
        await self._check_created(header, digest)
        # 3. Sharing policy, group expansion, and one wrapped key per expanded recipient.
        decision, expansion = await self._route(header)
        recipients = tuple(decision.expanded)
        wrapped = sorted(k.recipient for k in envelope.wrapped_keys)
        if wrapped != sorted(recipients):
            raise InvalidRequest(
                "wrapped keys must be exactly one per recipient agency after group expansion: "
                f"expected {sorted(recipients)}, envelope has {wrapped}"
            )
        accepted: ops.Accepted = await self._writer.submit(
            ops.AcceptEnvelope(
                header=header,
                parsed=envelope,
                envelope=envelope_bytes,
                envelope_sha256=digest,
                sender_cert_fingerprint=caller.fingerprint,
                sender_cert_der=caller.certificate_der,
                caller=str(caller.spiffe_id),
                recipients=recipients,
                expansion=expansion,
                policy_rule=decision.rule,
                known_certs=self._known_certs,
                on_commit=self.dispatcher.accepted,
                expires_us=expires_us,
                blobs=self.blobs,
            )
        )
        return accepted

    async def _route(self, header: envelope_pb2.Header) -> tuple[Decision, dict[str, list[str]]]:
        """The policy decision for this header, and the group expansion recorded in the audit entry."""
        self.reload_policy()
        policy = self._policy.current
        policy.justification.check_send(
            kind_from_proto(header.kind),
            tlp_from_proto(header.handling.tlp),
            {"legal_basis": header.legal_basis, "case_reference": header.case_reference},
        )
        for r in header.recipients:
            # Groups and agencies share one namespace (EU-CUSTOMS looks like an agency id).
            if r not in policy.groups and r not in self._registry:
                raise NotFound(f"recipient {r} is neither a registered agency nor a group")
        if header.references and header.kind != envelope_pb2.RECALL:
            decision = await self._decide_forward(header)
        else:
            decision = policy.decide_send(
                header.sender,
                kind_from_proto(header.kind),
                tlp_from_proto(header.handling.tlp),
                list(header.recipients),
            )
        decision.raise_if_denied()
        unregistered = [r for r in decision.expanded if r not in self._registry]
        if unregistered:
            raise NotFound(f"recipient {unregistered[0]} is not a registered agency")
        # Group addresses are expanded at send time, and the expansion is recorded (DESIGN.md section 5).
        expansion = {r: sorted(policy.groups[r] - {header.sender}) for r in header.recipients if r in policy.groups}
        return decision, expansion

    async def _decide_forward(self, header: envelope_pb2.Header) -> Decision:
        # A header that references another message (other than a RECALL) is a forward: the forwarder
        # must have received the original, keep its handling code, and be allowed by policy.
        m, d = tables.messages, tables.deliveries
        original = await self.read(
            lambda conn: conn.execute(
                sa.select(m.c.sender, m.c.kind, m.c.envelope)
                .join(d, (d.c.message_id == m.c.message_id) & (d.c.recipient == header.sender))
                .where(m.c.message_id == header.references)
            ).first()
        )
        if original is None:
            raise PermissionDenied(f"{header.sender} did not receive message {header.references}, so cannot forward it")
        if not original.envelope:
            raise FailedPrecondition(
                f"message {header.references} was purged under its retention period; "
                "the broker no longer holds it to check a forward against"
            )
        original_header = envelope_pb2.Header.FromString(envelope_pb2.Envelope.FromString(original.envelope).header)
        if original_header.handling != header.handling or original.kind != header.kind:
            was = f"{kind_from_proto(original.kind)} at {tlp_from_proto(original_header.handling.tlp)}"
            raise PolicyViolation(
                "refused by policy (builtin:forward-keeps-handling): a forwarded message must keep "
                f"the kind and handling code of the original ({was})"
            )
        decision = self._policy.current.decide_forward(
            header.sender,
            original.sender,
            kind_from_proto(header.kind),
            tlp_from_proto(header.handling.tlp),
            list(header.recipients),
        )
        if decision.allowed or decision.rule.startswith("builtin:") or not decision.expanded:
            return decision  # the organisation bound of AMBER+STRICT and RED holds whatever the owner says
        # A rule refused it: the original sender may have consented to exactly these recipients.
        c = tables.forward_consents
        consented = await self.read(
            lambda conn: {
                r[0]
                for r in conn.execute(
                    sa.select(c.c.recipient).where(
                        c.c.message_id == header.references,
                        c.c.forwarder == header.sender,
                        c.c.recipient.in_(decision.expanded),
                        c.c.not_after_us > now_us(),
                    )
                )
            }
        )
        if consented.issuperset(decision.expanded):
            return Decision(
                allowed=True,
                rule=f"consent:{original.sender}",
                reason=f"{original.sender} consented to this forward",
                expanded=decision.expanded,
            )
        return decision

    def consultation(self, caller: str, legal_basis: str, case_reference: str, operator: str) -> dict[str, str]:
        """The audit fields of a consultation's justification (docs/protocol.md section 22, Justification), checked:
        within their limits, and a legal basis from the policy's list; raise `InvalidRequest` if not."""
        validation.check_justification(legal_basis, case_reference, operator)
        self.reload_policy()
        self._policy.current.justification.check_code(legal_basis, "legal_basis")
        return justification_fields(legal_basis, case_reference, operator, caller)

    def reload_policy(self) -> None:
        """Pick up an edited policy file (one stat); record the change in the audit log."""
        change = self._policy.reload_if_changed()
        if change is not None and change.changed:
            log.info("policy.reloaded", old_digest=change.old_digest, new_digest=change.new_digest)
            self._writer.submit_nowait(
                ops.RecordEvent(
                    AuditEvent(
                        event="policy.changed",
                        actor=change.actor,
                        time=change.time,
                        fields={"old_digest": change.old_digest, "new_digest": change.new_digest},
                    )
                )
            )

    async def _check_created(self, header: envelope_pb2.Header, digest: bytes) -> None:
        """`created` within the clock-skew window, unless this is a retry of a message already stored
        (same id and bytes: a retry after an outage gets the same answer as the first send)."""
        try:
            validation.check_created_skew(
                header, dt.datetime.now(dt.UTC), dt.timedelta(seconds=self._config.max_clock_skew_seconds)
            )
        except OutOfRange:
            m = tables.messages
            stored = await self.read(
                lambda conn: conn.execute(
                    sa.select(m.c.envelope_sha256).where(m.c.message_id == header.message_id)
                ).scalar()
            )
            if stored is None or bytes(stored) != digest:
                raise

    def _certificate(self, caller: Principal) -> x509.Certificate:
        cert = self._certs.get(caller.fingerprint)
        if cert is None:
            cert = x509.load_der_x509_certificate(caller.certificate_der)
            self._certs[caller.fingerprint] = cert
            self._cert_der[caller.fingerprint] = caller.certificate_der
        return cert

    async def grant_forward_consent(self, caller: Principal, signed: envelope_pb2.SignedForwardConsent) -> int:
        """Record the original sender's consent that a recipient may forward its message."""
        async with refusals.audited(self.record_refusal, str(caller.spiffe_id), agency=caller.name):
            if caller.role is not Role.AGENCY:
                raise PermissionDenied(f"{caller.spiffe_id} is not an agency")
            if len(signed.consent) > 16384:
                raise InvalidRequest("forward consent is larger than any valid consent")
            validation.check_signed(signed.consent, signed.signature, "forward consent", 16384)
            consent = verify_forward_consent(signed, self._certificate(caller))
            m, d = tables.messages, tables.deliveries
            sender = await self.read(
                lambda conn: conn.execute(sa.select(m.c.sender).where(m.c.message_id == consent.message_id)).scalar()
            )
            if sender != caller.name:
                raise PermissionDenied(
                    f"only the original sender of message {consent.message_id} may consent to forwarding it"
                )
            received = await self.read(
                lambda conn: conn.execute(
                    sa.select(d.c.recipient).where(
                        d.c.message_id == consent.message_id, d.c.recipient == consent.forwarder
                    )
                ).scalar()
            )
            if received is None:
                raise FailedPrecondition(f"{consent.forwarder} did not receive message {consent.message_id}")
            unknown = [r for r in consent.recipients if r not in self._registry]
            if unknown:
                raise NotFound(f"consent names {unknown[0]}, which is not a registered agency")
            index: int = await self._writer.submit(
                ops.RecordForwardConsent(consent, signed.consent, signed.signature, str(caller.spiffe_id), caller.name)
            )
        return index

    # -- Subscribe -----------------------------------------------------------------------------
    async def open_stream(self, caller: Principal, max_in_flight: int) -> Stream:
        """A delivery stream for the calling agency."""
        if caller.role is not Role.AGENCY:
            raise PermissionDenied(f"{caller.spiffe_id} is not an agency; only agencies receive deliveries")
        if caller.name not in self._registry:
            raise PermissionDenied(f"agency {caller.name} is not registered with this broker")
        limit = max_in_flight or self._config.max_in_flight
        return await self.dispatcher.open_stream(caller.name, min(limit, self._config.max_in_flight))

    async def _load_backlog(self, agency: str) -> list[ops.QueuedDelivery]:
        d, m = tables.deliveries, tables.messages
        query = (
            sa.select(
                d.c.message_id, d.c.priority, d.c.seq, d.c.attempts, m.c.expires_us, m.c.accepted_us, m.c.sender_cert
            )
            .join(m, m.c.message_id == d.c.message_id)
            .where(d.c.recipient == agency, ops.UNSETTLED)
        )
        return await self.read(
            lambda conn: [
                ops.QueuedDelivery(
                    r.message_id,
                    agency,
                    r.priority,
                    r.seq,
                    r.expires_us,
                    r.accepted_us,
                    None,
                    r.attempts,
                    self._cert_der.get(bytes(r.sender_cert)),
                )
                for r in conn.execute(query)
            ]
        )

    async def _load_envelope(self, message_id: str) -> bytes:
        query = sa.select(tables.messages.c.envelope).where(tables.messages.c.message_id == message_id)
        return await self.read(lambda conn: bytes(conn.execute(query).scalar_one()))

    def _delivered(self, item: ops.QueuedDelivery) -> None:
        DELIVERIES.inc()
        # Deliveries handed out in one turn of the event loop are recorded by one operation.
        if not self._delivered_buffer:
            asyncio.get_running_loop().call_soon(self._flush_delivered)
        self._delivered_buffer.append((item.message_id, item.recipient, item.attempts))

    def _flush_delivered(self) -> None:
        items, self._delivered_buffer = self._delivered_buffer, []
        self._writer.submit_nowait(ops.RecordDelivered(items, actor=f"broker:{self._config.node}"))

    def _expired(self, item: ops.QueuedDelivery) -> None:
        self._writer.submit_nowait(
            ops.ExpireDeliveries([(item.message_id, item.recipient)], actor=f"broker:{self._config.node}")
        )

    async def sender_certificate(self, item: ops.QueuedDelivery) -> bytes:
        """The DER certificate the sender of a delivery used, as the broker verified it."""
        if item.sender_cert is not None:
            return item.sender_cert
        message_id = item.message_id
        query = (
            sa.select(tables.peer_certificates.c.der)
            .join(tables.messages, tables.messages.c.sender_cert == tables.peer_certificates.c.fingerprint)
            .where(tables.messages.c.message_id == message_id)
        )
        return await self.read(lambda conn: bytes(conn.execute(query).scalar_one()))

    # -- Ack -----------------------------------------------------------------------------------
    async def acknowledge(self, caller: Principal, receipts: Sequence[envelope_pb2.SignedReceipt]) -> int:
        """Verify and store signed receipts of the calling agency."""
        async with refusals.audited(self.record_refusal, str(caller.spiffe_id), agency=caller.name):
            if caller.role is not Role.AGENCY:
                raise PermissionDenied(f"{caller.spiffe_id} is not an agency")
            if not receipts:
                raise InvalidRequest("no receipts to acknowledge")
            if len(receipts) > MAX_RECEIPTS_PER_ACK:
                raise InvalidRequest(f"{len(receipts)} receipts in one Ack, over the limit of {MAX_RECEIPTS_PER_ACK}")
            for i, signed in enumerate(receipts):
                validation.check_signed(signed.receipt, signed.signature, f"receipts[{i}]", MAX_RECEIPT_BYTES)
            cert = self._certificate(caller)
            verified = []
            seen = set()
            for signed in receipts:
                receipt = verify_receipt(signed, cert, expected_recipient=caller.name, roots=self._roots)
                if receipt.message_id in seen:
                    raise InvalidRequest(f"message {receipt.message_id} acknowledged twice in one Ack")
                seen.add(receipt.message_id)
                verified.append(
                    ops.VerifiedReceipt(
                        message_id=receipt.message_id,
                        recipient=caller.name,
                        status=receipt.status,
                        receipt=signed.receipt,
                        signature=signed.signature,
                        batch_signature=signed.batch_signature.SerializeToString()
                        if signed.HasField("batch_signature")
                        else None,
                        cert_fingerprint=caller.fingerprint,
                        cert_der=caller.certificate_der,
                        envelope_sha256=receipt.envelope_sha256,
                        reason=receipt.reason,
                    )
                )
            RECEIPTS.inc(len(verified))
            count: int = await self._writer.submit(
                ops.RecordReceipts(
                    verified,
                    actor=str(caller.spiffe_id),
                    known_certs=self._known_certs,
                    on_commit=self.dispatcher.acknowledged,
                )
            )
        return count

    # -- GetStatus -----------------------------------------------------------------------------
    async def status(self, caller: Principal, message_id: str) -> MessageState:
        """Delivery state and receipts of a message the caller sent, whether retention purged it, and the
        RECALLs the caller sent of it."""

        def load(conn: Connection) -> MessageState | None:
            d, m, c = tables.deliveries, tables.messages, tables.peer_certificates
            message = conn.execute(
                sa.select(m.c.sender, m.c.purge_rule, m.c.purged_us).where(m.c.message_id == message_id)
            ).first()
            if message is None or message.sender != caller.name:
                return None
            rows = conn.execute(
                sa.select(d, c.c.der)
                .outerjoin(c, c.c.fingerprint == d.c.receipt_cert)
                .where(d.c.message_id == message_id)
                .order_by(d.c.recipient)
            ).all()
            recalls = (
                conn.execute(
                    sa.select(m.c.message_id)
                    .where(m.c.references == message_id, m.c.kind == envelope_pb2.RECALL, m.c.sender == caller.name)
                    .order_by(m.c.seq)
                )
                .scalars()
                .all()
            )
            return MessageState(
                [
                    (
                        RecipientState(
                            r.recipient,
                            r.state,
                            r.attempts,
                            r.updated_us,
                            r.receipt,
                            r.receipt_signature,
                            r.receipt_batch,
                            r.receipt_cert,
                        ),
                        r.der,
                    )
                    for r in rows
                ],
                message.purge_rule or "",
                message.purged_us,
                tuple(recalls),
            )

        state = await self.read(load)
        if state is None:
            # Same answer for "absent" and "someone else's", so ids of others' messages leak nothing.
            async with refusals.audited(
                self.record_refusal, str(caller.spiffe_id), message_id=message_id, agency=caller.name
            ):
                raise NotFound(f"no message {message_id} sent by {caller.name}")
        return state


__all__ = ["Exchange", "MessageState", "RecipientState"]
