"""Write the test vectors in `tests/vectors/` (run from anywhere); `tests/vectors/README.md` explains each file.

Every signed or hashed object of docs/protocol.md has a vector: envelopes (`envelope-*.json`, with a
refused envelope for each verification step), PAE encodings (`pae.json`), key bundles, receipts and
forward consents (`key-bundle.json`, `receipt.json`, `forward-consent.json`), batch-signed envelopes
and receipts (`batch-signatures.json`), audit entries
(`audit-entries.json`), checkpoints and signed notes (`checkpoint.json`), and a small audit log with
its export file, inclusion and consistency proofs (`audit-log.json`, `audit-export.jsonl`).
`tests/unit/protocol/test_vectors.py` checks them with this library, `tests/interop/` with Node.js.

Keys derive from fixed labels, content keys and nonces are fixed, and signatures are deterministic
(RFC 6979 ECDSA, Ed25519), so everything is reproducible except HPKE encapsulation, which is
randomized by design: a rerun changes the wrapped keys of the envelope vectors and everything that
covers them (wrapped-keys digest, header, header signature, envelope digest, receipt). Certificates
follow the production profile (SKI and AKI, 90-day leaves, one URI SAN, the role's EKU).

    .venv/bin/python scripts/make_vectors.py [--out tests/vectors]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import timestamp_pb2

from broker.api.v1 import envelope_pb2
from broker.audit.events import VOID_EVENT, AuditEvent, justification_fields
from broker.protocol import _cosignature, _merkle, _note, _pae, _stream, batch
from broker.protocol.attachments import AttachmentEncryptor
from broker.protocol.envelope import envelope_sha256, seal, sign_envelopes
from broker.protocol.keys import (
    HYBRID_SUITE,
    X25519_SUITE,
    EncryptionKey,
    KeySuite,
    hpke_suite,
    make_key_bundle,
    public_key_of,
)
from broker.protocol.receipts import make_receipt, new_receipt, sign_receipts

ROOT = Path(__file__).resolve().parent.parent
TRUST_DOMAIN = "vectors.isb"
# The production profile (broker.protocol.certificates): a 10-year root, 90-day leaves as
# broker.pki.authority issues them, and the vectors' time inside every validity window.
CA_FROM = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
CA_UNTIL = dt.datetime(2035, 1, 1, tzinfo=dt.UTC)
VALID_FROM = dt.datetime(2025, 5, 1, tzinfo=dt.UTC)
VALID_UNTIL = VALID_FROM + dt.timedelta(days=90)
CREATED = dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
AUDIT_ORIGIN = f"{TRUST_DOMAIN}/audit"
_ECDSA = ec.ECDSA(hashes.SHA256())
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _seed(label: str, length: int = 32) -> bytes:
    """Fixed key material from a label: these keys are public test data, never use them for real."""
    return hashlib.shake_256(f"isb test vector key: {label}".encode()).digest(length)


def _identity_key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(_seed(label), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _encryption_key(label: str, suite: KeySuite) -> EncryptionKey:
    x25519_key = x25519.X25519PrivateKey.from_private_bytes(_seed(label + "/x25519"))
    mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(_seed(label + "/mlkem", 64)) if suite == HYBRID_SUITE else None
    return EncryptionKey(suite, x25519_key, mlkem_key, key_id=f"{label}-key-1")


class _DeterministicKey(ec.EllipticCurvePrivateKey):
    """An identity key that signs with RFC 6979 deterministic ECDSA, so vectors are reproducible."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:  # type: ignore[override]
        if not (isinstance(signature_algorithm, ec.ECDSA) and isinstance(signature_algorithm.algorithm, hashes.SHA256)):
            raise TypeError("the protocol signs with ECDSA over SHA-256 only")
        return self._key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        return self._key.exchange(algorithm, peer_public_key)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._key.curve

    @property
    def key_size(self) -> int:
        return self._key.key_size

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        return self._key.private_numbers()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> _DeterministicKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _DeterministicKey:
        return self


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ca(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name("ISB Test Vector CA"))
        .issuer_name(_name("ISB Test Vector CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(CA_FROM)
        .not_valid_after(CA_UNTIL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )


def _agency_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    agency: str,
    serial: int,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(agency, "agency"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_UNTIL)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}/agency/{agency}")]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_cert(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _hpke_private_hex(key: EncryptionKey) -> str:
    # The same secret layout as the key file: ML-KEM-768 seed (64 bytes, if hybrid) || X25519 private key.
    return str(json.loads(key.to_bytes())["private_key"])


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _party(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, agency: str, suite: KeySuite, serial: int
) -> dict[str, Any]:
    identity_key = _identity_key(agency)
    signing_key = _DeterministicKey(identity_key)
    certificate = _agency_certificate(ca_key, ca, identity_key, agency, serial)
    encryption_key = _encryption_key(agency, suite)
    signed_bundle = make_key_bundle(
        agency,
        encryption_key,
        identity_key=signing_key,
        certificate=certificate,
        not_before=VALID_FROM,
        not_after=VALID_UNTIL,
    )
    return {
        "agency": agency,
        "identity_key_pem": _pem_key(identity_key),
        "certificate_pem": _pem_cert(certificate),
        "suite": envelope_pb2.KeySuite.Name(suite),
        "key_id": encryption_key.key_id,
        "hpke_private_key_hex": _hpke_private_hex(encryption_key),
        "hpke_public_key_hex": encryption_key.public_key_bytes.hex(),
        "key_bundle_hex": signed_bundle.bundle.hex(),
        "key_bundle_signing_input_hex": _pae.key_bundle_signing_input(signed_bundle.bundle).hex(),
        "signed_key_bundle_hex": signed_bundle.SerializeToString().hex(),
        # Not serialized; used while building the vector.
        "_identity_key": signing_key,
        "_certificate": certificate,
        "_bundle": envelope_pb2.KeyBundle.FromString(signed_bundle.bundle),
    }


def _public(party: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in party.items() if not k.startswith("_")}


def _resign(
    sender: dict[str, Any],
    header: envelope_pb2.Header,
    ciphertext: bytes,
    wrapped_keys: Sequence[envelope_pb2.WrappedKey],
) -> envelope_pb2.Envelope:
    """An envelope the sender really signed, around the given parts: digests recomputed, then the outer signature."""
    header = envelope_pb2.Header.FromString(header.SerializeToString())
    header.ciphertext_sha256 = hashlib.sha256(ciphertext).digest()
    header.wrapped_keys_sha256 = _pae.wrapped_keys_sha256(wrapped_keys)
    header_bytes = header.SerializeToString()
    return envelope_pb2.Envelope(
        header=header_bytes,
        header_signature=sender["_identity_key"].sign(_pae.header_signing_input(header_bytes), _ECDSA),
        ciphertext=ciphertext,
        wrapped_keys=wrapped_keys,
    )


def _encrypt(content_key: bytes, nonce: bytes, content: envelope_pb2.Content, header: envelope_pb2.Header) -> bytes:
    return nonce + AESGCM(content_key).encrypt(nonce, content.SerializeToString(), _pae.content_aad(header))


def _outer_refusals(
    envelope: envelope_pb2.Envelope, sender: dict[str, Any], outsider: dict[str, Any], content_key: bytes
) -> list[tuple[int, str, envelope_pb2.Envelope]]:
    """Envelopes that the outer verification (steps 1 to 5) refuses."""
    envelope_bytes = envelope.SerializeToString()
    header = envelope_pb2.Header.FromString(envelope.header)
    wrapped = list(envelope.wrapped_keys)
    cases: list[tuple[int, str, envelope_pb2.Envelope]] = []

    def copy() -> envelope_pb2.Envelope:
        return envelope_pb2.Envelope.FromString(envelope_bytes)

    # Steps 1-2: the outer signature.
    e = copy()
    e.header = _flip(e.header, 10)
    cases.append((1, "header bit flipped (outer signature no longer verifies)", e))
    e = copy()
    e.header_signature = _flip(e.header_signature, 20)
    cases.append((1, "outer signature bit flipped", e))
    # Step 3: signed headers that are not well-formed version-1 headers.
    for what, change in (
        ("header version 2", lambda h: setattr(h, "version", 2)),
        ("message id in upper case", lambda h: setattr(h, "message_id", h.message_id.upper())),
        ("a recipient listed twice", lambda h: h.recipients.append(h.recipients[0])),
        ("kind unspecified", lambda h: setattr(h, "kind", envelope_pb2.KIND_UNSPECIFIED)),
        ("no creation time", lambda h: h.ClearField("created")),
        # The limits of docs/protocol.md "Limits and refusals".
        (
            "message id of UUID version 4",
            lambda h: setattr(h, "message_id", h.message_id[:14] + "4" + h.message_id[15:]),
        ),
        ("priority 99 (not a Priority)", lambda h: setattr(h, "priority", 99)),
        ("TLP 9 (not a Tlp)", lambda h: setattr(h.handling, "tlp", 9)),
        ("classification of 65 characters", lambda h: setattr(h.handling, "classification", "X" * 65)),
        ("a recipient that is neither an agency id nor a group name", lambda h: h.recipients.append("de-bka")),
        ("expiry not later than creation", lambda h: h.expires.CopyFrom(h.created)),
        ("in_reply_to that is not a UUID", lambda h: setattr(h, "in_reply_to", "not-a-uuid")),
        ("watchlist_id of 121 characters", lambda h: setattr(h, "watchlist_id", "W" * 121)),
        ("legal_basis in lower case (not a code)", lambda h: setattr(h, "legal_basis", "naples-ii")),
        ("case_reference with a line feed", lambda h: setattr(h, "case_reference", "FR-2025\n0042")),
        ("operator of 129 characters", lambda h: setattr(h, "operator", "o" * 129)),
    ):
        h = envelope_pb2.Header.FromString(envelope.header)
        change(h)
        cases.append((3, f"signed header with {what}", _resign(sender, h, envelope.ciphertext, wrapped)))
    # Step 4: the header names another certificate or another sender.
    h = envelope_pb2.Header.FromString(envelope.header)
    h.sender_cert_sha256 = hashlib.sha256(b"another certificate").digest()
    cases.append(
        (4, "signed header naming another sender certificate", _resign(sender, h, envelope.ciphertext, wrapped))
    )
    h = envelope_pb2.Header.FromString(envelope.header)
    h.sender = outsider["agency"]
    cases.append((4, "signed header naming another sender agency", _resign(sender, h, envelope.ciphertext, wrapped)))
    # Step 5: digests.
    e = copy()
    e.ciphertext = _flip(e.ciphertext, 30)
    cases.append((5, "ciphertext bit flipped (ciphertext_sha256 mismatch)", e))
    e = copy()
    e.wrapped_keys[0].enc = _flip(e.wrapped_keys[0].enc, 40)
    cases.append((5, "wrapped key bit flipped (wrapped_keys_sha256 mismatch)", e))
    e = copy()
    e.wrapped_keys.add(
        recipient=outsider["agency"],
        key_id=outsider["key_id"],
        enc=_wrap_for(content_key, outsider["_bundle"], header.message_id),
    )
    cases.append((5, "wrapped key added for a non-recipient (re-addressed envelope)", e))
    e = copy()
    e.wrapped_keys.add().CopyFrom(e.wrapped_keys[0])
    cases.append((5, "the same wrapped key twice", e))
    return cases


def _open_refusals(
    envelope: envelope_pb2.Envelope,
    sender: dict[str, Any],
    opener: dict[str, Any],
    outsider: dict[str, Any],
    content_key: bytes,
    nonce: bytes,
    content: envelope_pb2.Content,
) -> list[tuple[int, str, envelope_pb2.Envelope]]:
    """Envelopes that pass the outer verification (signed, digests right) and fail when `opener` opens them."""
    header = envelope_pb2.Header.FromString(envelope.header)
    wrapped = list(envelope.wrapped_keys)
    cases: list[tuple[int, str, envelope_pb2.Envelope]] = []
    # Step 6: the opener holds no key for its wrapped key.
    mine = next(i for i, k in enumerate(wrapped) if k.recipient == opener["agency"])
    keys = [envelope_pb2.WrappedKey.FromString(k.SerializeToString()) for k in wrapped]
    keys[mine].key_id = "retired-key"
    cases.append(
        (
            6,
            f"wrapped key of {opener['agency']} names a key id it does not hold, re-signed",
            _resign(sender, header, envelope.ciphertext, keys),
        )
    )
    # Step 7: the opener's wrapped key does not unwrap (signed and digested correctly).
    keys = [envelope_pb2.WrappedKey.FromString(k.SerializeToString()) for k in wrapped]
    keys[mine].enc = _flip(keys[mine].enc, len(keys[mine].enc) - 5)
    cases.append(
        (
            7,
            f"wrapped key of {opener['agency']} corrupted, digest and signature redone",
            _resign(sender, header, envelope.ciphertext, keys),
        )
    )
    keys = [envelope_pb2.WrappedKey.FromString(k.SerializeToString()) for k in wrapped]
    keys[mine].enc = hpke_suite(opener["_bundle"].suite).encrypt(
        content_key, public_key_of(opener["_bundle"]), info=_pae.key_wrap_info(1, header.message_id, outsider["agency"])
    )
    cases.append(
        (
            7,
            f"wrapped key of {opener['agency']} sealed with the HPKE info of another recipient",
            _resign(sender, header, envelope.ciphertext, keys),
        )
    )
    keys = [envelope_pb2.WrappedKey.FromString(k.SerializeToString()) for k in wrapped]
    keys[mine].enc = hpke_suite(opener["_bundle"].suite).encrypt(
        content_key[:16],
        public_key_of(opener["_bundle"]),
        info=_pae.key_wrap_info(1, header.message_id, opener["agency"]),
    )
    cases.append(
        (7, "wrapped content key of 16 bytes instead of 32", _resign(sender, header, envelope.ciphertext, keys))
    )
    # Step 8: AEAD. The ciphertext was sealed under other associated data, or damaged, and re-signed.
    h = envelope_pb2.Header.FromString(envelope.header)
    h.priority = envelope_pb2.FLASH
    cases.append(
        (
            8,
            "header priority changed after encryption (associated data mismatch), re-signed",
            _resign(sender, h, envelope.ciphertext, wrapped),
        )
    )
    h = envelope_pb2.Header.FromString(envelope.header)
    h.handling.tlp = envelope_pb2.TLP_GREEN
    cases.append(
        (
            8,
            "header TLP lowered after encryption (associated data mismatch), re-signed",
            _resign(sender, h, envelope.ciphertext, wrapped),
        )
    )
    h = envelope_pb2.Header.FromString(envelope.header)
    h.recipients[:] = list(reversed(h.recipients)) if len(h.recipients) > 1 else [*h.recipients]
    if len(h.recipients) > 1:
        cases.append(
            (
                8,
                "recipients reordered after encryption (the associated data keeps header order), re-signed",
                _resign(sender, h, envelope.ciphertext, wrapped),
            )
        )
    cases.append(
        (
            8,
            "ciphertext tag corrupted, digest and signature redone",
            _resign(sender, header, _flip(envelope.ciphertext, len(envelope.ciphertext) - 1), wrapped),
        )
    )
    # Step 9: the inner signature does not cover this content in this context.
    for what, signed_input in (
        ("inner signature over another body", _pae.content_signing_input(header, content.content_type, b"other")),
        ("inner signature over another content type", _pae.content_signing_input(header, "text/plain", content.body)),
        (
            "inner signature over another recipient list (surreptitious forwarding)",
            _pae.content_signing_input(
                _with_recipients(header, [outsider["agency"]]), content.content_type, content.body
            ),
        ),
    ):
        forged = envelope_pb2.Content(
            content_type=content.content_type,
            body=content.body,
            inner_signature=sender["_identity_key"].sign(signed_input, _ECDSA),
        )
        cases.append((9, what, _resign(sender, header, _encrypt(content_key, nonce, forged, header), wrapped)))
    forged = envelope_pb2.Content(
        content_type=content.content_type,
        body=content.body,
        inner_signature=outsider["_identity_key"].sign(
            _pae.content_signing_input(header, content.content_type, content.body), _ECDSA
        ),
    )
    cases.append(
        (
            9,
            "inner signature by another agency's key",
            _resign(sender, header, _encrypt(content_key, nonce, forged, header), wrapped),
        )
    )
    return cases


def _refusals(
    envelope: envelope_pb2.Envelope,
    sender: dict[str, Any],
    opener: dict[str, Any],
    outsider: dict[str, Any],
    content_key: bytes,
    nonce: bytes,
    content: envelope_pb2.Content,
) -> list[dict[str, Any]]:
    """One refused envelope per verification step of docs/protocol.md section 6.8.

    `step` is the step that must refuse it; for steps 6 to 9 (opening) the envelope passes the outer
    verification (steps 1 to 5) and `open_as` names the recipient that tries to open it.
    """
    cases = [
        *_outer_refusals(envelope, sender, outsider, content_key),
        *_open_refusals(envelope, sender, opener, outsider, content_key, nonce, content),
    ]
    return [
        {
            "step": step,
            "description": what,
            "open_as": opener["agency"] if step >= 6 else None,
            "envelope_hex": e.SerializeToString().hex(),
        }
        for step, what, e in cases
    ]


def _with_recipients(header: envelope_pb2.Header, recipients: Sequence[str]) -> envelope_pb2.Header:
    copy = envelope_pb2.Header.FromString(header.SerializeToString())
    copy.recipients[:] = list(recipients)
    return copy


def make_vector(
    name: str,
    description: str,
    *,
    recipients: Sequence[tuple[str, KeySuite]],
    addressed: Sequence[str],
    body: bytes,
    content_type: str,
    message_id: str,
    attachments: Sequence[tuple[bytes, int, str]] = (),
    justification: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build one envelope vector: seal a message with fixed inputs and record every intermediate value.

    `attachments` are (plaintext, chunk size, media type): each is encrypted under its key derived
    from the content key and recorded chunk by chunk, with tampered chunk streams to refuse.
    """
    ca_key, ca = _authority()
    sender = _party(ca_key, ca, "FR-CUSTOMS", X25519_SUITE, 100)
    parties = [_party(ca_key, ca, agency, suite, 101 + i) for i, (agency, suite) in enumerate(recipients)]
    outsider = _party(ca_key, ca, "ES-AEAT", X25519_SUITE, 199)
    content_key = _seed(name + "/content-key")
    nonce = _seed(name + "/nonce", 12)
    handling = envelope_pb2.Handling(
        tlp=envelope_pb2.TLP_AMBER,
        classification="RESTREINT UE",
        source_reliability=envelope_pb2.SOURCE_B,
        information_accuracy=envelope_pb2.ACCURACY_2,
    )
    attachment_vectors = [
        make_attachment(content_key, message_id, index, plaintext, chunk_size, media_type)
        for index, (plaintext, chunk_size, media_type) in enumerate(attachments)
    ]
    envelope = seal(
        sender="FR-CUSTOMS",
        identity_key=sender["_identity_key"],
        certificate=sender["_certificate"],
        recipients=addressed,
        recipient_keys={p["agency"]: p["_bundle"] for p in parties},
        kind=envelope_pb2.ALERT,
        body=body,
        content_type=content_type,
        handling=handling,
        priority=envelope_pb2.HIGH,
        expires=CREATED + dt.timedelta(days=30),
        message_id=message_id,
        created=CREATED,
        _content_key=content_key,
        _nonce=nonce,
        attachments=[a.pop("_ref") for a in attachment_vectors],
        legal_basis=(justification or {}).get("legal_basis", ""),
        case_reference=(justification or {}).get("case_reference", ""),
        operator=(justification or {}).get("operator", ""),
    )
    # Decrypt our own ciphertext to record the content bytes (they hold the inner signature).
    header = envelope_pb2.Header.FromString(envelope.header)
    aad = _pae.content_aad(header)
    content_bytes = AESGCM(content_key).decrypt(nonce, envelope.ciphertext[12:], aad)
    content = envelope_pb2.Content.FromString(content_bytes)
    envelope_bytes = envelope.SerializeToString()
    signed_receipt = make_receipt(
        message_id=message_id,
        envelope_sha256=envelope_sha256(envelope_bytes),
        recipient=parties[0]["agency"],
        status=envelope_pb2.READ,
        identity_key=parties[0]["_identity_key"],
        time=CREATED + dt.timedelta(minutes=5),
    )
    return {
        "name": name,
        "description": description,
        "protocol_version": 1,
        "pae": "ISBv1 SP LEN(type) SP type (SP LEN(field) SP field)*; lists: (LEN(item) SP item SP)*",
        "trust_domain": TRUST_DOMAIN,
        "verification_time": CREATED.isoformat(),
        "ca_certificate_pem": _pem_cert(ca),
        "sender": _public(sender),
        "recipients": [_public(p) for p in parties],
        "non_recipient": _public(outsider),
        "inputs": {
            "message_id": message_id,
            "created": CREATED.isoformat(),
            "expires": (CREATED + dt.timedelta(days=30)).isoformat(),
            "recipients": list(addressed),
            "kind": "ALERT",
            "priority": "HIGH",
            "handling": {
                "tlp": "TLP_AMBER",
                "classification": handling.classification,
                "source_reliability": "SOURCE_B",
                "information_accuracy": "ACCURACY_2",
            },
            "content_type": content_type,
            **({"justification": dict(justification)} if justification else {}),
            "body_hex": body.hex(),
            "content_key_hex": content_key.hex(),
            "nonce_hex": nonce.hex(),
        },
        "intermediate": {
            "content_signing_input_hex": _pae.content_signing_input(header, content_type, body).hex(),
            "inner_signature_hex": content.inner_signature.hex(),
            "content_hex": content_bytes.hex(),
            "content_aad_hex": aad.hex(),
            "ciphertext_hex": envelope.ciphertext.hex(),
            "ciphertext_sha256_hex": header.ciphertext_sha256.hex(),
            "wrapped_keys": [
                {
                    "recipient": key.recipient,
                    "key_id": key.key_id,
                    "info_hex": _pae.key_wrap_info(1, message_id, key.recipient).hex(),
                    "enc_hex": key.enc.hex(),
                    "pae_hex": _pae.pae(_pae.WRAPPED_KEY, key.recipient.encode(), key.key_id.encode(), key.enc).hex(),
                }
                for key in envelope.wrapped_keys
            ],
            "wrapped_keys_sha256_hex": header.wrapped_keys_sha256.hex(),
            "sender_cert_sha256_hex": header.sender_cert_sha256.hex(),
            "header_hex": envelope.header.hex(),
            "header_signing_input_hex": _pae.header_signing_input(envelope.header).hex(),
            "header_signature_hex": envelope.header_signature.hex(),
        },
        "envelope_hex": envelope_bytes.hex(),
        "envelope_sha256_hex": envelope_sha256(envelope_bytes).hex(),
        "receipt": {
            "signer": parties[0]["agency"],
            "receipt_signing_input_hex": _pae.receipt_signing_input(signed_receipt.receipt).hex(),
            "signed_receipt_hex": signed_receipt.SerializeToString().hex(),
        },
        "must_be_refused": _refusals(envelope, sender, parties[0], outsider, content_key, nonce, content),
        "attachments": attachment_vectors,
    }


def make_attachment(
    content_key: bytes, message_id: str, index: int, plaintext: bytes, chunk_size: int, media_type: str
) -> dict[str, Any]:
    """One attachment, chunk by chunk (docs/protocol.md "Attachments"), and chunk streams to refuse."""
    key = _stream.attachment_key(content_key, 1, message_id, index)
    encryptor = AttachmentEncryptor(
        key, io.BytesIO(plaintext), len(plaintext), chunk_size=chunk_size, media_type=media_type
    )
    encrypted = [data for _, data in encryptor.encrypted_chunks()]
    ref = encryptor.reference()
    n = len(encrypted)
    chunks = [
        {
            "index": i,
            "nonce_hex": _stream.nonce(i, last=i == n - 1).hex(),
            "plaintext_hex": plaintext[i * chunk_size : (i + 1) * chunk_size].hex(),
            "ciphertext_hex": data.hex(),
            "sha256_hex": hashlib.sha256(data).hexdigest(),
        }
        for i, data in enumerate(encrypted)
    ]
    # Each stream to refuse is a sequence of positions into `chunks`, with some chunks replaced:
    # a reader given it must raise before it has returned all of the plaintext.
    last_unflagged = _stream.encrypt_chunk(AESGCM(key), n - 1, plaintext[(n - 1) * chunk_size :], last=False)
    tampered: list[dict[str, Any]] = [
        {"description": "truncated: last chunk missing", "sequence": list(range(n - 1))},
        {"description": "extended: the last chunk repeated after itself", "sequence": [*range(n), n - 1]},
        {
            "description": "bit 0 of byte 5 of chunk 0 flipped",
            "sequence": list(range(n)),
            "replace": {"0": _flip(encrypted[0], 5).hex()},
        },
        {
            "description": "last chunk encrypted without the last-chunk flag",
            "sequence": list(range(n)),
            "replace": {str(n - 1): last_unflagged.hex()},
        },
    ]
    if n > 1:
        tampered.append({"description": "reordered: chunks 0 and 1 exchanged", "sequence": [1, 0, *range(2, n)]})
    return {
        "index": index,
        "key_info_hex": _pae.attachment_key_info(1, message_id, index).hex(),
        "key_hex": key.hex(),
        "size": len(plaintext),
        "chunk_size": chunk_size,
        "media_type": media_type,
        "attachments_pae_field_hex": _pae.encode_attachments([ref]).hex(),
        "sha256_hex": ref.sha256.hex(),
        "chunks": chunks,
        "must_be_refused": tampered,
        "_ref": ref,
    }


def _wrap_for(content_key: bytes, bundle: envelope_pb2.KeyBundle, message_id: str) -> bytes:
    """Wrap the content key for one more agency, as a recipient re-addressing the envelope would."""
    return hpke_suite(bundle.suite).encrypt(
        content_key, public_key_of(bundle), info=_pae.key_wrap_info(1, message_id, bundle.agency)
    )


def _authority() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key = _identity_key("ca")
    return ca_key, _ca(ca_key)


# --- PAE -------------------------------------------------------------------------------------------


def pae_vector() -> dict[str, Any]:
    """The encoding rules of docs/protocol.md section 4, one case each."""
    created = envelope_pb2.Header()
    created.created.FromDatetime(CREATED)
    handling = envelope_pb2.Handling(
        tlp=envelope_pb2.TLP_AMBER,
        classification="RESTREINT UE",
        source_reliability=envelope_pb2.SOURCE_B,
        information_accuracy=envelope_pb2.ACCURACY_2,
    )

    def case(description: str, encoded: bytes, **inputs: Any) -> dict[str, Any]:
        return {
            "description": description,
            "inputs": inputs,
            "output_hex": encoded.hex(),
            "output_text": encoded.decode("utf-8", errors="replace"),
        }

    return {
        "name": "pae",
        "description": "PAE(type, fields...) and the field encodings of docs/protocol.md section 4",
        "pae": [
            case("no fields", _pae.pae("isb.v1.header"), type="isb.v1.header", fields_hex=[]),
            case("one empty field", _pae.pae("isb.v1.header", b""), type="isb.v1.header", fields_hex=[""]),
            case(
                "HPKE info",
                _pae.key_wrap_info(1, "abc", "DE-BKA"),
                type="isb.v1.key-wrap",
                fields_hex=[b"1".hex(), b"abc".hex(), b"DE-BKA".hex()],
            ),
            case(
                "binary and UTF-8 fields",
                _pae.pae("isb.v1.receipt", bytes(range(5)), "é ü".encode()),
                type="isb.v1.receipt",
                fields_hex=[bytes(range(5)).hex(), "é ü".encode().hex()],
            ),
        ],
        "list": [
            case("empty list", _pae.encode_list([]), items=[]),
            case("items with spaces and an empty item", _pae.encode_list([b"A B", b"", b"C"]), items=["A B", "", "C"]),
        ],
        "recipients": [
            case(
                "sorted by UTF-8 bytes",
                _pae.encode_recipients(["NL-FIOD", "DE-BKA", "G7-CT"], sort=True),
                recipients=["NL-FIOD", "DE-BKA", "G7-CT"],
                sort=True,
            ),
            case(
                "header order",
                _pae.encode_recipients(["NL-FIOD", "DE-BKA", "G7-CT"], sort=False),
                recipients=["NL-FIOD", "DE-BKA", "G7-CT"],
                sort=False,
            ),
        ],
        "integer": [case(str(n), _pae.encode_int(n), decimal=str(n)) for n in (0, 7, 18446744073709551615)],
        "timestamp": [
            case(
                "set",
                _pae.encode_timestamp(created.created),
                seconds=created.created.seconds,
                nanos=created.created.nanos,
            ),
            case("whole second", _pae.encode_timestamp(timestamp_pb2.Timestamp(seconds=5)), seconds=5, nanos=0),
            case("unset", _pae.encode_timestamp(created.expires, present=False), seconds=None, nanos=None),
        ],
        "handling": [
            case(
                "AMBER, label, B2",
                _pae.encode_handling(handling),
                tlp=3,
                classification="RESTREINT UE",
                source_reliability=2,
                information_accuracy=2,
            ),
            case(
                "unset",
                _pae.encode_handling(envelope_pb2.Handling()),
                tlp=0,
                classification="",
                source_reliability=0,
                information_accuracy=0,
            ),
        ],
    }


# --- key bundles, receipts, forward consents ------------------------------------------------------


def _signer_block(ca: x509.Certificate, party: dict[str, Any]) -> dict[str, Any]:
    return {
        "agency": party["agency"],
        "certificate_pem": party["certificate_pem"],
        "identity_key_pem": party["identity_key_pem"],
    }


def key_bundle_vector() -> dict[str, Any]:
    """A signed key bundle of each suite, and bundles that must be refused."""
    ca_key, ca = _authority()
    x = _party(ca_key, ca, "DE-BKA", X25519_SUITE, 300)
    h = _party(ca_key, ca, "US-CBP", HYBRID_SUITE, 301)
    other = _party(ca_key, ca, "NL-FIOD", X25519_SUITE, 302)

    def signed(agency: str, key: EncryptionKey, signer: dict[str, Any], **changes: Any) -> envelope_pb2.SignedKeyBundle:
        bundle = envelope_pb2.KeyBundle(
            agency=agency, key_id=key.key_id, suite=key.suite, public_key=key.public_key_bytes
        )
        bundle.not_before.FromDatetime(changes.pop("not_before", VALID_FROM))
        bundle.not_after.FromDatetime(changes.pop("not_after", VALID_UNTIL))
        for name, value in changes.items():
            setattr(bundle, name, value)
        data = bundle.SerializeToString()
        return envelope_pb2.SignedKeyBundle(
            bundle=data,
            signature=signer["_identity_key"].sign(_pae.key_bundle_signing_input(data), _ECDSA),
            certificate=signer["_certificate"].public_bytes(serialization.Encoding.DER),
        )

    key = _encryption_key("DE-BKA", X25519_SUITE)
    good = envelope_pb2.SignedKeyBundle.FromString(bytes.fromhex(x["signed_key_bundle_hex"]))
    flipped = envelope_pb2.SignedKeyBundle.FromString(good.SerializeToString())
    flipped.signature = _flip(flipped.signature, 12)
    refused = [
        ("signature bit flipped", "DE-BKA", flipped),
        (
            "bundle of another agency, asked for DE-BKA",
            "DE-BKA",
            envelope_pb2.SignedKeyBundle.FromString(bytes.fromhex(other["signed_key_bundle_hex"])),
        ),
        ("bundle naming DE-BKA signed with the certificate of NL-FIOD", "DE-BKA", signed("DE-BKA", key, other)),
        (
            "expired at the verification time",
            "DE-BKA",
            signed("DE-BKA", key, x, not_before=VALID_FROM, not_after=CREATED - dt.timedelta(days=1)),
        ),
        (
            "not yet valid at the verification time",
            "DE-BKA",
            signed("DE-BKA", key, x, not_before=CREATED + dt.timedelta(days=1), not_after=VALID_UNTIL),
        ),
        ("X25519 public key of 31 bytes", "DE-BKA", signed("DE-BKA", key, x, public_key=key.public_key_bytes[:31])),
        ("unknown key suite 9", "DE-BKA", signed("DE-BKA", key, x, suite=9)),
        ("empty key id", "DE-BKA", signed("DE-BKA", key, x, key_id="")),
    ]
    return {
        "name": "key-bundle",
        "description": "Signed key bundles (docs/protocol.md section 8), verified at verification_time",
        "trust_domain": TRUST_DOMAIN,
        "verification_time": CREATED.isoformat(),
        "ca_certificate_pem": _pem_cert(ca),
        "valid": [
            {
                "agency": p["agency"],
                "suite": p["suite"],
                "key_id": p["key_id"],
                "certificate_pem": p["certificate_pem"],
                "hpke_public_key_hex": p["hpke_public_key_hex"],
                "hpke_private_key_hex": p["hpke_private_key_hex"],
                "not_before": VALID_FROM.isoformat(),
                "not_after": VALID_UNTIL.isoformat(),
                "bundle_hex": p["key_bundle_hex"],
                "signing_input_hex": p["key_bundle_signing_input_hex"],
                "signed_key_bundle_hex": p["signed_key_bundle_hex"],
            }
            for p in (x, h)
        ],
        "must_be_refused": [
            {"description": what, "expected_agency": agency, "signed_key_bundle_hex": s.SerializeToString().hex()}
            for what, agency, s in refused
        ],
    }


def receipt_vector() -> dict[str, Any]:
    """A signed receipt of each status, and receipts that must be refused."""
    ca_key, ca = _authority()
    signer = _party(ca_key, ca, "DE-BKA", X25519_SUITE, 400)
    other = _party(ca_key, ca, "NL-FIOD", X25519_SUITE, 401)
    digest = hashlib.sha256(b"an envelope").digest()
    message_id = "01972b5a-8c00-7abc-8def-0123456789ad"

    def receipt(
        status: envelope_pb2.ReceiptStatus.ValueType, reason: str = "", key: dict[str, Any] = signer, **changes: Any
    ) -> envelope_pb2.SignedReceipt:
        body = envelope_pb2.Receipt(
            message_id=message_id,
            envelope_sha256=changes.pop("envelope_sha256", digest),
            recipient=changes.pop("recipient", signer["agency"]),
            status=status,
            reason=reason,
        )
        if not changes.pop("no_time", False):
            body.time.FromDatetime(CREATED + dt.timedelta(minutes=5))
        data = body.SerializeToString()
        return envelope_pb2.SignedReceipt(
            receipt=data, signature=key["_identity_key"].sign(_pae.receipt_signing_input(data), _ECDSA)
        )

    # ERASED acknowledges a RECALL (this message id) of 01972b5a-...-0123456789ab (section 22, Erasure).
    valid = [
        receipt(envelope_pb2.DELIVERED),
        receipt(envelope_pb2.READ),
        receipt(envelope_pb2.REJECTED, "inner content signature does not verify"),
        receipt(envelope_pb2.ERASED, "01972b5a-8c00-7abc-8def-0123456789ab: erased 1 from saved attachments"),
    ]
    flipped = envelope_pb2.SignedReceipt.FromString(valid[0].SerializeToString())
    flipped.receipt = _flip(flipped.receipt, 3)
    refused = [
        ("receipt bytes changed after signing", flipped),
        ("receipt naming DE-BKA signed by NL-FIOD", receipt(envelope_pb2.DELIVERED, key=other)),
        ("receipt naming NL-FIOD signed by DE-BKA", receipt(envelope_pb2.DELIVERED, recipient="NL-FIOD")),
        ("status unspecified", receipt(envelope_pb2.RECEIPT_STATUS_UNSPECIFIED)),
        ("envelope digest of 31 bytes", receipt(envelope_pb2.DELIVERED, envelope_sha256=digest[:31])),
        ("no time", receipt(envelope_pb2.DELIVERED, no_time=True)),
    ]
    return {
        "name": "receipt",
        "description": "Signed receipts (docs/protocol.md section 9), each checked with the signer certificate",
        "trust_domain": TRUST_DOMAIN,
        "ca_certificate_pem": _pem_cert(ca),
        "signer": _signer_block(ca, signer),
        "valid": [
            {
                "status": envelope_pb2.ReceiptStatus.Name(envelope_pb2.Receipt.FromString(r.receipt).status),
                "message_id": message_id,
                "envelope_sha256_hex": digest.hex(),
                "recipient": signer["agency"],
                "reason": envelope_pb2.Receipt.FromString(r.receipt).reason,
                "receipt_hex": r.receipt.hex(),
                "signing_input_hex": _pae.receipt_signing_input(r.receipt).hex(),
                "signed_receipt_hex": r.SerializeToString().hex(),
            }
            for r in valid
        ],
        "must_be_refused": [
            {"description": what, "signed_receipt_hex": r.SerializeToString().hex()} for what, r in refused
        ],
    }


def forward_consent_vector() -> dict[str, Any]:
    """A signed forward consent of the original sender, and consents that must be refused."""
    ca_key, ca = _authority()
    signer = _party(ca_key, ca, "FR-CUSTOMS", X25519_SUITE, 500)
    other = _party(ca_key, ca, "DE-BKA", X25519_SUITE, 501)
    message_id = "01972b5a-8c00-7abc-8def-0123456789ae"

    def consent(key: dict[str, Any] = signer, **changes: Any) -> envelope_pb2.SignedForwardConsent:
        body = envelope_pb2.ForwardConsent(
            message_id=changes.pop("message_id", message_id),
            forwarder=changes.pop("forwarder", "DE-BKA"),
            recipients=changes.pop("recipients", ["ES-AEAT", "NL-FIOD"]),
        )
        if not changes.pop("no_expiry", False):
            body.not_after.FromDatetime(CREATED + dt.timedelta(days=7))
        data = body.SerializeToString()
        return envelope_pb2.SignedForwardConsent(
            consent=data, signature=key["_identity_key"].sign(_pae.forward_consent_signing_input(data), _ECDSA)
        )

    good = consent()
    flipped = envelope_pb2.SignedForwardConsent.FromString(good.SerializeToString())
    flipped.signature = _flip(flipped.signature, 15)
    refused = [
        ("signature bit flipped", flipped),
        ("signed by the forwarder instead of the original sender", consent(key=other)),
        ("no recipients", consent(recipients=[])),
        ("no forwarder", consent(forwarder="")),
        ("no expiry", consent(no_expiry=True)),
    ]
    return {
        "name": "forward-consent",
        "description": "Signed forward consents (docs/protocol.md section 10), checked with the original sender's "
        "certificate",
        "trust_domain": TRUST_DOMAIN,
        "ca_certificate_pem": _pem_cert(ca),
        "signer": _signer_block(ca, signer),
        "valid": [
            {
                "message_id": message_id,
                "forwarder": "DE-BKA",
                "recipients": ["ES-AEAT", "NL-FIOD"],
                "not_after": (CREATED + dt.timedelta(days=7)).isoformat(),
                "consent_hex": good.consent.hex(),
                "signing_input_hex": _pae.forward_consent_signing_input(good.consent).hex(),
                "signed_forward_consent_hex": good.SerializeToString().hex(),
            }
        ],
        "must_be_refused": [
            {"description": what, "signed_forward_consent_hex": c.SerializeToString().hex()} for what, c in refused
        ],
    }


# --- audit entries, checkpoints, the log and its export -------------------------------------------


def _audit_events() -> list[AuditEvent]:
    t = CREATED
    mid = "01972b5a-8c00-7abc-8def-0123456789ab"
    digest = hashlib.sha256(b"an envelope").hexdigest()
    return [
        AuditEvent(
            "agency.registered",
            "spiffe://vectors.isb/admin/alice",
            t,
            agency="DE-BKA",
            fields={"display_name": "Bundeskriminalamt"},
        ),
        AuditEvent(
            "keybundle.published",
            "spiffe://vectors.isb/agency/DE-BKA",
            t,
            agency="DE-BKA",
            fields={"key_id": "DE-BKA-key-1", "suite": "X25519_HKDF_SHA256_AES_256_GCM"},
        ),
        AuditEvent(
            "envelope.accepted",
            "spiffe://vectors.isb/agency/FR-CUSTOMS",
            t,
            message_id=mid,
            agency="FR-CUSTOMS",
            fields={
                "envelope_sha256": digest,
                "recipients": ["DE-BKA", "NL-FIOD"],
                "kind": "ALERT",
                "tlp": "AMBER",
                "size": 1843,
                **justification_fields("NAPLES-II", "FR-2025-0042", "op-7f3a", "FR-CUSTOMS"),
            },
        ),
        AuditEvent(
            "delivery.delivered",
            "spiffe://vectors.isb/broker/node-1",
            t + dt.timedelta(seconds=1),
            message_id=mid,
            agency="DE-BKA",
            fields={"recipient": "DE-BKA", "attempt": 1},
        ),
        AuditEvent(
            "receipt.received",
            "spiffe://vectors.isb/agency/DE-BKA",
            t + dt.timedelta(seconds=2),
            message_id=mid,
            agency="DE-BKA",
            fields={"recipient": "DE-BKA", "status": "READ"},
        ),
        AuditEvent(
            "request.rejected",
            "spiffe://vectors.isb/agency/NL-FIOD",
            t + dt.timedelta(seconds=3),
            agency="NL-FIOD",
            fields={
                "rpc": "Send",
                "reason": 'refused by policy: «RED» to a group "G7-CT"\n',
                "status": "PERMISSION_DENIED",
            },
        ),
        AuditEvent(
            "audit.query",
            "spiffe://vectors.isb/auditor/eve",
            t + dt.timedelta(seconds=4),
            fields={
                "rpc": "Export",
                **justification_fields("LED-ART8", "DPO-2025-7", "dpo-1", "spiffe://vectors.isb/auditor/eve"),
            },
        ),
    ]


def audit_entries_vector() -> dict[str, Any]:
    """Audit events, their canonical JSON at an index, and the leaf hash; and entries that are not canonical."""
    events = _audit_events()
    valid = []
    for index, event in enumerate(events):
        entry = event.to_entry_bytes(index)
        valid.append(
            {
                "index": index,
                "entry_json": json.loads(entry),
                "entry_utf8": entry.decode(),
                "entry_hex": entry.hex(),
                "leaf_hash_hex": _merkle.leaf_hash(entry).hex(),
            }
        )
    base = events[5].to_entry_bytes(5).decode()
    document = json.loads(base)
    refused = [
        ("whitespace after separators", json.dumps(document, sort_keys=True)),
        ("keys not sorted", json.dumps(dict(reversed(document.items())), separators=(",", ":"), ensure_ascii=False)),
        ("non-ASCII characters escaped", json.dumps(document, sort_keys=True, separators=(",", ":"))),
        ("a float", base.replace('"index":5', '"index":5.0')),
        ("a null member", base.replace('{"actor"', '{"accepted":null,"actor"')),
        ("version 2", base.replace('"v":1', '"v":2')),
        (
            "no time",
            json.dumps(
                {k: v for k, v in document.items() if k != "time"},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            ),
        ),
    ]
    return {
        "name": "audit-entries",
        "description": "Audit entries as canonical JSON (docs/protocol.md section 11.1) and leaf hashes "
        "SHA-256(0x00 || entry) (section 11.2)",
        "valid": valid,
        "must_be_refused": [{"description": what, "entry_utf8": text} for what, text in refused],
    }


def audit_void_vector() -> dict[str, Any]:
    """Void entries (docs/protocol.md section 24.3): an index no event holds, in each of its three
    reasons, with their canonical bytes and leaf hashes; and a void entry that is not canonical."""
    cases = [(40, "broker:node-1", "rolled_back"), (41, "broker:node-1", "unused"), (97, "broker:node-2", "abandoned")]
    valid = []
    for index, actor, reason in cases:
        entry = AuditEvent(event=VOID_EVENT, actor=actor, time=CREATED, fields={"reason": reason}).to_entry_bytes(index)
        valid.append(
            {
                "index": index,
                "reason": reason,
                "entry_utf8": entry.decode(),
                "entry_hex": entry.hex(),
                "leaf_hash_hex": _merkle.leaf_hash(entry).hex(),
            }
        )
    base = str(valid[0]["entry_utf8"])
    return {
        "name": "audit-void",
        "description": "Void entries (docs/protocol.md section 24.3): ordinary entries of section 11.1 with "
        "event audit.void and fields.reason rolled_back, unused or abandoned",
        "valid": valid,
        "must_be_refused": [
            {
                "description": "its index member is not its position in the log (41 at position 40)",
                "position": 40,
                "entry_utf8": base.replace('"index":40', '"index":41'),
            },
            {
                "description": "whitespace after a separator",
                "position": 40,
                "entry_utf8": base.replace('":"audit', '": "audit'),
            },
        ],
    }


def _audit_signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_seed("audit key"))


def _audit_key_block() -> dict[str, Any]:
    key = _audit_signer()
    public = key.public_key()
    return {
        "origin": AUDIT_ORIGIN,
        "key_name": AUDIT_ORIGIN,
        "ed25519_private_key_hex": key.private_bytes_raw().hex(),
        "ed25519_public_key_hex": public.public_bytes_raw().hex(),
        "audit_pub_pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "key_id_hex": _note.key_id(AUDIT_ORIGIN, public).hex(),
        "vkey": _note.encode_vkey(AUDIT_ORIGIN, public),
    }


def checkpoint_vector() -> dict[str, Any]:
    """Signed checkpoints (C2SP tlog-checkpoint in a signed note) and notes that must be refused."""
    key = _audit_signer()
    witness = Ed25519PrivateKey.from_private_bytes(_seed("witness key"))
    root = _merkle.root_from_leaves([_merkle.leaf_hash(e.to_entry_bytes(i)) for i, e in enumerate(_audit_events())])
    size = len(_audit_events())
    when = CREATED + dt.timedelta(seconds=5)
    extensions = (_note.timestamp_extension(when),)
    text = _note.checkpoint_text(AUDIT_ORIGIN, size, root, extensions)
    note = _note.sign_checkpoint(AUDIT_ORIGIN, size, root, AUDIT_ORIGIN, key, extensions=extensions)
    witness_line = _note.sign_note(text, "witness.example/w1", witness).decode().split("\n\n")[-1]
    cosigned = note.decode() + witness_line
    empty = _note.sign_checkpoint(AUDIT_ORIGIN, 0, _merkle.EMPTY_ROOT, AUDIT_ORIGIN, key, extensions=extensions)
    other_key = Ed25519PrivateKey.from_private_bytes(_seed("another key"))
    signature_line = note.decode().split("\n\n")[-1]
    refused = [
        ("tree size changed after signing", note.decode().replace(f"\n{size}\n", f"\n{size + 1}\n", 1)),
        (
            "signed by another key under the same name",
            _note.sign_checkpoint(AUDIT_ORIGIN, size, root, AUDIT_ORIGIN, other_key, extensions=extensions).decode(),
        ),
        ("signed only by a witness", _note.sign_note(text, "witness.example/w1", witness).decode()),
        (
            "another origin",
            _note.sign_checkpoint("other.example/audit", size, root, AUDIT_ORIGIN, key, extensions=extensions).decode(),
        ),
        ("no blank line before the signatures", text + signature_line),
        (
            "root hash not canonical base64 (no padding)",
            _note.sign_note(
                text.replace(base64.b64encode(root).decode(), base64.b64encode(root).decode().rstrip("=")),
                AUDIT_ORIGIN,
                key,
            ).decode(),
        ),
        (
            "tree size with a leading zero",
            _note.sign_note(text.replace(f"\n{size}\n", f"\n0{size}\n", 1), AUDIT_ORIGIN, key).decode(),
        ),
        (
            "a control character in the text",
            _note.sign_note(text, AUDIT_ORIGIN, key).decode().replace("timestamp ", "timestamp\t"),
        ),
    ]
    return {
        "name": "checkpoint",
        "description": "Checkpoints of the audit log (docs/protocol.md section 12): C2SP tlog-checkpoint text in a "
        "C2SP signed note, Ed25519; the signature covers `text`",
        "audit_key": _audit_key_block(),
        "valid": [
            {
                "description": "checkpoint of the 7 entries of audit-entries.json",
                "tree_size": size,
                "root_hash_hex": root.hex(),
                "timestamp": int(when.timestamp()),
                "text": text,
                "note": note.decode(),
                "note_hex": note.hex(),
                "signature_hex": base64.b64decode(signature_line.split(" ")[-1])[4:].hex(),
            },
            {
                "description": "the same checkpoint cosigned by a witness (an unknown key, to be ignored)",
                "tree_size": size,
                "root_hash_hex": root.hex(),
                "timestamp": int(when.timestamp()),
                "text": text,
                "note": cosigned,
                "note_hex": cosigned.encode().hex(),
            },
            {
                "description": "checkpoint of the empty log",
                "tree_size": 0,
                "root_hash_hex": _merkle.EMPTY_ROOT.hex(),
                "timestamp": int(when.timestamp()),
                "text": _note.checkpoint_text(AUDIT_ORIGIN, 0, _merkle.EMPTY_ROOT, extensions),
                "note": empty.decode(),
                "note_hex": empty.hex(),
            },
        ],
        "must_be_refused": [{"description": what, "note": n, "note_hex": n.encode().hex()} for what, n in refused],
    }


def audit_log_vectors() -> tuple[dict[str, Any], bytes]:
    """A small log: its entries, checkpoints at sizes 3 and 7, every inclusion proof against both, every
    consistency proof between sizes 1..7; and its export file, with exports that must fail."""
    key = _audit_signer()
    entries = [e.to_entry_bytes(i) for i, e in enumerate(_audit_events())]
    tree = _merkle.MemoryTree()
    for entry in entries:
        tree.append(_merkle.leaf_hash(entry))
    checkpoints = {}
    for size, seconds in ((3, 3), (7, 5)):
        checkpoints[size] = _note.sign_checkpoint(
            AUDIT_ORIGIN,
            size,
            tree.root(size),
            AUDIT_ORIGIN,
            key,
            extensions=(_note.timestamp_extension(CREATED + dt.timedelta(seconds=seconds)),),
        )
    inclusion = [
        {
            "index": i,
            "tree_size": n,
            "leaf_hash_hex": _merkle.leaf_hash(entries[i]).hex(),
            "root_hash_hex": tree.root(n).hex(),
            "proof_hex": [h.hex() for h in _merkle.inclusion_proof(i, n, tree.subtree)],
        }
        for n in (3, 7)
        for i in range(n)
    ]
    consistency = [
        {
            "first": m,
            "second": n,
            "first_root_hex": tree.root(m).hex(),
            "second_root_hex": tree.root(n).hex(),
            "proof_hex": [h.hex() for h in _merkle.consistency_proof(m, n, tree.subtree)],
        }
        for n in range(1, 8)
        for m in range(0, n + 1)
    ]
    proof = _merkle.inclusion_proof(5, 7, tree.subtree)
    bad_inclusion = [
        ("a proof hash flipped", 5, 7, [_flip(proof[0], 0), *proof[1:]]),
        ("the right proof for another index", 4, 7, proof),
        ("one hash too few", 5, 7, proof[:-1]),
        ("one hash too many", 5, 7, [*proof, proof[0]]),
        ("index beyond the tree", 7, 7, proof),
    ]
    cproof = _merkle.consistency_proof(3, 7, tree.subtree)
    bad_consistency = [
        ("a proof hash flipped", 3, 7, [_flip(cproof[0], 0), *cproof[1:]]),
        ("empty proof between different sizes", 3, 7, []),
        ("one hash too few", 3, 7, cproof[:-1]),
        ("the first size larger than the second", 7, 3, cproof),
    ]

    def lines(*, unsigned_tail: bool = False) -> list[str]:
        out = [
            json.dumps(
                {
                    "type": "header",
                    "format": "isb-audit-export/1",
                    "origin": AUDIT_ORIGIN,
                    "key_name": AUDIT_ORIGIN,
                    "vkey": _note.encode_vkey(AUDIT_ORIGIN, key.public_key()),
                },
                separators=(",", ":"),
            )
        ]
        for i, entry in enumerate(entries):
            out.append(
                json.dumps(
                    {
                        "type": "entry",
                        "index": i,
                        "entry": base64.b64encode(entry).decode(),
                        "leaf_hash": _merkle.leaf_hash(entry).hex(),
                    },
                    separators=(",", ":"),
                )
            )
            if i + 1 in checkpoints:
                out.append(
                    json.dumps(
                        {"type": "checkpoint", "note": base64.b64encode(checkpoints[i + 1]).decode()},
                        separators=(",", ":"),
                    )
                )
        if unsigned_tail:
            extra = AuditEvent("envelope.accepted", "spiffe://vectors.isb/agency/FR-CUSTOMS", CREATED).to_entry_bytes(7)
            out.append(
                json.dumps(
                    {
                        "type": "entry",
                        "index": 7,
                        "entry": base64.b64encode(extra).decode(),
                        "leaf_hash": _merkle.leaf_hash(extra).hex(),
                    },
                    separators=(",", ":"),
                )
            )
        return out

    good = lines()
    changed_entry = entries[1].replace(b"DE-BKA-key-1", b"DE-BKA-key-2")
    changed = json.dumps(
        {
            "type": "entry",
            "index": 1,
            "entry": base64.b64encode(changed_entry).decode(),
            "leaf_hash": _merkle.leaf_hash(changed_entry).hex(),
        },
        separators=(",", ":"),
    )
    bad_exports = [
        ("entry 1 changed, its leaf hash recomputed", [good[0], good[1], changed, *good[3:]]),
        (
            "entry 1 changed, its stored leaf hash kept",
            [
                good[0],
                good[1],
                good[2].replace(base64.b64encode(entries[1]).decode(), base64.b64encode(changed_entry).decode()),
                *good[3:],
            ],
        ),
        ("entry 2 deleted", [good[0], good[1], good[2], *good[4:]]),
        ("entries 3 and 4 swapped", [*good[:5], good[6], good[5], *good[7:]]),
        (
            "a checkpoint signed by another key",
            [
                *good[:4],
                json.dumps(
                    {
                        "type": "checkpoint",
                        "note": base64.b64encode(
                            _note.sign_checkpoint(
                                AUDIT_ORIGIN,
                                3,
                                tree.root(3),
                                AUDIT_ORIGIN,
                                Ed25519PrivateKey.from_private_bytes(_seed("another key")),
                            )
                        ).decode(),
                    },
                    separators=(",", ":"),
                ),
                *good[5:],
            ],
        ),
        ("no checkpoint at all", [line for line in good if '"checkpoint"' not in line]),
        ("no header", good[1:]),
    ]
    log_vector = {
        "name": "audit-log",
        "description": "The log of audit-entries.json: checkpoints at sizes 3 and 7, RFC 9162 inclusion proofs "
        "(section 2.1.3) and consistency proofs (section 2.1.4), and export files (docs/protocol.md "
        "sections 11-13); audit-export.jsonl is the valid export",
        "audit_key": _audit_key_block(),
        "entries_hex": [e.hex() for e in entries],
        "leaf_hashes_hex": [_merkle.leaf_hash(e).hex() for e in entries],
        "roots_hex": [tree.root(n).hex() for n in range(0, 8)],
        "checkpoints": [{"tree_size": n, "note": note.decode()} for n, note in checkpoints.items()],
        "inclusion": inclusion,
        "consistency": consistency,
        "inclusion_must_fail": [
            {
                "description": what,
                "index": i,
                "tree_size": n,
                "leaf_hash_hex": _merkle.leaf_hash(entries[min(i, 6)]).hex(),
                "root_hash_hex": tree.root(n).hex(),
                "proof_hex": [h.hex() for h in p],
            }
            for what, i, n, p in bad_inclusion
        ],
        "consistency_must_fail": [
            {
                "description": what,
                "first": m,
                "second": n,
                "first_root_hex": tree.root(min(m, 7)).hex(),
                "second_root_hex": tree.root(min(n, 7)).hex(),
                "proof_hex": [h.hex() for h in p],
            }
            for what, m, n, p in bad_consistency
        ],
        "export": {
            "file": "audit-export.jsonl",
            "entries": 7,
            "checkpoints": 2,
            "tree_size": 7,
            "root_hash_hex": tree.root(7).hex(),
        },
        "export_with_unsigned_tail": {
            "lines": lines(unsigned_tail=True),
            "entries": 8,
            "tree_size": 7,
            "unsigned_entries": 1,
        },
        "exports_must_fail": [{"description": what, "lines": bad} for what, bad in bad_exports],
    }
    return log_vector, ("\n".join(good) + "\n").encode()


def _cosigners() -> list[tuple[str, Ed25519PrivateKey]]:
    names = ["witness.customs.vectors.isb/w1", "witness.police.vectors.isb/w2", "witness.border.vectors.isb/w3"]
    return [(name, Ed25519PrivateKey.from_private_bytes(_seed(f"cosigner {n + 1}"))) for n, name in enumerate(names)]


def _witness_policy() -> str:
    """The tlog-policy of the vectors: the audit key, the three cosigners, 2 of them."""
    return "".join(
        [
            f"log {_note.encode_vkey(AUDIT_ORIGIN, _audit_signer().public_key())}\n",
            *(
                f"witness w{n + 1} {_cosignature.encode_cosigner_vkey(name, wkey.public_key())}\n"
                for n, (name, wkey) in enumerate(_cosigners())
            ),
            "group agencies 2 w1 w2 w3\n",
            "quorum agencies\n",
        ]
    )


def _cosigned_note(size: int, root: bytes, when: dt.datetime, witnesses: int = 3) -> bytes:
    """A checkpoint signed by the audit key and cosigned by the first `witnesses` cosigners."""
    extensions = (_note.timestamp_extension(when),)
    text = _note.checkpoint_text(AUDIT_ORIGIN, size, root, extensions)
    note = _note.sign_checkpoint(AUDIT_ORIGIN, size, root, AUDIT_ORIGIN, _audit_signer(), extensions=extensions)
    lines = [
        _cosignature.cosign(text, name, wkey, int(when.timestamp()) + 1 + n)
        for n, (name, wkey) in enumerate(_cosigners()[:witnesses])
    ]
    return _cosignature.attach(note, lines)


def directory_proof_vector() -> dict[str, Any]:
    """A key bundle's publication entry proven to a cosigned checkpoint (docs/protocol.md section 18.4)."""
    ca_key, ca = _authority()
    party = _party(ca_key, ca, "DE-BKA", X25519_SUITE, 300)
    signed = envelope_pb2.SignedKeyBundle.FromString(bytes.fromhex(party["signed_key_bundle_hex"]))
    bundle = envelope_pb2.KeyBundle.FromString(signed.bundle)
    events = _audit_events()
    publication = AuditEvent(
        "keybundle.published",
        "spiffe://vectors.isb/agency/DE-BKA",
        CREATED + dt.timedelta(seconds=6),
        agency="DE-BKA",
        fields={
            "bundle_sha256": hashlib.sha256(signed.bundle).hexdigest(),
            "key_id": bundle.key_id,
            "suite": envelope_pb2.KeySuite.Name(bundle.suite),
        },
    )
    index = len(events)
    events = [
        *events,
        publication,
        AuditEvent("audit.query", "spiffe://vectors.isb/auditor/a", CREATED + dt.timedelta(seconds=7)),
    ]
    entries = [e.to_entry_bytes(i) for i, e in enumerate(events)]
    tree = _merkle.MemoryTree()
    for entry in entries:
        tree.append(_merkle.leaf_hash(entry))
    size, held = tree.size, 4
    when = CREATED + dt.timedelta(seconds=8)
    note = _cosigned_note(size, tree.root(), when).decode()
    path = _merkle.inclusion_proof(index, size, tree.subtree)
    consistency = _merkle.consistency_proof(held, size, tree.subtree)
    other_tree = _merkle.MemoryTree()
    for entry in entries[:held]:
        other_tree.append(_merkle.leaf_hash(entry + b" "))
    good: dict[str, Any] = {
        "agency": "DE-BKA",
        "key_id": bundle.key_id,
        "key_bundle_audit_index": index,
        "signed_key_bundle_hex": signed.SerializeToString().hex(),
        "bundle_sha256_hex": hashlib.sha256(signed.bundle).hexdigest(),
        "entry_utf8": entries[index].decode(),
        "leaf_hash_hex": _merkle.leaf_hash(entries[index]).hex(),
        "inclusion_path_hex": [h.hex() for h in path],
        "checkpoint_note": note,
        "held_tree_size": held,
        "held_root_hash_hex": tree.root(held).hex(),
        "consistency_path_hex": [h.hex() for h in consistency],
    }
    other_entry = entries[index].decode().replace(bundle.key_id, "0" * len(bundle.key_id))
    refused: list[tuple[str, dict[str, Any]]] = [
        ("the entry names another key id", {"entry_utf8": other_entry}),
        ("the stated audit index is not the entry's", {"key_bundle_audit_index": index - 1}),
        (
            "an inclusion path hash flipped",
            {"inclusion_path_hex": [_flip(path[0], 0).hex(), *good["inclusion_path_hex"][1:]]},
        ),
        (
            "the checkpoint has one cosignature of the two the policy needs",
            {"checkpoint_note": _cosigned_note(size, tree.root(), when, witnesses=1).decode()},
        ),
        (
            "the held checkpoint is larger: a rollback",
            {"held_tree_size": size + 1, "held_root_hash_hex": tree.root().hex(), "consistency_path_hex": []},
        ),
        ("the held checkpoint is of another history: a fork", {"held_root_hash_hex": other_tree.root().hex()}),
    ]
    return {
        "name": "directory-proof",
        "description": "Directory transparency (docs/protocol.md section 18.4): the keybundle.published entry of"
        " a DE-BKA key bundle (fields.bundle_sha256 = SHA-256 of SignedKeyBundle.bundle), its RFC 9162"
        " inclusion path to a checkpoint cosigned under the policy (2 of 3), and the consistency path"
        " from a held checkpoint; each must_be_refused case changes the listed members of valid",
        "policy": _witness_policy(),
        "origin": AUDIT_ORIGIN,
        "valid": good,
        "must_be_refused": [{"description": what, "changes": changes} for what, changes in refused],
    }


def cosigned_checkpoint_vector() -> dict[str, Any]:
    """A checkpoint cosigned by three witnesses (tlog-cosignature/v1 Ed25519) and a tlog-policy for it."""
    key = _audit_signer()
    root = _merkle.root_from_leaves([_merkle.leaf_hash(e.to_entry_bytes(i)) for i, e in enumerate(_audit_events())])
    size = len(_audit_events())
    when = CREATED + dt.timedelta(seconds=5)
    extensions = (_note.timestamp_extension(when),)
    text = _note.checkpoint_text(AUDIT_ORIGIN, size, root, extensions)
    note = _note.sign_checkpoint(AUDIT_ORIGIN, size, root, AUDIT_ORIGIN, key, extensions=extensions)
    names = [name for name, _ in _cosigners()]
    witnesses: list[dict[str, Any]] = []
    lines: list[str] = []
    timestamps: list[int] = []
    for n, (name, wkey) in enumerate(_cosigners()):
        timestamp = int(when.timestamp()) + 1 + n
        line = _cosignature.cosign(text, name, wkey, timestamp)
        lines.append(line)
        timestamps.append(timestamp)
        blob = base64.b64decode(line.split(" ")[2])
        witnesses.append(
            {
                "name": name,
                "ed25519_private_key_hex": wkey.private_bytes_raw().hex(),
                "ed25519_public_key_hex": wkey.public_key().public_bytes_raw().hex(),
                "key_id_hex": _cosignature.cosigner_key_id(name, wkey.public_key()).hex(),
                "vkey": _cosignature.encode_cosigner_vkey(name, wkey.public_key()),
                "timestamp": timestamp,
                "signed_message": _cosignature.signed_message(text, timestamp).decode(),
                "signature_line": line,
                "signature_hex": blob[12:].hex(),
            }
        )
    policy = _witness_policy()
    full = _cosignature.attach(note, lines).decode()
    two = _cosignature.attach(note, [lines[0], lines[2]]).decode()
    one = _cosignature.attach(note, [lines[1]]).decode()
    other = _note.checkpoint_text(AUDIT_ORIGIN, size + 1, root, extensions)
    wrong_checkpoint = _cosignature.cosign(
        other, names[1], Ed25519PrivateKey.from_private_bytes(_seed("cosigner 2")), timestamps[1]
    )
    shifted = lines[0].split(" ")
    changed = bytearray(base64.b64decode(shifted[2]))
    changed[11] ^= 1  # the timestamp is signed: changing it breaks the signature
    changed_time = f"{shifted[0]} {shifted[1]} {base64.b64encode(bytes(changed)).decode()}\n"
    return {
        "name": "cosigned-checkpoint",
        "description": "A checkpoint of audit-entries.json cosigned by three witnesses (docs/protocol.md section"
        " 'Witnesses'): C2SP tlog-cosignature/v1 Ed25519 lines (key id SHA-256(name || 0x0A || 0x04"
        " || key)[:4], blob key id || u64 big-endian timestamp || signature over signed_message), and a"
        " C2SP tlog-policy needing 2 of the 3",
        "audit_key": _audit_key_block(),
        "checkpoint_text": text,
        "witnesses": witnesses,
        "policy": policy,
        "valid": [
            {"description": "all three cosignatures", "note": full, "cosigned_by": ["w1", "w2", "w3"]},
            {"description": "two of three: the quorum holds", "note": two, "cosigned_by": ["w1", "w3"]},
        ],
        "must_be_refused": [
            {"description": "one of three: below the quorum", "note": one},
            {
                "description": "w2's cosignature is over another checkpoint (size + 1)",
                "note": _cosignature.attach(note, [lines[0], wrong_checkpoint]).decode(),
            },
            {
                "description": "w1's timestamp changed after signing",
                "note": _cosignature.attach(note, [changed_time, lines[2]]).decode(),
            },
            {
                "description": "cosignatures without the log's signature",
                "note": text + "\n" + lines[0] + lines[1] + lines[2],
            },
        ],
    }


# --- CRL freshness ---------------------------------------------------------------------------------


def _crl(
    signer: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    number: int | None,
    this_update: dt.datetime,
    next_update: dt.datetime,
    revoked: Sequence[int],
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(issuer).last_update(this_update).next_update(next_update)
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update).build()
        )
    return builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True).public_bytes(serialization.Encoding.DER)


