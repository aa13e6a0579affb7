"""Merkle batch signatures (docs/protocol.md section 21): envelopes and receipts of one batch share
one signature, each verifies alone, and every tampering with the batch proof is refused."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.api.v1 import envelope_pb2
from broker.errors import VerificationError
from broker.protocol import _merkle, batch
from broker.protocol.envelope import envelope_sha256, open_envelope, seal, sign_envelopes, verify_outer
from broker.protocol.errors import ProtocolError
from broker.protocol.forwarding import forwarded_content, verify_forwarded
from broker.protocol.keys import certificate_sha256, identity_public_key, sign_identity
from broker.protocol.receipts import new_receipt, sign_receipts, verify_receipt
from tests.unit.protocol.protocol_testpki import NOW, TRUST_DOMAIN, Agency, Pki

MESSAGE_ID = "0190a000-0000-7000-8000-000000000001"


def _unsigned(sender: Agency, recipient: Agency, body: bytes) -> envelope_pb2.Envelope:
    return seal(
        sender=sender.name,
        identity_key=sender.identity_key,
        certificate=sender.certificate,
        recipients=[recipient.name],
        recipient_keys={recipient.name: recipient.bundle},
        kind=envelope_pb2.ALERT,
        body=body,
        content_type="text/plain",
        sign=False,
    )


def _batch(pki: Pki, n: int) -> list[envelope_pb2.Envelope]:
    sender, recipient = pki.agency("FR-CUSTOMS"), pki.agency("DE-BKA")
    envelopes = [_unsigned(sender, recipient, b"message %d" % i) for i in range(n)]
    sign_envelopes(envelopes, sender.identity_key)
    return envelopes


def _copy(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope.FromString(envelope.SerializeToString())


def _refused(envelope: envelope_pb2.Envelope, pki: Pki, match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        verify_outer(envelope, pki.agency("FR-CUSTOMS").certificate)


def test_every_envelope_of_a_batch_verifies_and_opens_on_its_own(pki: Pki) -> None:
    """Five envelopes share one signature; each verifies and opens without the others."""
    envelopes = _batch(pki, 5)
    assert len({e.batch_signature.signature for e in envelopes}) == 1
    for i, envelope in enumerate(envelopes):
        assert not envelope.header_signature
        assert (envelope.batch_signature.tree_size, envelope.batch_signature.leaf_index) == (5, i)
        opened = open_envelope(
            envelope,
            recipient="DE-BKA",
            keys=pki.agency("DE-BKA").keys,
            sender_certificate=pki.agency("FR-CUSTOMS").certificate,
        )
        assert opened.body == b"message %d" % i


def test_a_batch_of_one_is_signed_alone(pki: Pki) -> None:
    """One envelope gets the single header signature of section 6, as before batch signing."""
    (envelope,) = _batch(pki, 1)
    assert envelope.header_signature
    assert not envelope.HasField("batch_signature")
    verify_outer(envelope, pki.agency("FR-CUSTOMS").certificate)


def test_an_envelope_without_any_outer_signature_is_refused(pki: Pki) -> None:
    """`seal(sign=False)` alone makes an envelope nobody accepts."""
    envelope = _unsigned(pki.agency("FR-CUSTOMS"), pki.agency("DE-BKA"), b"x")
    _refused(envelope, pki, "envelope header signature does not verify")


def test_a_wrong_path_is_refused(pki: Pki) -> None:
    """A path hash changed leads to another root, whose signature does not verify."""
    envelope = _batch(pki, 4)[1]
    envelope.batch_signature.path[0] = bytes(32)
    _refused(envelope, pki, "envelope header batch signature does not verify")


def test_a_path_of_the_wrong_length_is_refused(pki: Pki) -> None:
    """One hash too many or too few is refused before any signature is checked."""
    longer = _batch(pki, 4)[0]
    longer.batch_signature.path.append(bytes(32))
    _refused(longer, pki, "too many hashes")
    shorter = _batch(pki, 4)[0]
    del shorter.batch_signature.path[-1]
    _refused(shorter, pki, "too few hashes")


def test_a_wrong_index_is_refused(pki: Pki) -> None:
    """The same path at another index folds to another root."""
    envelope = _batch(pki, 4)[1]
    envelope.batch_signature.leaf_index = 2
    _refused(envelope, pki, "does not verify")


def test_a_root_reused_with_another_leaf_count_is_refused(pki: Pki) -> None:
    """The tree size is signed with the root: the same root and path under another size fail."""
    envelope = _batch(pki, 4)[0]  # in a tree of 4, leaf 0's path also fits a tree of 3
    envelope.batch_signature.tree_size = 3
    _refused(envelope, pki, "batch signature does not verify")


def test_a_leaf_moved_to_another_batch_is_refused(pki: Pki) -> None:
    """A header of one batch with the signature and path of another batch does not verify."""
    first, second = _batch(pki, 4), _batch(pki, 4)
    moved = _copy(first[2])
    moved.batch_signature.CopyFrom(second[2].batch_signature)
    _refused(moved, pki, "batch signature does not verify")


def test_a_bit_flip_in_the_root_signature_is_refused(pki: Pki) -> None:
    """A flipped bit of the signature fails it."""
    envelope = _batch(pki, 3)[2]
    signature = bytearray(envelope.batch_signature.signature)
    signature[10] ^= 0x01
    envelope.batch_signature.signature = bytes(signature)
    _refused(envelope, pki, "batch signature does not verify")


def test_both_signatures_at_once_are_refused(pki: Pki) -> None:
    """An envelope carries a header signature or a batch signature, never both."""
    envelope = _batch(pki, 2)[0]
    envelope.header_signature = _batch(pki, 1)[0].header_signature
    _refused(envelope, pki, "both a signature and a batch signature")


def test_out_of_range_batch_fields_are_refused(pki: Pki) -> None:
    """A tree of one, an index past the tree and a path hash not of 32 bytes are over the limits."""
    for field, value, match in (
        ("tree_size", 1, "tree_size 1 is outside"),
        ("tree_size", batch.MAX_BATCH_SIZE + 1, "is outside"),
        ("leaf_index", 4, "leaf_index 4 is not in a tree of 4"),
    ):
        envelope = _batch(pki, 4)[0]
        setattr(envelope.batch_signature, field, value)
        _refused(envelope, pki, match)
    envelope = _batch(pki, 4)[0]
    envelope.batch_signature.path[0] = bytes(31)
    _refused(envelope, pki, "is not a SHA-256 hash")


def test_a_batch_signature_of_a_receipt_does_not_sign_a_header(pki: Pki) -> None:
    """Roots are signed per purpose: a receipt batch's root signature never signs headers."""
    sender = pki.agency("FR-CUSTOMS")
    envelope = _batch(pki, 2)[0]
    leaf = batch.leaf_hash(batch.HEADER, envelope.header)
    root = _merkle.root_from_inclusion(leaf, 0, 2, envelope.batch_signature.path)
    envelope.batch_signature.signature = sign_identity(
        sender.identity_key, batch.root_signing_input(batch.RECEIPT, 2, root)
    )
    _refused(envelope, pki, "batch signature does not verify")


