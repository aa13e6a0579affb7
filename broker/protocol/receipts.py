"""Signed receipts: a recipient's statement that it got, read or rejected a message (DESIGN.md section 6).

The broker verifies a receipt before recording it, and the sender can read it back and verify it
itself, so neither has to trust the broker's word about delivery. The receipts of one
acknowledgement share one batch signature (docs/protocol.md section 21, `sign_receipts`); each
carries its own inclusion path, so each sender verifies its own receipt alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from broker.api.v1 import envelope_pb2
from broker.protocol import _pae, batch, validation
from broker.protocol.errors import VerificationError
from broker.protocol.keys import (
    agency_of_certificate,
    certificate_sha256,
    identity_public_key,
    sign_identity,
)

__all__ = ["make_receipt", "new_receipt", "sign_receipts", "verify_receipt"]

_SHA256_LEN: Final = hashlib.sha256().digest_size


def make_receipt(*, identity_key: ec.EllipticCurvePrivateKey, **fields: Any) -> envelope_pb2.SignedReceipt:
    """Sign one receipt alone: `new_receipt(**fields)` under its own signature."""
    return sign_receipts([new_receipt(**fields)], identity_key)[0]


def sign_receipts(
    receipts: Sequence[envelope_pb2.Receipt], identity_key: ec.EllipticCurvePrivateKey
) -> list[envelope_pb2.SignedReceipt]:
    """Sign receipts, in order: one alone (section 9), several with one batch signature (section 21)."""
    blobs = [receipt.SerializeToString() for receipt in receipts]
    if len(blobs) == 1:
        return [
            envelope_pb2.SignedReceipt(
                receipt=blobs[0], signature=sign_identity(identity_key, _pae.receipt_signing_input(blobs[0]))
            )
        ]
    signatures = batch.sign_batch(batch.RECEIPT, blobs, identity_key)
    return [
        envelope_pb2.SignedReceipt(receipt=blob, batch_signature=signature)
        for blob, signature in zip(blobs, signatures, strict=True)
    ]


def new_receipt(
    *,
    message_id: str,
    envelope_sha256: bytes,
    recipient: str,
    status: envelope_pb2.ReceiptStatus.ValueType,
    reason: str = "",
    time: dt.datetime | None = None,
) -> envelope_pb2.Receipt:
    """A receipt of `recipient` for the envelope with `envelope_sha256` (time defaults to now), to sign."""
    if len(envelope_sha256) != _SHA256_LEN:
        raise ValueError("envelope_sha256 must be a 32-byte SHA-256 digest")
    if status == envelope_pb2.RECEIPT_STATUS_UNSPECIFIED:
        raise ValueError("receipt status must be set")
    time = dt.datetime.now(dt.UTC) if time is None else time
    validation.require_aware(time, "time")
    receipt = envelope_pb2.Receipt(
        message_id=message_id,
        envelope_sha256=envelope_sha256,
        recipient=recipient,
        status=status,
        reason=reason,
    )
    receipt.time.FromDatetime(time)
    return receipt


def verify_receipt(
    signed: envelope_pb2.SignedReceipt,
    certificate: x509.Certificate,
    *,
    expected_recipient: str | None = None,
    roots: batch.VerifiedRoots | None = None,
) -> envelope_pb2.Receipt:
    """Verify a receipt signed with `certificate`'s key and return it; raise `VerificationError`.

    The caller has verified `certificate` (chain, revocation); this checks that the receipt is signed
    by it, alone or through its batch (`roots` caches verified batch roots), and that the receipt's
    recipient is the agency the certificate names.
    """
    # 1. The signature over the exact receipt bytes; parse only afterwards.
    batch.verify_signed(
        batch.RECEIPT,
        signed.receipt,
        signed.signature,
        batch.batch_of(signed),
        public_key=identity_public_key(certificate),
        signer_sha256=certificate_sha256(certificate),
        roots=roots,
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
