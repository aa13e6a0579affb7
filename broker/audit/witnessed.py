"""Key transparency, the broker's side (docs/protocol.md section 18.4): prove key bundle publications
to the largest checkpoint the broker's witness policy accepts.

The broker does not need to be trusted for this: the SDK checks the checkpoint under its own policy,
the consistency proof from the largest checkpoint it holds, and each bundle's inclusion proof. The
broker only picks which checkpoint to prove to: the largest one its own policy (the one it sends
checkpoints to witnesses with) accepts, or the latest one when it has no policy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Connection

from broker.audit.log import AuditLog, CheckpointRecord
from broker.protocol.errors import VerificationError
from broker.protocol.witness_policy import Policy, verify_checkpoint_against_policy

__all__ = ["DirectoryProofs", "PublicationProof", "WitnessedCheckpoints"]

# Checkpoints examined per search for a witnessed one, newest first; older ones wait for the next call.
_SEARCH_LIMIT = 64


@dataclass(frozen=True, slots=True)
class PublicationProof:
    """A publication entry's bytes and its inclusion path to the proofs' checkpoint."""

    entry: bytes
    path: list[bytes]


@dataclass(frozen=True, slots=True)
class DirectoryProofs:
    """What GetDirectory attaches: the checkpoint, the consistency path to it, a proof per provable index."""

    checkpoint: CheckpointRecord
    consistency: list[bytes]
    publications: dict[int, PublicationProof]


class WitnessedCheckpoints:
    """Finds the largest stored checkpoint that `policy` accepts (with `policy` None: the latest)."""

    def __init__(self, audit_log: Callable[[], AuditLog], policy: Policy | None, origin: str) -> None:
        self._audit_log = audit_log
        self._policy = policy
        self._origin = origin
        self._lock = threading.Lock()
        self._best: CheckpointRecord | None = None  # never goes back: checkpoints are only added
        # Notes refused as they stood (tree size -> note): not verified again until cosignatures arrive.
        self._refused: dict[int, bytes] = {}

    def _accepted(self, record: CheckpointRecord) -> bool:
        if self._policy is None:
            return True
        if self._refused.get(record.tree_size) == record.note:
            return False
        try:
            verify_checkpoint_against_policy(record.note, self._policy, origin=self._origin)
        except VerificationError:
            if len(self._refused) >= 4 * _SEARCH_LIMIT:
                self._refused.clear()
            self._refused[record.tree_size] = record.note
            return False
        return True

    def latest(self, conn: Connection) -> CheckpointRecord | None:
        """The largest accepted checkpoint, or None when none is (yet)."""
        with self._lock:
            best = self._best
        floor = best.tree_size if best is not None else -1
        for record in self._audit_log().checkpoints_above(conn, floor, _SEARCH_LIMIT):
            if self._accepted(record):
                with self._lock:
                    if self._best is None or record.tree_size > self._best.tree_size:
                        self._best = record
                    return self._best
        if best is not None:
            # Cosignatures arrive after signing: the stored note may carry more lines by now.
            return self._audit_log().checkpoint(conn, best.tree_size)
        return None

    def prove(self, conn: Connection, indexes: Iterable[int], known_size: int) -> DirectoryProofs | None:
        """Proofs of the publication entries at `indexes` (those the checkpoint covers), and consistency
        from `known_size` (none when it is larger than the checkpoint: the SDK refuses that)."""
        checkpoint = self.latest(conn)
        if checkpoint is None:
            return None
        audit_log = self._audit_log()
        size = checkpoint.tree_size
        consistency = audit_log.consistency_proof(conn, known_size, size) if known_size <= size else []
        publications = {
            index: PublicationProof(audit_log.entry(conn, index).entry, audit_log.inclusion_proof(conn, index, size))
            for index in sorted(set(indexes))
            if index < size
        }
        return DirectoryProofs(checkpoint, consistency, publications)
