"""Forwarding a message with the original sender's signatures inside (DESIGN.md section 5).

The forwarder seals a new envelope whose content is a `Forwarded` record: the original header
with its outer signature, and the original content with its inner signature. The new recipient
verifies both against the original sender's certificate, so the plaintext is proven to be the
original sender's, unaltered; the forwarded envelope's header must keep the original handling code
and reference the original message id. The broker checks the same two header facts and the
sharing policy before it stores anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError

from broker.api.v1 import envelope_pb2
from broker.protocol import _pae, batch, validation
from broker.protocol.envelope import OpenedMessage
from broker.protocol.errors import VerificationError
from broker.protocol.keys import (
    certificate_sha256,
    identity_public_key,
    sign_identity,
    verify_agency_certificate,
    verify_identity_signature,
)

__all__ = [
    "FORWARDED_CONTENT_TYPE",
    "OriginalMessage",
    "forwarded_content",
    "make_forward_consent",
    "verify_forward_consent",
    "verify_forwarded",
]

FORWARDED_CONTENT_TYPE: Final = "application/vnd.isb.forwarded+protobuf"


@dataclass(frozen=True, slots=True)
class OriginalMessage:
    """The original of a forwarded message, verified as written by its original sender."""

    header: envelope_pb2.Header
    sender: str
    content_type: str
    body: bytes

    def __repr__(self) -> str:
        return (
            f"OriginalMessage(message_id={self.header.message_id!r}, sender={self.sender!r}, "
            f"body=<{len(self.body)} bytes>)"
        )


def forwarded_content(
    original: envelope_pb2.Envelope, opened: OpenedMessage, sender_certificate: x509.Certificate
) -> bytes:
    """The body of a forward of `original` (as received and opened by the forwarder)."""
    record = envelope_pb2.Forwarded(
        original_header=original.header,
        original_header_signature=original.header_signature,
        original_sender_certificate=sender_certificate.public_bytes(Encoding.DER),
        original_content=envelope_pb2.Content(
            content_type=opened.content_type, body=opened.body, inner_signature=opened.inner_signature
        ),
    )
    if original.HasField("batch_signature"):
        record.original_batch_signature.CopyFrom(original.batch_signature)
    return record.SerializeToString()


def verify_forwarded(
    body: bytes, *, forward_header: envelope_pb2.Header, trust_roots: Sequence[x509.Certificate], trust_domain: str
) -> OriginalMessage:
    """Verify the original inside a forwarded message; raise `VerificationError` if anything differs."""
    # 1. The record parses and its certificate is an agency certificate of this CA at the original time.
    try:
        record = envelope_pb2.Forwarded.FromString(body)
        original_header = envelope_pb2.Header.FromString(record.original_header)
        certificate = x509.load_der_x509_certificate(record.original_sender_certificate)
    except (DecodeError, ValueError) as exc:
        raise VerificationError("forwarded content does not parse") from exc
    verify_agency_certificate(
        certificate,
        trust_roots=trust_roots,
        expected_agency=original_header.sender,
        trust_domain=trust_domain,
        now=original_header.created.ToDatetime(dt.UTC),
    )
    # 2. The original sender signed the original header (outer) and the content with it (inner).
    public_key = identity_public_key(certificate)
    original_batch = record.original_batch_signature if record.HasField("original_batch_signature") else None
    batch.verify_signed(
        batch.Purpose(_pae.HEADER, "original header"),
        record.original_header,
        record.original_header_signature,
        original_batch,
        public_key=public_key,
        signer_sha256=certificate_sha256(certificate),
    )
    content = record.original_content
    verify_identity_signature(
        public_key,
        content.inner_signature,
        _pae.content_signing_input(original_header, content.content_type, content.body),
        what="original content",
    )
    # 3. The forward names this original and keeps its handling code.
    if forward_header.references != original_header.message_id:
        raise VerificationError("forward references another message than the one it carries")
    if forward_header.handling != original_header.handling:
        raise VerificationError("forward changed the original handling code")
    return OriginalMessage(original_header, original_header.sender, content.content_type, content.body)


def make_forward_consent(
    *,
    message_id: str,
    forwarder: str,
    recipients: Sequence[str],
    not_after: dt.datetime,
    identity_key: ec.EllipticCurvePrivateKey,
) -> envelope_pb2.SignedForwardConsent:
    """The original sender's signed consent that `forwarder` may forward `message_id` to `recipients`."""
    consent = envelope_pb2.ForwardConsent(message_id=message_id, forwarder=forwarder, recipients=sorted(recipients))
    consent.not_after.FromDatetime(not_after)
    consent_bytes = consent.SerializeToString()
    return envelope_pb2.SignedForwardConsent(
        consent=consent_bytes, signature=sign_identity(identity_key, _pae.forward_consent_signing_input(consent_bytes))
    )


def verify_forward_consent(
    signed: envelope_pb2.SignedForwardConsent, certificate: x509.Certificate
) -> envelope_pb2.ForwardConsent:
    """Verify a consent signed with `certificate`'s key and return it; raise `VerificationError`."""
    verify_identity_signature(
        identity_public_key(certificate),
        signed.signature,
        _pae.forward_consent_signing_input(signed.consent),
        what="forward consent",
    )
    try:
        consent = envelope_pb2.ForwardConsent.FromString(signed.consent)
    except DecodeError as exc:
        raise VerificationError("forward consent does not parse") from exc
    if not consent.message_id or not consent.forwarder or not consent.recipients or not consent.HasField("not_after"):
        raise VerificationError("forward consent must name the message, the forwarder, recipients and an expiry")
    with validation.verifying():
        validation.check_forward_consent(consent)
    return consent
