"""The auditor's SDK: fetch signed checkpoints, prove entries and consistency, export the log.

Every answer of the broker is checked here against the broker's audit public key and the RFC 9162
verifiers; nothing is taken on the broker's word.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.api.v1 import audit_pb2, audit_pb2_grpc
from broker.audit.events import AuditEvent
from broker.identity import DEFAULT_TRUST_DOMAIN, Role
from broker.protocol import _merkle, _note
from broker.protocol.errors import ProtocolError
from broker.protocol.witness_policy import Policy, verify_checkpoint_against_policy
from clients._connection import Connection
from clients.audit.exportfile import ExportWriter
from clients.errors import ClientError, VerificationError, protocol_errors

__all__ = ["AuditorClient", "ProvenEntry"]


@dataclass(frozen=True)
class ProvenEntry:
    """An audit entry with its inclusion proof, verified against a signed checkpoint."""

    index: int
    event: AuditEvent
    entry: bytes
    proof: list[bytes]
    checkpoint: _note.Checkpoint


class AuditorClient(Connection):
    """An auditor's connection to the broker's AuditService.

    `legal_basis`, `case_reference` and `operator` justify the consultations (queries, proofs,
    exports): each request carries them and the broker records them in the query's audit entry
    (`justification` holds them; change it between calls for another case).
    """

    def __init__(
        self,
        target: str,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        audit_key: Ed25519PublicKey,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        key_name: str | None = None,
        timeout: float = 30.0,
        policy: Policy | None = None,
        legal_basis: str = "",
        case_reference: str = "",
        operator: str = "",
    ) -> None:
        super().__init__(
            target, cert=cert, key=key, ca=ca, role=Role.AUDITOR, trust_domain=trust_domain, timeout=timeout
        )
        self.audit_key = audit_key
        self.key_name = key_name or f"{trust_domain}/audit"
        self.origin = f"{trust_domain}/audit"
        self._stub = audit_pb2_grpc.AuditServiceStub(self.channel)
        self.policy = policy
        self.justification = {"legal_basis": legal_basis, "case_reference": case_reference, "operator": operator}
        self.cosigned_by: tuple[str, ...] = ()
        """The policy witnesses that cosigned the last checkpoint `checkpoint()` returned."""

    def checkpoint(self, *, fresh: bool = False) -> _note.Checkpoint:
        """The latest checkpoint, its signature verified with the audit key (and the witness policy, if any)."""
        reply = self._call(self._stub.GetCheckpoint, audit_pb2.GetCheckpointRequest(fresh=fresh))
        with protocol_errors():
            checkpoint = _note.verify_checkpoint(reply.note, self.key_name, self.audit_key)
        if checkpoint.origin != self.origin:
            raise VerificationError(f"checkpoint is for log {checkpoint.origin!r}, expected {self.origin!r}")
        if self.policy is not None:
            # With a witness policy a checkpoint counts only with the quorum's cosignatures.
            try:
                verdict = verify_checkpoint_against_policy(reply.note, self.policy, origin=self.origin)
            except ProtocolError as exc:
                raise VerificationError(str(exc)) from exc
            self.cosigned_by = tuple(sorted(verdict.cosigned))
        return checkpoint

    def entries(self, **filters: Any) -> Iterator[tuple[int, AuditEvent]]:
        """Entries matching `filters` (agency, message_id, event, since, until), every page, in order."""
        start = 0
        while True:
            reply = self._call(
                self._stub.QueryEntries,
                audit_pb2.QueryEntriesRequest(start_index=start, **{**self.justification, **filters}),
            )
            for item in reply.entries:
                if _merkle.leaf_hash(item.entry) != item.leaf_hash:
                    raise VerificationError(f"entry {item.index}: leaf hash does not match its bytes")
                with protocol_errors():
                    index, event = AuditEvent.from_entry_bytes(item.entry)
                if index != item.index:
                    raise VerificationError(f"entry stored at {item.index} says it is entry {index}")
                yield index, event
            if not reply.next_index:
                return
            start = reply.next_index

    def prove(self, index: int, checkpoint: _note.Checkpoint) -> ProvenEntry:
        """Entry `index` with its inclusion proof, verified against `checkpoint`."""
        reply = self._call(
            self._stub.GetInclusionProof,
            audit_pb2.InclusionProofRequest(index=index, tree_size=checkpoint.size, **self.justification),
        )
        entry = reply.entry.entry
        with protocol_errors():
            _merkle.verify_inclusion(
                _merkle.leaf_hash(entry), index, checkpoint.size, list(reply.hashes), checkpoint.root
            )
            stated, event = AuditEvent.from_entry_bytes(entry)
        if stated != index:
            raise VerificationError(f"proof of entry {index} carries entry {stated}")
        return ProvenEntry(index, event, entry, list(reply.hashes), checkpoint)

    def prove_message(self, message_id: str) -> list[ProvenEntry]:
        """Every entry about `message_id`, each proven against a fresh signed checkpoint."""
        checkpoint = self.checkpoint(fresh=True)
        indices = [i for i, _ in self.entries(message_id=message_id) if i < checkpoint.size]
        if not indices:
            raise ClientError(f"the audit log has no entry about message {message_id}")
        return [self.prove(i, checkpoint) for i in indices]

    def check_consistency(self, old: _note.Checkpoint, new: _note.Checkpoint) -> None:
        """Verify that `new` extends `old` (the log was only appended to); raise otherwise."""
        reply = self._call(
            self._stub.GetConsistencyProof, audit_pb2.ConsistencyProofRequest(first_size=old.size, second_size=new.size)
        )
        with protocol_errors():
            _merkle.verify_consistency(old.size, new.size, old.root, new.root, list(reply.hashes))

    def export(self, stream: IO[bytes], *, start: int = 0, end: int = 0) -> int:
        """Write the log (entries and checkpoints) to `stream` in the export format; return entries written."""
        writer = ExportWriter(stream, self.origin, self.key_name, _note.encode_vkey(self.key_name, self.audit_key))
        count = 0
        try:
            for item in self._stub.Export(
                audit_pb2.ExportRequest(start_index=start, end_index=end, **self.justification),
                timeout=max(self._timeout, 600),
            ):
                if item.HasField("entry"):
                    writer.entry(item.entry.index, item.entry.entry, item.entry.leaf_hash)
                    count += 1
                else:
                    writer.checkpoint(item.checkpoint.note)
        except grpc.RpcError as exc:
            raise self.translate_error(exc) from exc
        return count

    def report(self, message_id: str) -> list[dict[str, Any]]:
        """The life of one message as proven entries: accepted, delivered, receipts, expiry, recall."""
        return [
            {
                "index": p.index,
                "event": p.event.event,
                "time": p.event.time.isoformat(),
                "actor": p.event.actor,
                "agency": p.event.agency,
                **dict(p.event.fields),
            }
            for p in self.prove_message(message_id)
        ]
