"""The envelope test vectors in `tests/vectors/` still open, every deterministic value recomputes, and
every envelope under `must_be_refused` is refused at the step of docs/protocol.md section 6.8 it names.

Regenerate with `scripts/make_vectors.py` only when the protocol changes on purpose. The other
vector files are checked in `test_vectors_signed.py` and `test_vectors_audit.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.api.v1 import envelope_pb2
from broker.errors import VerificationError
from broker.protocol import _pae, _stream
from broker.protocol.attachments import AttachmentReader
from broker.protocol.envelope import envelope_sha256, open_envelope, verify_outer
from broker.protocol.errors import ProtocolError
from broker.protocol.keys import HYBRID_SUITE, EncryptionKey, hpke_suite, verify_key_bundle
from broker.protocol.receipts import verify_receipt
from tests.unit.protocol.vector_support import assert_leaf_profile

VECTOR_DIR = Path(__file__).resolve().parents[2] / "vectors"
VECTOR_FILES = sorted(VECTOR_DIR.glob("envelope-*.json"))
_OUTER_STEPS = range(1, 6)


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    return vector


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


def _certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _encryption_key(party: dict[str, Any]) -> EncryptionKey:
    secret = _hex(party["hpke_private_key_hex"])
    suite = envelope_pb2.KeySuite.Value(party["suite"])
    if suite == HYBRID_SUITE:
        return EncryptionKey(
            suite,
            x25519.X25519PrivateKey.from_private_bytes(secret[64:]),
            mlkem.MLKEM768PrivateKey.from_seed_bytes(secret[:64]),
            key_id=party["key_id"],
        )
    return EncryptionKey(suite, x25519.X25519PrivateKey.from_private_bytes(secret), key_id=party["key_id"])


@pytest.fixture(params=VECTOR_FILES, ids=[p.stem for p in VECTOR_FILES])
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One vector file, parsed."""
    path: Path = request.param
    return _load(path)


def test_vector_files_exist() -> None:
    """The envelope vectors are checked in (an empty glob would silently test nothing)."""
    assert len(VECTOR_FILES) >= 2


def test_vector_envelope_opens_for_every_recipient(vector: dict[str, Any]) -> None:
    """Each recipient's private key from the vector opens the envelope to the recorded body."""
    envelope = envelope_pb2.Envelope.FromString(_hex(vector["envelope_hex"]))
    sender_certificate = _certificate(vector["sender"]["certificate_pem"])
    for party in vector["recipients"]:
        key = _encryption_key(party)
        assert key.public_key_bytes.hex() == party["hpke_public_key_hex"]
        opened = open_envelope(
            envelope, recipient=party["agency"], keys={key.key_id: key}, sender_certificate=sender_certificate
        )
        assert opened.body == _hex(vector["inputs"]["body_hex"])
        assert opened.content_type == vector["inputs"]["content_type"]


def test_vector_non_recipient_cannot_open(vector: dict[str, Any]) -> None:
    """The vector's non-recipient finds nothing addressed to it."""
    envelope = envelope_pb2.Envelope.FromString(_hex(vector["envelope_hex"]))
    party = vector["non_recipient"]
    key = _encryption_key(party)
    with pytest.raises(VerificationError, match="not addressed"):
        open_envelope(
            envelope,
            recipient=party["agency"],
            keys={key.key_id: key},
            sender_certificate=_certificate(vector["sender"]["certificate_pem"]),
        )


def test_vector_key_bundles_verify_against_the_vector_ca(vector: dict[str, Any]) -> None:
    """Every recorded key bundle verifies against the vector CA and matches the recorded public key."""
    ca = _certificate(vector["ca_certificate_pem"])
    now = dt.datetime.fromisoformat(vector["inputs"]["created"])
    for party in [*vector["recipients"], vector["sender"], vector["non_recipient"]]:
        signed = envelope_pb2.SignedKeyBundle.FromString(_hex(party["signed_key_bundle_hex"]))
        bundle = verify_key_bundle(
            signed,
            trust_roots=[ca],
            expected_agency=party["agency"],
            trust_domain=vector["trust_domain"],
            now=now,
        )
        assert signed.bundle.hex() == party["key_bundle_hex"]
        assert _pae.key_bundle_signing_input(signed.bundle).hex() == party["key_bundle_signing_input_hex"]
        assert (bundle.key_id, bundle.public_key.hex()) == (party["key_id"], party["hpke_public_key_hex"])