def crl_freshness_vector() -> dict[str, Any]:
    """CRLs a client accepts or refuses at verification_time, given the highest CRL number it has seen."""
    ca_key, ca = _authority()
    revoked_key, valid_key = _identity_key("crl/revoked DE-BKA"), _identity_key("crl/valid DE-BKA")
    revoked_cert = _agency_certificate(ca_key, ca, revoked_key, "DE-BKA", 401)
    valid_cert = _agency_certificate(ca_key, ca, valid_key, "DE-BKA", 402)
    day = dt.timedelta(days=1)
    seen = 5

    def case(description: str, expect: str, crl: bytes, **extra: Any) -> dict[str, Any]:
        return {"description": description, "expect": expect, "crl_der_hex": crl.hex(), **extra}

    current = _crl(
        ca_key, ca.subject, number=7, this_update=CREATED - day, next_update=CREATED + 6 * day, revoked=[401]
    )
    cases = [
        case(
            "current, number above the one seen: accepted; serial 401 revoked",
            "accept",
            current,
            crl_number=7,
            revoked_serials=[401],
        ),
        case(
            "equal to the number seen: accepted",
            "accept",
            _crl(ca_key, ca.subject, number=seen, this_update=CREATED - day, next_update=CREATED + 6 * day, revoked=[]),
            crl_number=seen,
            revoked_serials=[],
        ),
        case(
            "past its nextUpdate (stale): refused",
            "stale",
            _crl(ca_key, ca.subject, number=8, this_update=CREATED - 8 * day, next_update=CREATED - day, revoked=[401]),
        ),
        case(
            "nextUpdate exactly at verification_time: refused (t >= nextUpdate)",
            "stale",
            _crl(
                ca_key,
                ca.subject,
                number=8,
                this_update=CREATED - 7 * day,
                next_update=CREATED.replace(microsecond=0),
                revoked=[401],
            ),
            verification_time=CREATED.replace(microsecond=0).isoformat(),
        ),
        case(
            "CRL number 4, lower than 5 already seen (rolled back): refused",
            "rolled-back",
            _crl(ca_key, ca.subject, number=4, this_update=CREATED - day, next_update=CREATED + 6 * day, revoked=[]),
        ),
        case(
            "signed by another key under the CA's name: refused",
            "invalid",
            _crl(
                _identity_key("crl/impostor"),
                ca.subject,
                number=9,
                this_update=CREATED - day,
                next_update=CREATED + 6 * day,
                revoked=[],
            ),
        ),
        case(
            "issued by a name that is no trust anchor: refused",
            "invalid",
            _crl(
                ca_key,
                _name("Some Other CA"),
                number=9,
                this_update=CREATED - day,
                next_update=CREATED + 6 * day,
                revoked=[],
            ),
        ),
        case(
            "without a CRL number: refused",
            "invalid",
            _crl(ca_key, ca.subject, number=None, this_update=CREATED - day, next_update=CREATED + 6 * day, revoked=[]),
        ),
        case(
            "thisUpdate a day after verification_time: refused",
            "invalid",
            _crl(ca_key, ca.subject, number=9, this_update=CREATED + day, next_update=CREATED + 7 * day, revoked=[]),
        ),
    ]
    return {
        "name": "crl-freshness",
        "description": "CRL acceptance (docs/protocol.md section 16): signature by the trust anchor, cRLNumber,"
        " thisUpdate <= t + 5 min, t < nextUpdate, number >= the highest seen; then revocation of"
        " certificates by serial",
        "trust_domain": TRUST_DOMAIN,
        "verification_time": CREATED.isoformat(),
        "clock_skew_seconds": 300,
        "highest_crl_number_seen": seen,
        "ca_certificate_pem": _pem_cert(ca),
        "crls": cases,
        "certificates": [
            {
                "description": "DE-BKA certificate, serial 401, revoked by the accepted CRL",
                "certificate_pem": _pem_cert(revoked_cert),
                "serial": 401,
                "revoked": True,
            },
            {
                "description": "DE-BKA certificate, serial 402, not revoked",
                "certificate_pem": _pem_cert(valid_cert),
                "serial": 402,
                "revoked": False,
            },
        ],
    }