def test_a_verified_root_is_cached_and_other_signature_bytes_are_still_checked(pki: Pki) -> None:
    """The second envelope of a batch hits the cache; a forged signature over the same root misses it."""
    envelopes = _batch(pki, 3)
    roots = batch.VerifiedRoots(maxsize=2)
    certificate = pki.agency("FR-CUSTOMS").certificate
    for envelope in envelopes:
        verify_outer(envelope, certificate, roots=roots)
    assert len(roots) == 1
    forged = _copy(envelopes[1])
    forged.batch_signature.signature = bytes(70)
    with pytest.raises(VerificationError, match="batch signature does not verify"):
        verify_outer(forged, certificate, roots=roots)


def test_the_root_cache_is_bounded() -> None:
    """The least recently used root leaves a full cache."""
    roots = batch.VerifiedRoots(maxsize=2)
    keys = [("t", b"c", 2, bytes([i]) * 32, b"s") for i in range(3)]
    roots.add(keys[0])
    roots.add(keys[1])
    assert keys[0] in roots  # now the most recent
    roots.add(keys[2])
    assert (keys[0] in roots, keys[1] in roots, keys[2] in roots) == (True, False, True)


def test_batch_signing_refuses_an_empty_or_oversized_batch(pki: Pki) -> None:
    """A batch has 2 to MAX_BATCH_SIZE items."""
    key = pki.agency("FR-CUSTOMS").identity_key
    with pytest.raises(ValueError, match="a batch has 2 to"):
        batch.sign_batch(batch.HEADER, [b"x"], key)
    with pytest.raises(ValueError, match="a batch has 2 to"):
        batch.sign_batch(batch.HEADER, [b"x"] * (batch.MAX_BATCH_SIZE + 1), key)


def _receipts(pki: Pki, n: int) -> list[envelope_pb2.SignedReceipt]:
    receipts = [
        new_receipt(
            message_id=MESSAGE_ID,
            envelope_sha256=envelope_sha256(b"%d" % i),
            recipient="DE-BKA",
            status=envelope_pb2.DELIVERED,
            time=NOW,
        )
        for i in range(n)
    ]
    return sign_receipts(receipts, pki.agency("DE-BKA").identity_key)


def test_receipts_of_one_acknowledgement_share_one_signature_and_verify_alone(pki: Pki) -> None:
    """Each receipt of a batch of three verifies on its own, as its sender reads it back."""
    signed = _receipts(pki, 3)
    assert len({s.batch_signature.signature for s in signed}) == 1
    for i, one in enumerate(signed):
        receipt = verify_receipt(
            envelope_pb2.SignedReceipt.FromString(one.SerializeToString()),
            pki.agency("DE-BKA").certificate,
            expected_recipient="DE-BKA",
        )
        assert receipt.envelope_sha256 == envelope_sha256(b"%d" % i)