def test_vector_identity_keys_match_certificates(vector: dict[str, Any]) -> None:
    """The recorded identity private keys belong to the recorded certificates."""
    for party in [*vector["recipients"], vector["sender"]]:
        key = serialization.load_pem_private_key(party["identity_key_pem"].encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == _certificate(party["certificate_pem"]).public_key()


def test_vector_deterministic_intermediates_recompute(vector: dict[str, Any]) -> None:
    """PAE inputs, associated data, ciphertext, digests and HPKE info recompute byte for byte."""
    steps, inputs = vector["intermediate"], vector["inputs"]
    envelope = envelope_pb2.Envelope.FromString(_hex(vector["envelope_hex"]))
    sender_certificate = _certificate(vector["sender"]["certificate_pem"])
    header = verify_outer(envelope, sender_certificate)

    assert envelope.header.hex() == steps["header_hex"]
    assert envelope.header_signature.hex() == steps["header_signature_hex"]
    assert _pae.header_signing_input(envelope.header).hex() == steps["header_signing_input_hex"]
    assert header.message_id == inputs["message_id"]
    assert list(header.recipients) == inputs["recipients"]
    assert header.created.ToDatetime(dt.UTC).isoformat() == inputs["created"]
    assert header.sender_cert_sha256 == sender_certificate.fingerprint(hashes.SHA256())
    assert header.sender_cert_sha256.hex() == steps["sender_cert_sha256_hex"]

    # Content: the signing input from the header, and the content bytes holding the inner signature.
    content = envelope_pb2.Content.FromString(_hex(steps["content_hex"]))
    body = _hex(inputs["body_hex"])
    assert (content.body, content.content_type) == (body, inputs["content_type"])
    assert content.inner_signature.hex() == steps["inner_signature_hex"]
    assert _pae.content_signing_input(header, inputs["content_type"], body).hex() == steps["content_signing_input_hex"]

    # Encryption is deterministic for the fixed content key and nonce.
    aad = _pae.content_aad(header)
    assert aad.hex() == steps["content_aad_hex"]
    nonce, content_key = _hex(inputs["nonce_hex"]), _hex(inputs["content_key_hex"])
    ciphertext = nonce + AESGCM(content_key).encrypt(nonce, _hex(steps["content_hex"]), aad)
    assert ciphertext.hex() == steps["ciphertext_hex"] == envelope.ciphertext.hex()
    assert hashlib.sha256(ciphertext).hexdigest() == steps["ciphertext_sha256_hex"] == header.ciphertext_sha256.hex()

    # Wrapped keys: info and PAE per recipient, the digest over them, and each unwraps to the content key.
    keys = {party["agency"]: _encryption_key(party) for party in vector["recipients"]}
    for recorded, wrapped in zip(steps["wrapped_keys"], envelope.wrapped_keys, strict=True):
        info = _pae.key_wrap_info(1, inputs["message_id"], wrapped.recipient)
        assert info.hex() == recorded["info_hex"]
        assert wrapped.enc.hex() == recorded["enc_hex"]
        assert (
            _pae.pae(_pae.WRAPPED_KEY, wrapped.recipient.encode(), wrapped.key_id.encode(), wrapped.enc).hex()
            == recorded["pae_hex"]
        )
        key = keys[wrapped.recipient]
        assert hpke_suite(key.suite).decrypt(wrapped.enc, key.private_key, info=info) == content_key
    assert _pae.wrapped_keys_sha256(envelope.wrapped_keys).hex() == steps["wrapped_keys_sha256_hex"]
    assert envelope_sha256(_hex(vector["envelope_hex"])).hex() == vector["envelope_sha256_hex"]


def test_vector_receipt_verifies(vector: dict[str, Any]) -> None:
    """The recorded receipt verifies under the signer's certificate and names the envelope digest."""
    signer = next(p for p in vector["recipients"] if p["agency"] == vector["receipt"]["signer"])
    signed = envelope_pb2.SignedReceipt.FromString(_hex(vector["receipt"]["signed_receipt_hex"]))
    receipt = verify_receipt(signed, _certificate(signer["certificate_pem"]), expected_recipient=signer["agency"])
    assert receipt.envelope_sha256.hex() == vector["envelope_sha256_hex"]
    assert _pae.receipt_signing_input(signed.receipt).hex() == vector["receipt"]["receipt_signing_input_hex"]


def test_vector_refusals_cover_every_verification_step(vector: dict[str, Any]) -> None:
    """There is a refused envelope for each step of section 6.8 that can fail (2 is parsing, after 1)."""
    assert {case["step"] for case in vector["must_be_refused"]} == {1, 3, 4, 5, 6, 7, 8, 9}


def test_vector_envelopes_refused_by_outer_verification(vector: dict[str, Any]) -> None:
    """Every envelope refused at steps 1-5 fails `verify_outer`, as the broker runs it."""
    sender_certificate = _certificate(vector["sender"]["certificate_pem"])
    for case in vector["must_be_refused"]:
        if case["step"] in _OUTER_STEPS:
            envelope = envelope_pb2.Envelope.FromString(_hex(case["envelope_hex"]))
            with pytest.raises(ProtocolError):  # VerificationError, or a limit's ProtocolError at step 3
                verify_outer(envelope, sender_certificate)


def test_vector_envelopes_refused_when_opened(vector: dict[str, Any]) -> None:
    """Every envelope refused at steps 6-9 passes the outer verification and fails when its recipient opens it."""
    sender_certificate = _certificate(vector["sender"]["certificate_pem"])
    for case in vector["must_be_refused"]:
        if case["step"] in _OUTER_STEPS:
            continue
        envelope = envelope_pb2.Envelope.FromString(_hex(case["envelope_hex"]))
        verify_outer(envelope, sender_certificate)
        party = next(p for p in vector["recipients"] if p["agency"] == case["open_as"])
        key = _encryption_key(party)
        with pytest.raises(VerificationError):
            open_envelope(
                envelope, recipient=party["agency"], keys={key.key_id: key}, sender_certificate=sender_certificate
            )


def test_vector_certificates_follow_the_production_profile(vector: dict[str, Any]) -> None:
    """Every agency certificate of the vector has SKI, AKI, one URI SAN, clientAuth only and a bounded lifetime."""
    ca = _certificate(vector["ca_certificate_pem"])
    for party in [*vector["recipients"], vector["sender"], vector["non_recipient"]]:
        assert_leaf_profile(_certificate(party["certificate_pem"]), ca)


def _attachment_vectors() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for path in VECTOR_FILES:
        vector = _load(path)
        for attachment in vector.get("attachments", []):
            found.append((f"{path.stem}-{attachment['index']}", vector, attachment))
    return found


ATTACHMENTS = _attachment_vectors()
_each_attachment = pytest.mark.parametrize(
    ("vector", "attachment"), [(v, a) for _, v, a in ATTACHMENTS], ids=[n for n, _, _ in ATTACHMENTS]
)


@_each_attachment
def test_vector_attachment_key_chunks_and_digest_recompute(vector: dict[str, Any], attachment: dict[str, Any]) -> None:
    """Each attachment's key, nonces, encrypted chunks and digest recompute from the vector's inputs."""
    inputs = vector["inputs"]
    key = _stream.attachment_key(_hex(inputs["content_key_hex"]), 1, inputs["message_id"], attachment["index"])
    assert _pae.attachment_key_info(1, inputs["message_id"], attachment["index"]).hex() == attachment["key_info_hex"]
    assert key.hex() == attachment["key_hex"]
    aead = AESGCM(key)
    hashes = []
    n = len(attachment["chunks"])
    for chunk in attachment["chunks"]:
        i = chunk["index"]
        assert _stream.nonce(i, last=i == n - 1).hex() == chunk["nonce_hex"]
        ciphertext = aead.encrypt(_hex(chunk["nonce_hex"]), _hex(chunk["plaintext_hex"]), None)
        assert ciphertext.hex() == chunk["ciphertext_hex"]
        assert hashlib.sha256(ciphertext).hexdigest() == chunk["sha256_hex"]
        hashes.append(hashlib.sha256(ciphertext).digest())
    assert hashlib.sha256(b"".join(hashes)).hexdigest() == attachment["sha256_hex"]


@_each_attachment
def test_vector_attachment_is_referenced_by_the_signed_header(
    vector: dict[str, Any], attachment: dict[str, Any]
) -> None:
    """The signed header names the attachment, and the reader returns its plaintext from the chunks."""
    header = envelope_pb2.Header.FromString(envelope_pb2.Envelope.FromString(_hex(vector["envelope_hex"])).header)
    ref = header.attachments[attachment["index"]]
    assert ref.sha256.hex() == attachment["sha256_hex"]
    assert (ref.size, ref.chunk_size, ref.media_type) == (
        attachment["size"],
        attachment["chunk_size"],
        attachment["media_type"],
    )
    assert _pae.encode_attachments([ref]).hex() == attachment["attachments_pae_field_hex"]
    chunks = [_hex(c["ciphertext_hex"]) for c in attachment["chunks"]]
    reader = AttachmentReader(_hex(attachment["key_hex"]), ref, chunks)
    assert reader.read() == b"".join(_hex(c["plaintext_hex"]) for c in attachment["chunks"])


@_each_attachment
def test_vector_tampered_attachment_streams_are_refused(vector: dict[str, Any], attachment: dict[str, Any]) -> None:
    """Every truncated, extended, reordered or altered chunk stream of the vector is refused."""
    header = envelope_pb2.Header.FromString(envelope_pb2.Envelope.FromString(_hex(vector["envelope_hex"])).header)
    ref = header.attachments[attachment["index"]]
    assert attachment["must_be_refused"]
    for case in attachment["must_be_refused"]:
        replace = case.get("replace", {})
        chunks = [
            _hex(replace.get(str(pos), attachment["chunks"][i]["ciphertext_hex"]))
            for pos, i in enumerate(case["sequence"])
        ]
        reader = AttachmentReader(_hex(attachment["key_hex"]), ref, chunks)
        with pytest.raises(VerificationError):
            reader.read()