# --- batch signatures (section 21) ------------------------------------------------------------------


def _batch_member(purpose: batch.Purpose, signed: bytes, proof: envelope_pb2.BatchSignature) -> dict[str, Any]:
    """The intermediate values of one batch member: its leaf, the root its path leads to, the signed input."""
    leaf = batch.leaf_hash(purpose, signed)
    root = _merkle.root_from_inclusion(leaf, proof.leaf_index, proof.tree_size, proof.path)
    return {
        "leaf_index": proof.leaf_index,
        "leaf_data_hex": hashlib.sha256(_pae.pae(purpose.single, signed)).hexdigest(),
        "leaf_hash_hex": leaf.hex(),
        "path_hex": [h.hex() for h in proof.path],
        "root_hex": root.hex(),
        "root_signing_input_hex": batch.root_signing_input(purpose, proof.tree_size, root).hex(),
    }


def _batch_tampering(
    proof: envelope_pb2.BatchSignature,
    other: envelope_pb2.BatchSignature,
    key: ec.EllipticCurvePrivateKey,
    purpose: batch.Purpose,
    root: bytes,
) -> list[tuple[str, envelope_pb2.BatchSignature]]:
    """Batch signatures that must fail for the member `proof` belongs to, each by one change."""

    def changed(**fields: Any) -> envelope_pb2.BatchSignature:
        out = envelope_pb2.BatchSignature()
        out.CopyFrom(proof)
        for name, value in fields.items():
            if name == "path":
                del out.path[:]
                out.path.extend(value)
            else:
                setattr(out, name, value)
        return out

    wrong_purpose = batch.HEADER if purpose is batch.RECEIPT else batch.RECEIPT
    return [
        ("wrong path: the first path hash replaced", changed(path=[bytes(32), *proof.path[1:]])),
        ("leaf moved to another batch: the signature and path of the same position in another batch", other),
        ("root reused with another leaf count: tree_size changed", changed(tree_size=proof.tree_size + 1)),
        ("wrong index: leaf_index changed", changed(leaf_index=(proof.leaf_index + 1) % proof.tree_size)),
        ("bit flip in the root signature", changed(signature=_flip(proof.signature, 20))),
        ("path one hash too long", changed(path=[*proof.path, bytes(32)])),
        ("path one hash too short", changed(path=proof.path[:-1])),
        ("a path hash of 31 bytes", changed(path=[proof.path[0][:31], *proof.path[1:]])),
        ("tree_size 1 (a single structure is signed alone)", changed(tree_size=1, leaf_index=0, path=[])),
        ("leaf_index equal to tree_size", changed(leaf_index=proof.tree_size)),
        (
            f"the same root signed for the other purpose ({wrong_purpose.batch})",
            changed(signature=key.sign(batch.root_signing_input(wrong_purpose, proof.tree_size, root), _ECDSA)),
        ),
    ]


