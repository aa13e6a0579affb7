"""Routing: whom an envelope may go to, under the policy in force and the senders' forward consents.

The policy file is watched (`reload_policy`, one stat per call) and each change is an audit entry.
A send is decided by the sharing rules (`decide_send`), a forward (a header that references another
message, other than a RECALL) by the forwarding rules plus the original sender's recorded consent
(`docs/protocol.md`, forward consent). Group addresses are expanded here, and the expansion is
returned so that the send's audit entry records it.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog

from broker.api.v1 import envelope_pb2
from broker.audit import AuditEvent, justification_fields
from broker.delivery import operations as ops
from broker.directory import Registry
from broker.errors import FailedPrecondition, NotFound, PermissionDenied, PolicyViolation
from broker.policy import Decision, RunningPolicy, kind_from_proto, tlp_from_proto
from broker.protocol import validation
from broker.store import tables
from broker.store.db import now_us
from broker.store.reads import Reader
from broker.store.writer import Writer

log = structlog.get_logger(__name__)


class Router:
    """The policy in force, applied to sends, forwards, forward consents and consultations."""

    def __init__(self, policy: RunningPolicy, registry: Registry, reader: Reader, writer: Writer) -> None:
        self._policy = policy
        self._registry = registry
        self._reader = reader
        self._writer = writer

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

    def consultation(self, caller: str, legal_basis: str, case_reference: str, operator: str) -> dict[str, str]:
        """The audit fields of a consultation's justification (docs/protocol.md section 22, Justification), checked:
        within their limits, and a legal basis from the policy's list; raise `InvalidRequest` if not."""
        validation.check_justification(legal_basis, case_reference, operator)
        self.reload_policy()
        self._policy.current.justification.check_code(legal_basis, "legal_basis")
        return justification_fields(legal_basis, case_reference, operator, caller)

    async def route(self, header: envelope_pb2.Header) -> tuple[Decision, dict[str, list[str]]]:
        """The policy decision for this header, and the group expansion recorded in the audit entry;
        raise if the policy refuses it or a recipient is not registered."""
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
        original = await self._reader.read(
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
        consented = await self._reader.read(
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

    async def check_consent(self, agency: str, consent: envelope_pb2.ForwardConsent) -> None:
        """Raise unless `agency` sent the consent's message, its forwarder received it, and every
        recipient it names is registered (`consent` has been verified)."""
        m, d = tables.messages, tables.deliveries
        sender = await self._reader.read(
            lambda conn: conn.execute(sa.select(m.c.sender).where(m.c.message_id == consent.message_id)).scalar()
        )
        if sender != agency:
            raise PermissionDenied(
                f"only the original sender of message {consent.message_id} may consent to forwarding it"
            )
        received = await self._reader.read(
            lambda conn: conn.execute(
                sa.select(d.c.recipient).where(d.c.message_id == consent.message_id, d.c.recipient == consent.forwarder)
            ).scalar()
        )
        if received is None:
            raise FailedPrecondition(f"{consent.forwarder} did not receive message {consent.message_id}")
        unknown = [r for r in consent.recipients if r not in self._registry]
        if unknown:
            raise NotFound(f"consent names {unknown[0]}, which is not a registered agency")


__all__ = ["Router"]
