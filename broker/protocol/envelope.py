"""Sealing, verifying and opening envelopes: sign, encrypt, sign (DESIGN.md section 4, RFC 2634).

- `seal` (sender): inner signature over plaintext and context, one AES-256-GCM encryption of the
  content, the content key wrapped with HPKE for each recipient agency, outer signature over the
  header bytes.
- `sign_envelopes` (sender of a batch): one outer signature over the Merkle root of several
  headers (docs/protocol.md section 21); `seal(..., sign=False)` leaves the outer signature to it.
- `verify_outer` (broker, and first step of opening): the header signature and digests, without
  decrypting. Cheap on purpose: one ECDSA verification (none for a batch root already verified,
  given a `VerifiedRoots` cache) and two SHA-256 passes.
- `open_envelope` (recipient): unwrap, decrypt, and verify the inner signature against the header.

Every signed or bound byte string is built in `broker.protocol._pae`; see there for the encodings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError

from broker.api.v1 import envelope_pb2
from broker.protocol import _pae, _stream, batch, validation
from broker.protocol.errors import ProtocolError, VerificationError
from broker.protocol.keys import (
    EncryptionKey,
    agency_of_certificate,
    certificate_sha256,
    hpke_suite,
    identity_public_key,
    public_key_of,
    sign_identity,
    verify_identity_signature,
)
from broker.protocol.validation import MAX_ATTACHMENTS

__all__ = [
    "PROTOCOL_VERSION",
    "OpenedMessage",
    "envelope_sha256",
    "new_content_key",
    "open_envelope",
    "seal",
    "sign_envelopes",
    "unverified_message_id",
    "uuid7",
    "verify_outer",
]

PROTOCOL_VERSION: Final = 1
_CONTENT_KEY_LEN: Final = 32  # AES-256
_NONCE_LEN: Final = 12  # AES-GCM standard nonce
_TAG_LEN: Final = 16
# Canonical lowercase text form only: the id is an idempotency key, so one UUID has one spelling.
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    """A decrypted message whose inner and outer signatures verified against the sender certificate."""

    header: envelope_pb2.Header
    sender: str
    content_type: str
    body: bytes
    handling: envelope_pb2.Handling
    message_id: str
    inner_signature: bytes = b""
    content_key: bytes = field(default=b"", repr=False)  # to derive attachment keys; never log it

    @property
    def attachments(self) -> Sequence[envelope_pb2.AttachmentRef]:
        """The attachment references of the signed header, in order."""
        return self.header.attachments

    def attachment_key(self, index: int) -> bytes:
        """The key of attachment `index` (docs/protocol.md "Attachments")."""
        if not 0 <= index < len(self.header.attachments):
            raise IndexError(f"message {self.message_id} has no attachment {index}")
        return _stream.attachment_key(self.content_key, self.header.version, self.message_id, index)

    def __repr__(self) -> str:
        # The body is plaintext: keep it out of logs and tracebacks.
        return (
            f"OpenedMessage(message_id={self.message_id!r}, sender={self.sender!r}, "
            f"content_type={self.content_type!r}, body=<{len(self.body)} bytes>)"
        )


def uuid7() -> str:
    """A fresh UUIDv7 (RFC 9562 section 5.7): 48-bit Unix time in ms, then 74 random bits."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def unverified_message_id(envelope: envelope_pb2.Envelope) -> str:
    """The message id the header claims, unverified, or "" if it does not parse: only to label a
    refusal or a rejection, never to decide anything."""
    try:
        return envelope_pb2.Header.FromString(envelope.header).message_id
    except Exception:  # noqa: BLE001 - a label only: whatever fails to parse has no id to show
        return ""


def new_content_key() -> bytes:
    """A fresh random content key for one message (pass it to `seal` after encrypting attachments)."""
    return AESGCM.generate_key(bit_length=256)