def batch_signatures_vector() -> dict[str, Any]:
    """Three envelopes under one header batch signature, five receipts under one receipt batch
    signature, and batch signatures that must be refused (docs/protocol.md section 21)."""
    ca_key, ca = _authority()
    sender = _party(ca_key, ca, "FR-CUSTOMS", X25519_SUITE, 500)
    recipient = _party(ca_key, ca, "DE-BKA", X25519_SUITE, 501)

    def sealed_batch(label: str, count: int) -> list[envelope_pb2.Envelope]:
        envelopes = [
            seal(
                sender=sender["agency"],
                identity_key=sender["_identity_key"],
                certificate=sender["_certificate"],
                recipients=[recipient["agency"]],
                recipient_keys={recipient["agency"]: recipient["_bundle"]},
                kind=envelope_pb2.ALERT,
                body=f"{label} message {i}".encode(),
                content_type="text/plain",
                message_id=f"01972b5a-8c00-7abc-8def-0000000005{i:02d}",
                created=CREATED,
                _content_key=_seed(f"batch/{label}/{i}/content-key"),
                _nonce=_seed(f"batch/{label}/{i}/nonce", 12),
                sign=False,
            )
            for i in range(count)
        ]
        sign_envelopes(envelopes, sender["_identity_key"])
        return envelopes

    envelopes, others = sealed_batch("first", 3), sealed_batch("second", 3)
    members = [_batch_member(batch.HEADER, e.header, e.batch_signature) for e in envelopes]
    refused_envelopes = []
    for what, proof in _batch_tampering(
        envelopes[2].batch_signature,
        others[2].batch_signature,
        sender["_identity_key"],
        batch.HEADER,
        _root_of(members[2]),
    ):
        e = envelope_pb2.Envelope()
        e.CopyFrom(envelopes[2])
        e.batch_signature.CopyFrom(proof)
        refused_envelopes.append((what, e))
    both = envelope_pb2.Envelope()
    both.CopyFrom(envelopes[0])
    both.header_signature = sender["_identity_key"].sign(_pae.header_signing_input(both.header), _ECDSA)
    refused_envelopes.append(("both a header signature and a batch signature", both))

    statuses = [envelope_pb2.DELIVERED] * 3 + [envelope_pb2.READ] * 2
    receipts = [
        new_receipt(
            message_id=envelope_pb2.Header.FromString(envelopes[i % 3].header).message_id,
            envelope_sha256=envelope_sha256(envelopes[i % 3].SerializeToString()),
            recipient=recipient["agency"],
            status=status,
            time=CREATED + dt.timedelta(minutes=5 + i),
        )
        for i, status in enumerate(statuses)
    ]
    signed = sign_receipts(receipts, recipient["_identity_key"])
    other_signed = sign_receipts(receipts[::-1], recipient["_identity_key"])
    receipt_members = [_batch_member(batch.RECEIPT, r.receipt, r.batch_signature) for r in signed]
    refused_receipts = []
    for what, proof in _batch_tampering(
        signed[1].batch_signature,
        other_signed[1].batch_signature,
        recipient["_identity_key"],
        batch.RECEIPT,
        _root_of(receipt_members[1]),
    ):
        r = envelope_pb2.SignedReceipt(receipt=signed[1].receipt)
        r.batch_signature.CopyFrom(proof)
        refused_receipts.append((what, r))
    return {
        "name": "batch-signatures",
        "description": "Merkle batch signatures (docs/protocol.md section 21): a batch of three envelopes and a"
        " batch of five receipts, each member verifying alone, and members that must be refused",
        "trust_domain": TRUST_DOMAIN,
        "verification_time": CREATED.isoformat(),
        "ca_certificate_pem": _pem_cert(ca),
        "sender": _public(sender),
        "recipient": _public(recipient),
        "envelopes": {
            "purpose": batch.HEADER.single,
            "tree_size": len(envelopes),
            "members": [
                {
                    **m,
                    "envelope_hex": e.SerializeToString().hex(),
                    "envelope_sha256_hex": envelope_sha256(e.SerializeToString()).hex(),
                    "body_hex": f"first message {i}".encode().hex(),
                }
                for i, (m, e) in enumerate(zip(members, envelopes, strict=True))
            ],
            "must_be_refused": [
                {"description": what, "envelope_hex": e.SerializeToString().hex()} for what, e in refused_envelopes
            ],
        },
        "receipts": {
            "purpose": batch.RECEIPT.single,
            "tree_size": len(signed),
            "members": [
                {
                    **m,
                    "signed_receipt_hex": r.SerializeToString().hex(),
                    "status": envelope_pb2.ReceiptStatus.Name(statuses[i]),
                }
                for i, (m, r) in enumerate(zip(receipt_members, signed, strict=True))
            ],
            "must_be_refused": [
                {"description": what, "signed_receipt_hex": r.SerializeToString().hex()} for what, r in refused_receipts
            ],
        },
    }


