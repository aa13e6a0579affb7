"""The batch-signature vectors (docs/protocol.md section 21): every member verifies alone, its
intermediate values recompute, and every tampered member is refused."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from broker.api.v1 import envelope_pb2
from broker.errors import VerificationError
from broker.protocol import _merkle, _pae, batch
from broker.protocol.envelope import envelope_sha256, open_envelope, verify_outer
from broker.protocol.keys import X25519_SUITE, EncryptionKey
from broker.protocol.receipts import verify_receipt
from tests.unit.protocol.vector_support import certificate, load, unhex

VECTOR = load("batch-signatures")
SENDER = certificate(VECTOR["sender"]["certificate_pem"])
RECIPIENT = certificate(VECTOR["recipient"]["certificate_pem"])


def test_batch_envelopes_verify_alone_and_their_intermediates_recompute() -> None:
    """Each envelope verifies with the sender certificate, opens, and its leaf and root recompute."""
    section = VECTOR["envelopes"]
    recipient = VECTOR["recipient"]
    key = EncryptionKey(
        X25519_SUITE,
        x25519.X25519PrivateKey.from_private_bytes(unhex(recipient["hpke_private_key_hex"])),
        key_id=recipient["key_id"],
    )
    roots = set()
    for member in section["members"]:
        envelope = envelope_pb2.Envelope.FromString(unhex(member["envelope_hex"]))
        verify_outer(envelope, SENDER)
        opened = open_envelope(
            envelope, recipient=recipient["agency"], keys={key.key_id: key}, sender_certificate=SENDER
        )
        assert opened.body.hex() == member["body_hex"]
        assert envelope_sha256(envelope.SerializeToString()).hex() == member["envelope_sha256_hex"]
        proof = envelope.batch_signature
        assert (proof.tree_size, proof.leaf_index) == (section["tree_size"], member["leaf_index"])
        roots.add(_root(batch.HEADER, envelope.header, proof, member))
    assert len(roots) == 1


def _root(
    purpose: batch.Purpose, signed: bytes, proof: envelope_pb2.BatchSignature, member: dict[str, object]
) -> bytes:
    assert hashlib.sha256(_pae.pae(purpose.single, signed)).hexdigest() == member["leaf_data_hex"]
    leaf = batch.leaf_hash(purpose, signed)
    assert leaf.hex() == member["leaf_hash_hex"]
    assert [h.hex() for h in proof.path] == member["path_hex"]
    root = _merkle.root_from_inclusion(leaf, proof.leaf_index, proof.tree_size, proof.path)
    assert root.hex() == member["root_hex"]
    assert batch.root_signing_input(purpose, proof.tree_size, root).hex() == member["root_signing_input_hex"]
    return root


def test_batch_receipts_verify_alone_and_their_intermediates_recompute() -> None:
    """Each receipt verifies with the recipient certificate alone; all lead to one root."""
    section = VECTOR["receipts"]
    roots = set()
    for member in section["members"]:
        signed = envelope_pb2.SignedReceipt.FromString(unhex(member["signed_receipt_hex"]))
        receipt = verify_receipt(signed, RECIPIENT, expected_recipient=VECTOR["recipient"]["agency"])
        assert envelope_pb2.ReceiptStatus.Name(receipt.status) == member["status"]
        roots.add(_root(batch.RECEIPT, signed.receipt, signed.batch_signature, member))
    assert len(roots) == 1


@pytest.mark.parametrize("case", VECTOR["envelopes"]["must_be_refused"], ids=lambda c: c["description"])
def test_batch_envelopes_that_must_be_refused_are(case: dict[str, str]) -> None:
    """Every tampered batch envelope fails outer verification, even with a warm root cache."""
    roots = batch.VerifiedRoots()
    for member in VECTOR["envelopes"]["members"]:
        verify_outer(envelope_pb2.Envelope.FromString(unhex(member["envelope_hex"])), SENDER, roots=roots)
    with pytest.raises(VerificationError):
        verify_outer(envelope_pb2.Envelope.FromString(unhex(case["envelope_hex"])), SENDER, roots=roots)


@pytest.mark.parametrize("case", VECTOR["receipts"]["must_be_refused"], ids=lambda c: c["description"])
def test_batch_receipts_that_must_be_refused_are(case: dict[str, str]) -> None:
    """Every tampered batch receipt fails verification."""
    with pytest.raises(VerificationError):
        verify_receipt(envelope_pb2.SignedReceipt.FromString(unhex(case["signed_receipt_hex"])), RECIPIENT)