def envelope_sha256(envelope_bytes: bytes) -> bytes:
    """SHA-256 of a serialized envelope as stored: what receipts and the audit log refer to."""
    return hashlib.sha256(envelope_bytes).digest()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def seal(
    *,
    sender: str,
    identity_key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    recipients: Sequence[str],
    recipient_keys: Mapping[str, envelope_pb2.KeyBundle],
    kind: envelope_pb2.Kind.ValueType,
    body: bytes,
    content_type: str,
    handling: envelope_pb2.Handling | None = None,
    priority: envelope_pb2.Priority.ValueType = envelope_pb2.NORMAL,
    expires: dt.datetime | None = None,
    in_reply_to: str = "",
    references: str = "",
    watchlist_id: str = "",
    watchlist_version: int = 0,
    message_id: str | None = None,
    created: dt.datetime | None = None,
    attachments: Sequence[envelope_pb2.AttachmentRef] = (),
    legal_basis: str = "",
    case_reference: str = "",
    operator: str = "",
    content_key: bytes | None = None,
    sign: bool = True,
    _content_key: bytes | None = None,
    _nonce: bytes | None = None,
) -> envelope_pb2.Envelope:
    """Seal `body` from `sender` for `recipients` (as addressed: agencies and/or groups).

    `recipient_keys` holds one verified key bundle per recipient agency after group expansion;
    the content key is wrapped for exactly these agencies. `attachments` are the references of
    attachments already encrypted under keys derived from `content_key` for this `message_id`
    (see `broker.protocol.attachments`); `content_key` must then be the fresh key from
    `new_content_key` they were derived from, used for this message only. `legal_basis`,
    `case_reference` and `operator` justify the disclosure (covered by the header signature only,
    docs/protocol.md section 22, Justification). With `sign=False` the envelope has no outer
    signature yet: pass it, with the others of its batch, to `sign_envelopes`.
    `_content_key` and `_nonce` exist only
    so that `scripts/make_vectors.py` can produce reproducible test vectors: never pass them
    otherwise (a repeated key and nonce destroys AES-GCM's security).
    Raise `ValueError` for arguments that cannot make a valid envelope.
    """
    # 0. Arguments. These are programming errors of the caller, hence ValueError.
    _check_seal_arguments(recipients, recipient_keys, kind)
    if identity_key.public_key() != certificate.public_key():
        raise ValueError("identity_key does not belong to certificate")
    message_id = uuid7() if message_id is None else message_id
    if not _UUID.fullmatch(message_id):
        raise ValueError(f"message_id {message_id!r} is not a lowercase canonical UUID")
    created = _utc_now() if created is None else created
    validation.require_aware(created, "created")
    content_key = _choose_content_key(content_key, _content_key, attachments)
    nonce = os.urandom(_NONCE_LEN) if _nonce is None else _nonce
    if len(content_key) != _CONTENT_KEY_LEN or len(nonce) != _NONCE_LEN:
        raise ValueError("content key must be 32 bytes and nonce 12 bytes")

    # 1. The header, without its digests for now (they depend on the ciphertext and wrapped keys).
    header = envelope_pb2.Header(
        version=PROTOCOL_VERSION,
        message_id=message_id,
        sender=sender,
        sender_cert_sha256=certificate_sha256(certificate),
        recipients=recipients,
        kind=kind,
        priority=priority,
        in_reply_to=in_reply_to,
        watchlist_id=watchlist_id,
        watchlist_version=watchlist_version,
        references=references,
        attachments=attachments,
        legal_basis=legal_basis,
        case_reference=case_reference,
        operator=operator,
    )
    if handling is not None:
        header.handling.CopyFrom(handling)
    header.created.FromDatetime(created)
    if expires is not None:
        validation.require_aware(expires, "expires")
        if expires <= created:
            raise ValueError("expires must be later than created")
        header.expires.FromDatetime(expires)

    # 2. Inner signature over the plaintext and its context.
    inner_signature = sign_identity(identity_key, _pae.content_signing_input(header, content_type, body))
    content = envelope_pb2.Content(content_type=content_type, body=body, inner_signature=inner_signature)

    # 3. Encrypt once; the associated data binds every non-digest header field (see _pae.content_aad).
    ciphertext = nonce + AESGCM(content_key).encrypt(nonce, content.SerializeToString(), _pae.content_aad(header))

    # 4. Wrap the content key for each recipient agency with the suite of its bundle.
    wrapped_keys = [
        envelope_pb2.WrappedKey(
            recipient=agency,
            key_id=bundle.key_id,
            enc=hpke_suite(bundle.suite).encrypt(
                content_key,
                public_key_of(bundle),
                info=_pae.key_wrap_info(PROTOCOL_VERSION, message_id, agency),
            ),
        )
        for agency, bundle in sorted(recipient_keys.items())
    ]

    # 5. Digests into the header, then the outer signature over the exact header bytes.
    header.ciphertext_sha256 = hashlib.sha256(ciphertext).digest()
    header.wrapped_keys_sha256 = _pae.wrapped_keys_sha256(wrapped_keys)
    envelope = envelope_pb2.Envelope(
        header=header.SerializeToString(), ciphertext=ciphertext, wrapped_keys=wrapped_keys
    )
    if sign:
        sign_envelopes([envelope], identity_key)
    return envelope


