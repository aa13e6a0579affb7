"""Signed receipts."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from broker.api.v1 import envelope_pb2
from broker.errors import VerificationError
from broker.protocol import _pae
from broker.protocol.envelope import envelope_sha256
from broker.protocol.receipts import make_receipt, verify_receipt
from tests.unit.protocol.protocol_testpki import NOW, Pki

DIGEST = envelope_sha256(b"stored envelope")
MESSAGE_ID = "0190a000-0000-7000-8000-000000000001"


def _receipt(pki: Pki, recipient: str = "DE-BKA", signer: str = "DE-BKA") -> envelope_pb2.SignedReceipt:
    return make_receipt(
        message_id=MESSAGE_ID,
        envelope_sha256=DIGEST,
        recipient=recipient,
        status=envelope_pb2.REJECTED,
        identity_key=pki.agency(signer).identity_key,
        reason="unreadable payload",
        time=NOW,
    )


def test_receipt_verifies_and_carries_its_fields(pki: Pki) -> None:
    """A receipt signed by the recipient verifies and returns every field."""
    receipt = verify_receipt(_receipt(pki), pki.agency("DE-BKA").certificate, expected_recipient="DE-BKA")
    assert (receipt.message_id, receipt.envelope_sha256, receipt.recipient) == (MESSAGE_ID, DIGEST, "DE-BKA")
    assert (receipt.status, receipt.reason) == (envelope_pb2.REJECTED, "unreadable payload")
    assert receipt.time.ToDatetime(dt.UTC) == NOW


def test_receipt_with_flipped_bit_is_refused(pki: Pki) -> None:
    """Changing the signed receipt bytes breaks the signature."""
    signed = _receipt(pki)
    signed.receipt = signed.receipt[:-1] + bytes([signed.receipt[-1] ^ 1])
    with pytest.raises(VerificationError, match="receipt signature does not verify"):
        verify_receipt(signed, pki.agency("DE-BKA").certificate)


def test_receipt_checked_against_another_certificate_is_refused(pki: Pki) -> None:
    """A receipt does not verify under another agency's certificate."""
    with pytest.raises(VerificationError, match="receipt signature does not verify"):
        verify_receipt(_receipt(pki), pki.agency("NL-FIOD").certificate)


def test_receipt_in_another_agencys_name_is_refused(pki: Pki) -> None:
    """An agency cannot sign a receipt in another recipient's name."""
    signed = _receipt(pki, recipient="NL-FIOD", signer="DE-BKA")
    with pytest.raises(VerificationError, match="names 'NL-FIOD' but is signed by 'DE-BKA'"):
        verify_receipt(signed, pki.agency("DE-BKA").certificate)


def test_receipt_from_unexpected_recipient_is_refused(pki: Pki) -> None:
    """The sender can demand the receipt come from a given recipient."""
    with pytest.raises(VerificationError, match="expected 'NL-FIOD'"):
        verify_receipt(_receipt(pki), pki.agency("DE-BKA").certificate, expected_recipient="NL-FIOD")


def test_validly_signed_garbage_receipt_is_a_verification_error(pki: Pki) -> None:
    """Signed bytes that are not a Receipt surface as VerificationError."""
    key = pki.agency("DE-BKA").identity_key
    signed = envelope_pb2.SignedReceipt(
        receipt=b"\xff", signature=key.sign(_pae.receipt_signing_input(b"\xff"), ec.ECDSA(hashes.SHA256()))
    )
    with pytest.raises(VerificationError, match="does not parse"):
        verify_receipt(signed, pki.agency("DE-BKA").certificate)


def test_receipt_signature_is_domain_separated_from_key_bundles(pki: Pki) -> None:
    """A signature made over the same bytes as a key bundle is not a receipt signature."""
    agency = pki.agency("DE-BKA")
    signed = _receipt(pki)
    signed.signature = agency.identity_key.sign(
        _pae.key_bundle_signing_input(signed.receipt), ec.ECDSA(hashes.SHA256())
    )
    with pytest.raises(VerificationError, match="receipt signature does not verify"):
        verify_receipt(signed, agency.certificate)


def test_make_receipt_refuses_a_non_digest(pki: Pki) -> None:
    """The envelope digest must be a SHA-256 value."""
    with pytest.raises(ValueError, match="32-byte"):
        make_receipt(
            message_id=MESSAGE_ID,
            envelope_sha256=b"short",
            recipient="DE-BKA",
            status=envelope_pb2.DELIVERED,
            identity_key=pki.agency("DE-BKA").identity_key,
        )
