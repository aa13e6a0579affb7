"""Signed receipts: a recipient's statement that it got, read or rejected a message (DESIGN.md section 6).

The broker verifies a receipt before recording it, and the sender can read it back and verify it
itself, so neither has to trust the broker's word about delivery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from broker.api.v1 import envelope_pb2
from broker.protocol import _pae, validation
from broker.protocol.errors import VerificationError
from broker.protocol.keys import (
    agency_of_certificate,
    identity_public_key,
    sign_identity,
    verify_identity_signature,
)

__all__ = ["make_receipt", "verify_receipt"]

_SHA256_LEN: Final = hashlib.sha256().digest_size


def make_receipt(
    *,
    message_id: str,
    envelope_sha256: bytes,
    recipient: str,
    status: envelope_pb2.ReceiptStatus.ValueType,
    identity_key: ec.EllipticCurvePrivateKey,
    reason: str = "",
    time: dt.datetime | None = None,
) -> envelope_pb2.SignedReceipt:
    """Sign a receipt of `recipient` for the envelope with `envelope_sha256` (time defaults to now)."""
    if len(envelope_sha256) != _SHA256_LEN:
        raise ValueError("envelope_sha256 must be a 32-byte SHA-256 digest")
    if status == envelope_pb2.RECEIPT_STATUS_UNSPECIFIED:
        raise ValueError("receipt status must be set")
    time = dt.datetime.now(dt.UTC) if time is None else time
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError("time must be a timezone-aware datetime")
    receipt = envelope_pb2.Receipt(
        message_id=message_id,
        envelope_sha256=envelope_sha256,
        recipient=recipient,
        status=status,
        reason=reason,
    )
    receipt.time.FromDatetime(time)
    receipt_bytes = receipt.SerializeToString()
    return envelope_pb2.SignedReceipt(
        receipt=receipt_bytes,
        signature=sign_identity(identity_key, _pae.receipt_signing_input(receipt_bytes)),
    )


def verify_receipt(
    signed: envelope_pb2.SignedReceipt,
    certificate: x509.Certificate,
    *,
    expected_recipient: str | None = None,
) -> envelope_pb2.Receipt:
    """Verify a receipt signed with `certificate`'s key and return it; raise `VerificationError`.

    The caller has verified `certificate` (chain, revocation); this checks that the receipt is signed
    by it, and that the receipt's recipient is the agency the certificate names.
    """
    # 1. The signature over the exact receipt bytes; parse only afterwards.
    verify_identity_signature(
        identity_public_key(certificate),
        signed.signature,
        _pae.receipt_signing_input(signed.receipt),
        what="receipt",
    )
    try:
        receipt = envelope_pb2.Receipt.FromString(signed.receipt)
    except DecodeError as exc:
        raise VerificationError("receipt does not parse") from exc
    # 2. The signer speaks for itself only: a receipt names the agency whose key signed it.
    certified = agency_of_certificate(certificate)
    if receipt.recipient != certified:
        raise VerificationError(f"receipt names {receipt.recipient!r} but is signed by {certified!r}")
    if expected_recipient is not None and receipt.recipient != expected_recipient:
        raise VerificationError(f"receipt is from {receipt.recipient!r}, expected {expected_recipient!r}")
    # 3. Well formed.
    if receipt.status == envelope_pb2.RECEIPT_STATUS_UNSPECIFIED:
        raise VerificationError("receipt status is unspecified")
    if len(receipt.envelope_sha256) != _SHA256_LEN:
        raise VerificationError("receipt envelope_sha256 is not a SHA-256 digest")
    if not receipt.HasField("time"):
        raise VerificationError("receipt has no time")
    with validation.verifying():
        validation.check_receipt(receipt)
    return receipt
