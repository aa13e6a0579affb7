"""Key transparency, the SDK's side (docs/protocol.md section 18.4).

A sender accepts a key bundle only if the witnessed log holds its publication: the directory's
checkpoint meets the sender's witness policy, extends the largest checkpoint the sender has seen
(never smaller, never a fork), and the bundle's `keybundle.published` entry names the exact bundle
bytes and is included in that checkpoint. So a broker cannot show one sender a key that the log
the witnesses saw does not hold, nor roll a sender back to an older view of the log.
"""

from __future__ import annotations

import hashlib

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.audit.events import KEYBUNDLE_PUBLISHED, AuditEvent
from broker.protocol import _merkle, _note
from broker.protocol import errors as protocol
from broker.protocol.witness_policy import Policy, verify_checkpoint_against_policy
from clients.errors import VerificationError, protocol_errors

__all__ = ["verify_directory_checkpoint", "verify_publication"]


def verify_directory_checkpoint(
    note: bytes, consistency: list[bytes], *, policy: Policy, origin: str, held: tuple[int, bytes] | None
) -> _note.Checkpoint:
    """The directory's checkpoint, verified: (1) accepted by `policy` (log signature and witness
    quorum), (2) not smaller than `held` (tree size, root) and (3) consistent with it."""
    if not note:
        raise VerificationError(
            "the directory carries no checkpoint: the broker's log has no witnessed"
            " checkpoint to prove key bundles to yet (retry in a few seconds)"
        )
    with protocol_errors():
        checkpoint = verify_checkpoint_against_policy(note, policy, origin=origin).checkpoint
    if held is None:
        return checkpoint
    held_size, held_root = held
    if checkpoint.size < held_size:
        raise VerificationError(
            f"the directory's checkpoint of size {checkpoint.size} is smaller than the one of size {held_size}"
            " this agency has already seen: the broker rolls it back to an older view of the log"
        )
    try:
        _merkle.verify_consistency(held_size, checkpoint.size, held_root, checkpoint.root, consistency)
    except protocol.VerificationError as exc:
        raise VerificationError(
            f"the directory's checkpoint of size {checkpoint.size} is not consistent with the one of size"
            f" {held_size} this agency has already seen: the broker shows two histories (a fork): {exc}"
        ) from exc
    return checkpoint


def verify_publication(
    signed: envelope_pb2.SignedKeyBundle,
    key_id: str,
    agency: str,
    audit_index: int,
    proof: broker_pb2.KeyBundleProof,
    checkpoint: _note.Checkpoint,
) -> None:
    """Verify that `checkpoint` includes the publication of `signed` (the bundle `key_id` of `agency`
    the directory says was published at `audit_index`); raise `VerificationError` otherwise."""
    with protocol_errors():
        # 1. The entry is a canonical version 1 entry at the index the directory states.
        index, event = AuditEvent.from_entry_bytes(proof.entry)
        if index != audit_index:
            raise VerificationError(
                f"the publication proof of {agency}'s key {key_id} is for entry {index},"
                f" not the stated audit index {audit_index}"
            )
        # 2. It records the publication of these exact bundle bytes by this agency.
        digest = hashlib.sha256(signed.bundle).hexdigest()
        fields = event.fields
        if (
            event.event != KEYBUNDLE_PUBLISHED
            or event.agency != agency
            or fields.get("key_id") != key_id
            or fields.get("bundle_sha256") != digest
        ):
            raise VerificationError(
                f"audit entry {index} is not the publication of {agency}'s key bundle {key_id}"
                f" (SHA-256 {digest[:16]}...)"
            )
        # 3. The entry is in the checkpoint's tree.
        _merkle.verify_inclusion(
            _merkle.leaf_hash(proof.entry), index, checkpoint.size, list(proof.inclusion_path), checkpoint.root
        )
