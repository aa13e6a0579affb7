"""The exchange: accepting envelopes, opening delivery streams, taking receipts, reporting status.

Every public method takes the authenticated `Principal` and the signed objects as the protocol
defines them (`envelope_pb2` messages: an envelope, a receipt and a consent are verified over their
exact bytes), never a transport object, checks the request, and changes state only through the
writer, so each change commits with its audit entry. A refused request raises a `BrokerError` after
its rejection has been audited. Whom an envelope may go to is `broker.delivery.routing`'s question;
what the dispatcher loads and records, `broker.delivery.backlog`'s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from broker.api.v1 import envelope_pb2
from broker.attachments.blobs import BlobStore
from broker.audit import refusals
from broker.config import BrokerConfig
from broker.delivery import operations as ops
from broker.delivery.certificates import PeerCertificates
from broker.delivery.dispatcher import Dispatcher, Stream
from broker.delivery.intake import take_in
from broker.delivery.routing import Router
from broker.directory import Registry
from broker.errors import REFUSALS, InvalidRequest, NotFound, PermissionDenied
from broker.identity import Principal, Role
from broker.metrics import ENVELOPES, RECEIPTS
from broker.protocol import validation
from broker.protocol.batch import VerifiedRoots
from broker.protocol.envelope import verify_outer
from broker.protocol.errors import OutOfRange
from broker.protocol.forwarding import verify_forward_consent
from broker.protocol.receipts import verify_receipt
from broker.store import tables
from broker.store.db import now_us
from broker.store.reads import Reader
from broker.store.writer import Writer

MAX_RECEIPTS_PER_ACK = 1000
MAX_RECEIPT_BYTES = 4096  # a receipt with the longest reason is about 1,200 bytes


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
        self,
        config: BrokerConfig,
        reader: Reader,
        writer: Writer,
        registry: Registry,
        router: Router,
        dispatcher: Dispatcher,
        certificates: PeerCertificates,
        blobs: BlobStore,
    ) -> None:
        self._config = config
        self._reader = reader
        self._writer = writer
        self._registry = registry
        self._router = router
        self._dispatcher = dispatcher
        self._certificates = certificates
        self._blobs = blobs  # a recall deletes the recalled message's attachments
        self._record_refusal = ops.refusal_record(writer)
        # Batch roots whose signature verified (protocol section 21): the other envelopes and receipts
        # of a batch cost a path check, not an ECDSA verification.
        self._roots = VerifiedRoots()

    # -- Send ----------------------------------------------------------------------------------
    async def send(self, caller: Principal, envelope: envelope_pb2.Envelope, raw_size: int) -> ops.Accepted:
        """Check and store one envelope; raise after auditing the refusal if it is refused."""
        (outcome,) = await self.send_batch(caller, [(envelope, raw_size)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def send_batch(
        self, caller: Principal, envelopes: Sequence[tuple[envelope_pb2.Envelope, int]]
    ) -> list[ops.Accepted | BaseException]:
        """Check and store envelopes (each with its size as received), each accepted or refused on
        its own (a refusal audited once); the outcomes in order.

        One task for all of them: each envelope is checked in turn and queued for the writer, then
        they wait for their commits together (a task per envelope cost more than the checks it ran
        between its awaits).
        """
        actor = str(caller.spiffe_id)
        outcomes: list[ops.Accepted | BaseException | None] = [None] * len(envelopes)
        queued: list[tuple[int, refusals.RefusalScope, asyncio.Future[ops.Accepted]]] = []
        audits: list[asyncio.Future[None]] = []

        def refuse(i: int, refusal: refusals.RefusalScope, exc: Exception) -> None:
            outcomes[i] = exc
            if isinstance(exc, REFUSALS):
                ENVELOPES.labels("refused").inc()
                audits.append(asyncio.ensure_future(refusals.audit_outcome(refusal, exc)))

        for i, (envelope, raw_size) in enumerate(envelopes):
            with refusals.scope(self._record_refusal, actor, agency=caller.name) as refusal:
                try:
                    op = await self._checked(caller, envelope, raw_size, refusal)
                except Exception as exc:  # noqa: BLE001 - this envelope's outcome, answered alone
                    refuse(i, refusal, exc)
                else:
                    queued.append((i, refusal, self._writer.enqueue(op)))
        for i, refusal, future in queued:
            try:
                accepted = await future
            except Exception as exc:  # noqa: BLE001 - refused when staged (a reused message id)
                refuse(i, refusal, exc)
            else:
                ENVELOPES.labels("duplicate" if accepted.duplicate else "accepted").inc()
                outcomes[i] = accepted
        if audits:
            await asyncio.gather(*audits)
        return cast(list[ops.Accepted | BaseException], outcomes)  # each envelope has its outcome now

    async def _checked(
        self, caller: Principal, envelope: envelope_pb2.Envelope, raw_size: int, refusal: refusals.RefusalScope
    ) -> ops.AcceptEnvelope:
        """The writer operation that stores an envelope past every check; raise its refusal if not."""
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
            envelope,
            self._certificates.of(caller),
            max_bytes=self._config.max_envelope_bytes,
            roots=self._roots,
            checked=True,  # take_in ran parse_header on this envelope
        )
        expires_us = header.expires.ToMicroseconds() if header.HasField("expires") else None
        if expires_us is not None and expires_us <= now_us():
            raise InvalidRequest("envelope expired before it was sent (header.expires is in the past)")
        await self._check_created(header, digest)
        # 3. Sharing policy, group expansion, and one wrapped key per expanded recipient.
        decision, expansion = await self._router.route(header)
        recipients = tuple(decision.expanded)
        wrapped = sorted(k.recipient for k in envelope.wrapped_keys)
        if wrapped != sorted(recipients):
            raise InvalidRequest(
                "wrapped keys must be exactly one per recipient agency after group expansion: "
                f"expected {sorted(recipients)}, envelope has {wrapped}"
            )
        return ops.AcceptEnvelope(
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
            known_certs=self._certificates.stored,
            on_commit=self._dispatcher.accepted,
            expires_us=expires_us,
            blobs=self._blobs,
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
            stored = await self._reader.read(
                lambda conn: conn.execute(
                    sa.select(m.c.envelope_sha256).where(m.c.message_id == header.message_id)
                ).scalar()
            )
            if stored is None or bytes(stored) != digest:
                raise

    async def grant_forward_consent(self, caller: Principal, signed: envelope_pb2.SignedForwardConsent) -> int:
        """Record the original sender's consent that a recipient may forward its message."""
        async with refusals.audited(self._record_refusal, str(caller.spiffe_id), agency=caller.name):
            if caller.role is not Role.AGENCY:
                raise PermissionDenied(f"{caller.spiffe_id} is not an agency")
            if len(signed.consent) > 16384:
                raise InvalidRequest("forward consent is larger than any valid consent")
            validation.check_signed(signed.consent, signed.signature, "forward consent", 16384)
            consent = verify_forward_consent(signed, self._certificates.of(caller))
            await self._router.check_consent(caller.name, consent)
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
        return await self._dispatcher.open_stream(caller.name, min(limit, self._config.max_in_flight))

    # -- Ack -----------------------------------------------------------------------------------
    async def acknowledge(self, caller: Principal, receipts: Sequence[envelope_pb2.SignedReceipt]) -> int:
        """Verify and store signed receipts of the calling agency."""
        async with refusals.audited(self._record_refusal, str(caller.spiffe_id), agency=caller.name):
            if caller.role is not Role.AGENCY:
                raise PermissionDenied(f"{caller.spiffe_id} is not an agency")
            if not receipts:
                raise InvalidRequest("no receipts to acknowledge")
            if len(receipts) > MAX_RECEIPTS_PER_ACK:
                raise InvalidRequest(f"{len(receipts)} receipts in one Ack, over the limit of {MAX_RECEIPTS_PER_ACK}")
            for i, signed in enumerate(receipts):
                validation.check_signed(signed.receipt, signed.signature, f"receipts[{i}]", MAX_RECEIPT_BYTES)
            cert = self._certificates.of(caller)
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
                    known_certs=self._certificates.stored,
                    on_commit=self._dispatcher.acknowledged,
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

        state = await self._reader.read(load)
        if state is None:
            # Same answer for "absent" and "someone else's", so ids of others' messages leak nothing.
            async with refusals.audited(
                self._record_refusal, str(caller.spiffe_id), message_id=message_id, agency=caller.name
            ):
                raise NotFound(f"no message {message_id} sent by {caller.name}")
        return state


__all__ = ["Exchange", "MessageState", "RecipientState"]