def sign_envelopes(envelopes: Sequence[envelope_pb2.Envelope], identity_key: ec.EllipticCurvePrivateKey) -> None:
    """Give sealed envelopes their outer signature, in place: one envelope its own header signature
    (section 6.2 step 7), several one batch signature over their headers' tree (section 21)."""
    if len(envelopes) == 1:
        envelope = envelopes[0]
        envelope.ClearField("batch_signature")
        envelope.header_signature = sign_identity(identity_key, _pae.header_signing_input(envelope.header))
        return
    signatures = batch.sign_batch(batch.HEADER, [envelope.header for envelope in envelopes], identity_key)
    for envelope, signature in zip(envelopes, signatures, strict=True):
        envelope.header_signature = b""
        envelope.batch_signature.CopyFrom(signature)


def _check_seal_arguments(
    recipients: Sequence[str], recipient_keys: Mapping[str, envelope_pb2.KeyBundle], kind: envelope_pb2.Kind.ValueType
) -> None:
    if not recipients:
        raise ValueError("an envelope needs at least one recipient")
    if len(set(recipients)) != len(recipients) or not all(recipients):
        raise ValueError("recipients must be distinct, non-empty names")
    if not recipient_keys:
        raise ValueError("recipient_keys is empty: nobody could open the envelope")
    for agency, bundle in recipient_keys.items():
        if bundle.agency != agency:
            raise ValueError(f"key bundle for {agency!r} belongs to {bundle.agency!r}")
    if kind == envelope_pb2.KIND_UNSPECIFIED:
        raise ValueError("kind must be set")


def _choose_content_key(
    content_key: bytes | None, fixed: bytes | None, attachments: Sequence[envelope_pb2.AttachmentRef]
) -> bytes:
    if content_key is not None and fixed is not None:
        raise ValueError("pass content_key or _content_key, not both")
    if attachments and content_key is None and fixed is None:
        raise ValueError("attachments were encrypted under a content key: pass it as content_key")
    if len(attachments) > MAX_ATTACHMENTS:
        raise ValueError(f"at most {MAX_ATTACHMENTS} attachments per envelope")
    chosen = content_key if content_key is not None else fixed
    return new_content_key() if chosen is None else chosen


def _check_header_fields(header: envelope_pb2.Header) -> None:
    """Refuse a signed header that is not a well-formed version-1 header."""
    if header.version != PROTOCOL_VERSION:
        raise VerificationError(f"unsupported protocol version {header.version}")
    if not _UUID.fullmatch(header.message_id):
        raise VerificationError(f"message id {header.message_id!r} is not a lowercase canonical UUID")
    if not header.recipients:
        raise VerificationError("envelope has no recipients")
    if len(set(header.recipients)) != len(header.recipients):
        raise VerificationError("envelope header lists a recipient twice")
    if header.kind == envelope_pb2.KIND_UNSPECIFIED:
        raise VerificationError("envelope kind is unspecified")
    if not header.HasField("created"):
        raise VerificationError("envelope has no creation time")


def verify_outer(
    envelope: envelope_pb2.Envelope,
    sender_certificate: x509.Certificate,
    *,
    max_bytes: int | None = None,
    roots: batch.VerifiedRoots | None = None,
    checked: bool = False,
) -> envelope_pb2.Header:
    """Verify what anyone can verify without decrypting, and return the parsed header.

    This is the broker's check before storing; recipients run it first too. It does not check the
    certificate chain, revocation or the caller's identity: the caller has done that for
    `sender_certificate`. With `roots`, a batch root verified before is not verified again.
    `checked` says the caller already ran `validation.parse_header` on this envelope: the field
    checks of section 20 are not repeated (the same bytes give the same answer), the signature and
    digest checks all are. Raise `VerificationError` (or `ProtocolError` when over `max_bytes`).
    """
    public_key = identity_public_key(sender_certificate)
    return _verify_outer(envelope, sender_certificate, public_key, max_bytes, roots, checked=checked)