def _root_of(member: dict[str, Any]) -> bytes:
    """The root a member's path leads to."""
    return bytes.fromhex(member["root_hex"])


def all_vectors() -> list[dict[str, Any]]:
    """The JSON vectors this script writes, each named by its `name`."""
    return [
        make_vector(
            "envelope-x25519-three-recipients",
            "An alert to three agencies, all with X25519 keys.",
            recipients=[("DE-BKA", X25519_SUITE), ("NL-FIOD", X25519_SUITE), ("INT-INTERPOL", X25519_SUITE)],
            addressed=["NL-FIOD", "DE-BKA", "INT-INTERPOL"],
            body=b'{"category":"CASH_COURIER","subject":"passenger on AF1234"}',
            content_type="application/json",
            message_id="01972b5a-8c00-7abc-8def-0123456789ab",
            justification={"legal_basis": "NAPLES-II", "case_reference": "FR-2025-0042", "operator": "op-7f3a"},
        ),
        make_vector(
            "envelope-hybrid-and-classical",
            "An alert addressed to a group, expanded to one X-Wing (ML-KEM-768+X25519) and one X25519 agency.",
            recipients=[("US-CBP", HYBRID_SUITE), ("DE-BKA", X25519_SUITE)],
            addressed=["G7-CT"],
            body=bytes(range(256)),
            content_type="application/octet-stream",
            message_id="01972b5a-8c00-7abc-8def-0123456789ac",
        ),
        make_vector(
            "envelope-with-attachments",
            "An alert with two attachments: a photo of two chunks and an empty file of one empty chunk.",
            recipients=[("DE-BKA", X25519_SUITE)],
            addressed=["DE-BKA"],
            body=b'{"category":"CULTURAL_PROPERTY","object":"bronze statuette, see photo"}',
            content_type="application/json",
            message_id="01972b5a-8c00-7abc-8def-0123456789ad",
            attachments=[
                (hashlib.shake_256(b"isb test vector attachment").digest(16384 + 1000), 16384, "image/jpeg"),
                (b"", 16384, "text/plain"),
            ],
        ),
        pae_vector(),
        key_bundle_vector(),
        receipt_vector(),
        forward_consent_vector(),
        audit_entries_vector(),
        audit_void_vector(),
        checkpoint_vector(),
        crl_freshness_vector(),
        cosigned_checkpoint_vector(),
        directory_proof_vector(),
        batch_signatures_vector(),
    ]


def main() -> None:
    """Write every vector to the output directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "vectors")
    parser.add_argument("--only", help="write only the vector of this name (HPKE makes reruns of others differ)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only:
        for vector in all_vectors():
            if vector["name"] == args.only:
                path = args.out / f"{vector['name']}.json"
                path.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n")
                print(f"wrote {path}")
        return
    log_vector, export = audit_log_vectors()
    for vector in [*all_vectors(), log_vector]:
        path = args.out / f"{vector['name']}.json"
        path.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path}")
    path = args.out / "audit-export.jsonl"
    path.write_bytes(export)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
