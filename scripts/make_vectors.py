"""Write the envelope test vectors `tests/vectors/envelope-*.json` (run from anywhere).

Each vector holds fixed keys (CA, identity keys as PEM, HPKE private keys as hex), the inputs of one
sealed message, every intermediate value in hex (PAE signing inputs, header bytes, associated data,
ciphertext, wrapped keys, signatures, digests), the final envelope, a signed receipt and a few
tampered envelopes that must be refused. A client in another language can use them to check its
implementation; `tests/unit/protocol/test_vectors.py` checks that this library still opens them.

Keys, certificates, key bundles, the inner signature, the content, associated data and ciphertext
are reproducible: keys derive from fixed labels, the content key and nonce are fixed, and the
generator signs with deterministic ECDSA (RFC 6979; verifiers accept any valid ECDSA signature).
HPKE encapsulation is randomized by design, so a rerun changes the wrapped keys and everything that
covers them: the wrapped-keys digest, header, header signature, envelope and receipt.

    .venv/bin/python scripts/make_vectors.py [--out tests/vectors]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.api.v1 import envelope_pb2
from broker.protocol import _pae, _stream
from broker.protocol.attachments import AttachmentEncryptor
from broker.protocol.envelope import envelope_sha256, seal
from broker.protocol.keys import (
    HYBRID_SUITE,
    X25519_SUITE,
    EncryptionKey,
    KeySuite,
    hpke_suite,
    make_key_bundle,
    public_key_of,
)
from broker.protocol.receipts import make_receipt

ROOT = Path(__file__).resolve().parent.parent
TRUST_DOMAIN = "vectors.isb"
VALID_FROM = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
VALID_UNTIL = dt.datetime(2125, 1, 1, tzinfo=dt.UTC)
CREATED = dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
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


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


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
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_UNTIL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .subject_name(_name(agency))
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
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
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
) -> dict[str, Any]:
    """Build one vector: seal a message with fixed inputs and record every intermediate value.

    `attachments` are (plaintext, chunk size, media type): each is encrypted under its key derived
    from the content key and recorded chunk by chunk, with tampered chunk streams to refuse.
    """
    ca_key = _identity_key("ca")
    ca = _ca(ca_key)
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
    )
    # Decrypt our own ciphertext to record the content bytes (they hold the randomized inner signature).
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
    readdressed = envelope_pb2.Envelope.FromString(envelope_bytes)
    readdressed.wrapped_keys.add(
        recipient=outsider["agency"],
        key_id=outsider["key_id"],
        enc=_wrap_for(content_key, outsider["_bundle"], header.message_id),
    )
    tampered = []
    changes: list[tuple[str, Callable[[envelope_pb2.Envelope], None]]] = [
        ("header bit flipped", lambda e: setattr(e, "header", _flip(e.header, 10))),
        (
            "outer signature bit flipped",
            lambda e: setattr(e, "header_signature", _flip(e.header_signature, 20)),
        ),
        ("ciphertext bit flipped", lambda e: setattr(e, "ciphertext", _flip(e.ciphertext, 30))),
        (
            "wrapped key bit flipped",
            lambda e: setattr(e.wrapped_keys[0], "enc", _flip(e.wrapped_keys[0].enc, 40)),
        ),
    ]
    for what, change in changes:
        copy = envelope_pb2.Envelope.FromString(envelope_bytes)
        change(copy)
        tampered.append({"description": what, "envelope_hex": copy.SerializeToString().hex()})
    tampered.append(
        {
            "description": "wrapped key added for a non-recipient (re-addressed envelope)",
            "envelope_hex": readdressed.SerializeToString().hex(),
        }
    )
    return {
        "name": name,
        "description": description,
        "protocol_version": 1,
        "pae": "ISBv1 SP LEN(type) SP type (SP LEN(field) SP field)*; lists: (LEN(item) SP item SP)*",
        "trust_domain": TRUST_DOMAIN,
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
        "must_be_refused": tampered,
        "attachments": attachment_vectors,
    }


def make_attachment(content_key: bytes, message_id: str, index: int, plaintext: bytes, chunk_size: int,
                    media_type: str) -> dict[str, Any]:
    """One attachment, chunk by chunk (docs/protocol.md "Attachments"), and chunk streams to refuse."""
    key = _stream.attachment_key(content_key, 1, message_id, index)
    encryptor = AttachmentEncryptor(key, io.BytesIO(plaintext), len(plaintext), chunk_size=chunk_size,
                                    media_type=media_type)
    encrypted = [data for _, data in encryptor.encrypted_chunks()]
    ref = encryptor.reference()
    n = len(encrypted)
    chunks = [
        {
            "index": i,
            "nonce_hex": _stream.nonce(i, last=i == n - 1).hex(),
            "plaintext_hex": plaintext[i * chunk_size:(i + 1) * chunk_size].hex(),
            "ciphertext_hex": data.hex(),
            "sha256_hex": hashlib.sha256(data).hexdigest(),
        }
        for i, data in enumerate(encrypted)
    ]
    # Each stream to refuse is a sequence of positions into `chunks`, with some chunks replaced:
    # a reader given it must raise before it has returned all of the plaintext.
    last_unflagged = _stream.encrypt_chunk(AESGCM(key), n - 1, plaintext[(n - 1) * chunk_size:], last=False)
    tampered: list[dict[str, Any]] = [
        {"description": "truncated: last chunk missing", "sequence": list(range(n - 1))},
        {"description": "extended: the last chunk repeated after itself", "sequence": [*range(n), n - 1]},
        {"description": "bit 0 of byte 5 of chunk 0 flipped", "sequence": list(range(n)),
         "replace": {"0": _flip(encrypted[0], 5).hex()}},
        {"description": "last chunk encrypted without the last-chunk flag", "sequence": list(range(n)),
         "replace": {str(n - 1): last_unflagged.hex()}},
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


def all_vectors() -> list[dict[str, Any]]:
    """The vectors this script writes, each named by its `name`."""
    return [
        make_vector(
            "envelope-x25519-three-recipients",
            "An alert to three agencies, all with X25519 keys.",
            recipients=[("DE-BKA", X25519_SUITE), ("NL-FIOD", X25519_SUITE), ("INT-INTERPOL", X25519_SUITE)],
            addressed=["NL-FIOD", "DE-BKA", "INT-INTERPOL"],
            body=b'{"category":"CASH_COURIER","subject":"passenger on AF1234"}',
            content_type="application/json",
            message_id="01972b5a-8c00-7abc-8def-0123456789ab",
        ),
        make_vector(
            "envelope-hybrid-and-classical",
            "An alert addressed to a group, expanded to one ML-KEM-768+X25519 and one X25519 agency.",
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
    ]


def main() -> None:
    """Write every vector to the output directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "vectors")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for vector in all_vectors():
        path = args.out / f"{vector['name']}.json"
        path.write_text(json.dumps(vector, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