def _verify_outer(
    envelope: envelope_pb2.Envelope,
    sender_certificate: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    max_bytes: int | None,
    roots: batch.VerifiedRoots | None,
    *,
    checked: bool = False,
) -> envelope_pb2.Header:
    """`verify_outer` with the certificate's key already extracted (opening reuses it)."""
    # 1. Size, before any work.
    if max_bytes is not None and envelope.ByteSize() > max_bytes:
        raise ProtocolError(f"envelope is {envelope.ByteSize()} bytes, over the limit of {max_bytes}")
    if not checked:
        with validation.verifying():
            validation.check_envelope(envelope)
    # 2. Outer signature over the exact header bytes, alone or through its batch's root (section 21);
    #    nothing unauthenticated is parsed before this.
    sender_sha256 = certificate_sha256(sender_certificate)
    batch.verify_signed(
        batch.HEADER,
        envelope.header,
        envelope.header_signature,
        batch.batch_of(envelope),
        public_key=public_key,
        signer_sha256=sender_sha256,
        roots=roots,
    )
    try:
        header = envelope_pb2.Header.FromString(envelope.header)
    except DecodeError as exc:
        raise VerificationError("envelope header does not parse") from exc
    # 3. The header is well formed, every field in its range (broker.protocol.validation).
    _check_header_fields(header)
    if not checked:
        with validation.verifying():
            validation.check_header(header)
    # 4. The header names the certificate that signed it, and its agency as sender.
    if header.sender_cert_sha256 != sender_sha256:
        raise VerificationError("header sender_cert_sha256 does not match the sender certificate")
    certified = agency_of_certificate(sender_certificate)
    if header.sender != certified:
        raise VerificationError(f"header sender {header.sender!r} is not the certificate's agency {certified!r}")
    # 5. The digests bind the ciphertext and the wrapped keys to the signed header.
    if hashlib.sha256(envelope.ciphertext).digest() != header.ciphertext_sha256:
        raise VerificationError("ciphertext does not match the header's ciphertext_sha256")
    wrapped_recipients = [key.recipient for key in envelope.wrapped_keys]
    if not wrapped_recipients:
        raise VerificationError("envelope has no wrapped keys")
    if len(set(wrapped_recipients)) != len(wrapped_recipients):
        raise VerificationError("envelope has two wrapped keys for one recipient")
    if _pae.wrapped_keys_sha256(envelope.wrapped_keys) != header.wrapped_keys_sha256:
        raise VerificationError("wrapped keys do not match the header's wrapped_keys_sha256")
    return header


def open_envelope(
    envelope: envelope_pb2.Envelope,
    *,
    recipient: str,
    keys: Mapping[str, EncryptionKey],
    sender_certificate: x509.Certificate,
    roots: batch.VerifiedRoots | None = None,
) -> OpenedMessage:
    """Verify and decrypt an envelope addressed to `recipient`, holding `keys` (by key id).

    `sender_certificate` must already be verified by the caller as the certificate of the header's
    sender (chain, validity, revocation); `roots` caches verified batch roots (see `verify_outer`).
    Raise `VerificationError` if anything does not match.
    """
    # 1. Everything the broker checked.
    public_key = identity_public_key(sender_certificate)
    header = _verify_outer(envelope, sender_certificate, public_key, None, roots)
    # 2. The content key wrapped for us, under a key we hold (old and new keys during rotation).
    wrapped = next((key for key in envelope.wrapped_keys if key.recipient == recipient), None)
    if wrapped is None:
        raise VerificationError(f"envelope {header.message_id} is not addressed to {recipient}")
    key = keys.get(wrapped.key_id)
    if key is None:
        raise VerificationError(f"no private key {wrapped.key_id!r} of {recipient} to open {header.message_id}")
    try:
        content_key = hpke_suite(key.suite).decrypt(
            wrapped.enc,
            key.private_key,
            info=_pae.key_wrap_info(header.version, header.message_id, recipient),
        )
    except (InvalidTag, ValueError):
        raise VerificationError(f"wrapped key for {recipient} does not decrypt") from None
    if len(content_key) != _CONTENT_KEY_LEN:
        raise VerificationError(f"wrapped key for {recipient} is not a 32-byte content key")
    # 3. Decrypt; the associated data rebuilt from this header must be the one the sender used.
    ciphertext = envelope.ciphertext
    if len(ciphertext) < _NONCE_LEN + _TAG_LEN:
        raise VerificationError("ciphertext is too short")
    try:
        plaintext = AESGCM(content_key).decrypt(
            ciphertext[:_NONCE_LEN], ciphertext[_NONCE_LEN:], _pae.content_aad(header)
        )
    except InvalidTag:
        raise VerificationError("ciphertext does not decrypt under this header") from None
    try:
        content = envelope_pb2.Content.FromString(plaintext)
    except DecodeError as exc:
        raise VerificationError("decrypted content does not parse") from exc
    # 4. The inner signature covers the plaintext with the context in this header, which defeats
    #    surreptitious forwarding: re-addressed content no longer matches the signed recipient list.
    verify_identity_signature(
        public_key,
        content.inner_signature,
        _pae.content_signing_input(header, content.content_type, content.body),
        what="inner content",
    )
    return OpenedMessage(
        header=header,
        sender=header.sender,
        content_type=content.content_type,
        body=content.body,
        handling=header.handling,
        message_id=header.message_id,
        inner_signature=content.inner_signature,
        content_key=content_key,
    )