def test_a_tampered_batch_receipt_is_refused(pki: Pki) -> None:
    """Receipt bytes, path, index and size are all bound by the batch signature."""
    certificate = pki.agency("DE-BKA").certificate
    tampered = _receipts(pki, 4)
    tampered[0].receipt = tampered[1].receipt  # a receipt moved to another leaf
    tampered[1].batch_signature.path[0] = bytes(32)
    tampered[2].batch_signature.leaf_index = 3
    tampered[3].batch_signature.tree_size = 5
    for one in tampered:
        with pytest.raises(VerificationError, match="receipt batch"):
            verify_receipt(one, certificate)


def test_a_receipt_batch_signed_by_another_agency_is_refused(pki: Pki) -> None:
    """The batch root is verified with the receipt signer's certificate."""
    with pytest.raises(VerificationError, match="receipt batch signature does not verify"):
        verify_receipt(_receipts(pki, 2)[0], pki.agency("NL-FIOD").certificate)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(2, 40), data=st.data())
def test_every_genuine_proof_verifies_and_every_altered_one_is_refused(
    pki: Pki, size: int, data: st.DataObject
) -> None:
    """Property: for any batch size and leaf, the genuine proof verifies; any change of index, size,
    path (a hash altered, added or dropped) or signed bytes is refused with `VerificationError`."""
    key, certificate = pki.agency("FR-CUSTOMS").identity_key, pki.agency("FR-CUSTOMS").certificate
    items = [b"item %d" % i for i in range(size)]
    signatures = batch.sign_batch(batch.HEADER, items, key)
    index = data.draw(st.integers(0, size - 1))
    proof = signatures[index]
    facts = {"public_key": identity_public_key(certificate), "signer_sha256": certificate_sha256(certificate)}
    batch.verify_signed(batch.HEADER, items[index], b"", proof, **facts)  # type: ignore[arg-type]
    altered = envelope_pb2.BatchSignature()
    altered.CopyFrom(proof)
    change = data.draw(st.sampled_from(["index", "size", "hash", "append", "drop", "item"]))
    item = items[index]
    if change == "index":
        altered.leaf_index = data.draw(st.integers(0, 2 * size).filter(lambda i: i != index))
    elif change == "size":
        altered.tree_size = data.draw(st.integers(0, 2 * size).filter(lambda n: n != size))
    elif change == "hash":
        position = data.draw(st.integers(0, len(altered.path) - 1))
        altered.path[position] = data.draw(
            st.binary(min_size=0, max_size=40).filter(lambda h: h != proof.path[position])
        )
    elif change == "append":
        altered.path.append(data.draw(st.binary(min_size=32, max_size=32)))
    elif change == "drop":
        del altered.path[data.draw(st.integers(0, len(altered.path) - 1))]
    else:
        item = data.draw(st.binary(max_size=16).filter(lambda b: b != items[index]))
    with pytest.raises(ProtocolError):
        batch.verify_signed(batch.HEADER, item, b"", altered, **facts)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=600))
def test_any_bytes_as_a_batch_signature_are_refused_as_a_protocol_error(pki: Pki, blob: bytes) -> None:
    """Property: arbitrary bytes parsed as a `BatchSignature` never verify and never raise
    anything but the protocol's own errors."""
    certificate = pki.agency("FR-CUSTOMS").certificate
    try:
        proof = envelope_pb2.BatchSignature.FromString(blob)
    except DecodeError:  # not a BatchSignature at all
        return
    with pytest.raises(ProtocolError):
        batch.verify_signed(
            batch.HEADER,
            b"header",
            b"",
            proof,
            public_key=identity_public_key(certificate),
            signer_sha256=certificate_sha256(certificate),
        )


def test_a_forward_of_a_batch_signed_original_carries_its_batch_signature(pki: Pki) -> None:
    """The forwarded record keeps the original's batch signature; the new recipient verifies it, and
    refuses it once its path is altered."""
    original = _batch(pki, 3)[1]
    police = pki.agency("DE-BKA")
    opened = open_envelope(
        original, recipient="DE-BKA", keys=police.keys, sender_certificate=pki.agency("FR-CUSTOMS").certificate
    )
    body = forwarded_content(original, opened, pki.agency("FR-CUSTOMS").certificate)
    forward_header = envelope_pb2.Header(references=opened.message_id, handling=opened.handling)
    verified = verify_forwarded(
        body, forward_header=forward_header, trust_roots=[pki.ca_certificate], trust_domain=TRUST_DOMAIN
    )
    assert verified.body == b"message 1"
    record = envelope_pb2.Forwarded.FromString(body)
    record.original_batch_signature.path[0] = bytes(32)
    with pytest.raises(VerificationError, match="original header batch signature does not verify"):
        verify_forwarded(
            record.SerializeToString(),
            forward_header=forward_header,
            trust_roots=[pki.ca_certificate],
            trust_domain=TRUST_DOMAIN,
        )
