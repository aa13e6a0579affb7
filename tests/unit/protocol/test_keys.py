"""Encryption keys, signed key bundles and agency certificate checks."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.api.v1 import envelope_pb2
from broker.errors import ConfigurationError, VerificationError
from broker.protocol import _pae
from broker.protocol.keys import (
    HYBRID_SUITE,
    X25519_SUITE,
    EncryptionKey,
    KeySuite,
    agency_of_certificate,
    hpke_suite,
    make_key_bundle,
    public_key_of,
    verify_agency_certificate,
    verify_key_bundle,
)
from tests.unit.protocol.protocol_testpki import (
    DAY,
    NOW,
    TRUST_DOMAIN,
    Agency,
    Pki,
    issue_certificate,
    spiffe,
)


def _bundle(
    agency: Agency,
    *,
    name: str | None = None,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + DAY,
) -> envelope_pb2.SignedKeyBundle:
    return make_key_bundle(
        name or agency.name,
        agency.encryption_key,
        identity_key=agency.identity_key,
        certificate=agency.certificate,
        not_before=not_before,
        not_after=not_after,
    )


@pytest.mark.parametrize("suite", [X25519_SUITE, HYBRID_SUITE])
def test_bundle_verifies_and_yields_a_usable_public_key(pki: Pki, suite: KeySuite) -> None:
    """A bundle signed by the agency verifies and its public key encrypts to the agency's private key."""
    agency = pki.agency("DE-BKA", suite)
    bundle = pki.verify(agency.signed_bundle, "DE-BKA")
    assert (bundle.agency, bundle.key_id, bundle.suite) == ("DE-BKA", agency.encryption_key.key_id, suite)
    sealed = hpke_suite(suite).encrypt(b"secret", public_key_of(bundle), info=b"i")
    assert hpke_suite(suite).decrypt(sealed, agency.encryption_key.private_key, info=b"i") == b"secret"


def test_expired_bundle_is_refused(pki: Pki) -> None:
    """A bundle past its not_after is refused."""
    signed = _bundle(pki.agency("DE-BKA"), not_before=NOW - 3 * DAY, not_after=NOW - DAY)
    with pytest.raises(VerificationError, match="expired at"):
        pki.verify(signed, "DE-BKA")


def test_not_yet_valid_bundle_is_refused(pki: Pki) -> None:
    """A bundle before its not_before is refused."""
    signed = _bundle(pki.agency("DE-BKA"), not_before=NOW + DAY, not_after=NOW + 3 * DAY)
    with pytest.raises(VerificationError, match="not valid before"):
        pki.verify(signed, "DE-BKA")


def test_bundle_signed_by_the_wrong_key_is_refused(pki: Pki) -> None:
    """A bundle carrying an agency's certificate but signed by another key is refused."""
    agency, impostor = pki.agency("DE-BKA"), pki.agency("ES-AEAT")
    signed = _bundle(agency)
    signed.signature = impostor.identity_key.sign(
        _pae.key_bundle_signing_input(signed.bundle), ec.ECDSA(hashes.SHA256())
    )
    with pytest.raises(VerificationError, match="key bundle of DE-BKA signature does not verify"):
        pki.verify(signed, "DE-BKA")


def test_tampered_bundle_bytes_are_refused(pki: Pki) -> None:
    """Replacing the public key in a signed bundle breaks the signature."""
    signed = _bundle(pki.agency("DE-BKA"))
    bundle = envelope_pb2.KeyBundle.FromString(signed.bundle)
    bundle.public_key = EncryptionKey.generate().public_key_bytes
    signed.bundle = bundle.SerializeToString()
    with pytest.raises(VerificationError, match="signature does not verify"):
        pki.verify(signed, "DE-BKA")


def test_another_agencys_valid_bundle_is_not_a_substitute(pki: Pki) -> None:
    """A valid bundle of ES-AEAT is refused when DE-BKA's bundle was asked for."""
    with pytest.raises(VerificationError, match=re.escape(f"expected '{spiffe('DE-BKA')}'")):
        pki.verify(pki.agency("ES-AEAT").signed_bundle, "DE-BKA")


def test_bundle_naming_another_agency_than_its_signer_is_refused(pki: Pki) -> None:
    """An agency cannot publish a bundle in another agency's name."""
    signed = _bundle(pki.agency("ES-AEAT"), name="DE-BKA")
    with pytest.raises(VerificationError, match="key bundle is for 'DE-BKA', expected 'ES-AEAT'"):
        pki.verify(signed, "ES-AEAT")


def test_bundle_certificate_from_another_ca_is_refused(pki: Pki, other_pki: Pki) -> None:
    """A bundle whose certificate was issued by an untrusted CA is refused."""
    with pytest.raises(VerificationError, match="does not chain to the CA"):
        pki.verify(other_pki.agency("DE-BKA").signed_bundle, "DE-BKA")


def test_bundle_with_expired_certificate_is_refused(pki: Pki) -> None:
    """A bundle whose identity certificate has expired is refused even if the bundle is current."""
    agency = pki.agency("DE-BKA")
    old_cert = issue_certificate(
        pki.ca_key,
        pki.ca_certificate,
        agency.identity_key,
        [spiffe("DE-BKA")],
        not_before=NOW - 10 * DAY,
        not_after=NOW - DAY,
    )
    signed = _bundle(agency)
    signed.certificate = old_cert.public_bytes(Encoding.DER)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        pki.verify(signed, "DE-BKA")


def test_malformed_bundle_certificate_is_a_verification_error(pki: Pki) -> None:
    """Certificate bytes that are not DER surface as VerificationError."""
    signed = _bundle(pki.agency("DE-BKA"))
    signed.certificate = b"not a certificate"
    with pytest.raises(VerificationError, match="certificate of DE-BKA is malformed"):
        pki.verify(signed, "DE-BKA")


def test_validly_signed_garbage_bundle_is_a_verification_error(pki: Pki) -> None:
    """Signed bytes that are not a KeyBundle surface as VerificationError."""
    agency = pki.agency("DE-BKA")
    signed = _bundle(agency)
    signed.bundle = b"\xff\xff"
    signed.signature = agency.identity_key.sign(_pae.key_bundle_signing_input(b"\xff\xff"), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(VerificationError, match="does not parse"):
        pki.verify(signed, "DE-BKA")


def test_certificate_with_two_uri_sans_is_refused(pki: Pki) -> None:
    """SPIFFE allows exactly one URI SAN; two make the identity ambiguous."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_certificate(pki.ca_key, pki.ca_certificate, key, [spiffe("DE-BKA"), spiffe("ES-AEAT")])
    with pytest.raises(VerificationError, match="exactly one URI SAN, has 2"):
        verify_agency_certificate(
            certificate,
            trust_roots=[pki.ca_certificate],
            expected_agency="DE-BKA",
            trust_domain=TRUST_DOMAIN,
            now=NOW,
        )


def test_certificate_of_another_trust_domain_is_refused(pki: Pki) -> None:
    """An agency id in another trust domain is not the expected identity."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_certificate(pki.ca_key, pki.ca_certificate, key, ["spiffe://other.isb/agency/DE-BKA"])
    with pytest.raises(VerificationError, match=re.escape("expected 'spiffe://test.isb/agency/DE-BKA'")):
        verify_agency_certificate(
            certificate,
            trust_roots=[pki.ca_certificate],
            expected_agency="DE-BKA",
            trust_domain=TRUST_DOMAIN,
            now=NOW,
        )


def test_certificate_without_client_auth_is_refused(pki: Pki) -> None:
    """An identity certificate must allow client authentication (it is an mTLS client certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_certificate(
        pki.ca_key, pki.ca_certificate, key, [spiffe("DE-BKA")], eku=[ExtendedKeyUsageOID.CODE_SIGNING]
    )
    with pytest.raises(VerificationError, match="does not chain"):
        verify_agency_certificate(
            certificate,
            trust_roots=[pki.ca_certificate],
            expected_agency="DE-BKA",
            trust_domain=TRUST_DOMAIN,
            now=NOW,
        )


def test_naive_verification_time_is_a_caller_error(pki: Pki) -> None:
    """A naive datetime is refused rather than guessed at."""
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_key_bundle(
            pki.agency("DE-BKA").signed_bundle,
            trust_roots=[pki.ca_certificate],
            expected_agency="DE-BKA",
            trust_domain=TRUST_DOMAIN,
            now=dt.datetime(2030, 1, 1),
        )


def test_agency_of_certificate_reads_the_spiffe_id(pki: Pki) -> None:
    """The agency id is the last path element of the agency SPIFFE id."""
    assert agency_of_certificate(pki.agency("NL-FIOD").certificate) == "NL-FIOD"


def test_agency_of_auditor_certificate_is_refused(pki: Pki) -> None:
    """A non-agency SPIFFE id does not name an agency."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_certificate(pki.ca_key, pki.ca_certificate, key, [f"spiffe://{TRUST_DOMAIN}/auditor/eve"])
    with pytest.raises(VerificationError, match="not an agency SPIFFE id"):
        agency_of_certificate(certificate)


@pytest.mark.parametrize(
    ("suite", "public_key"),
    [(X25519_SUITE, b"\x01" * 31), (HYBRID_SUITE, b"\x01" * 1215), (99, b"\x01" * 32)],
)
def test_malformed_bundle_public_key_is_refused(suite: int, public_key: bytes) -> None:
    """Wrong lengths and unknown suites are VerificationErrors."""
    bundle = envelope_pb2.KeyBundle(agency="DE-BKA", suite=suite, public_key=public_key)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="DE-BKA"):
        public_key_of(bundle)


# --- local storage of private keys ----------------------------------------------------------------


@pytest.mark.parametrize("suite", [X25519_SUITE, HYBRID_SUITE])
def test_encryption_key_round_trips_through_bytes(suite: KeySuite) -> None:
    """A key read back from its serialization decrypts what was sealed to the original."""
    key = EncryptionKey.generate(suite)
    restored = EncryptionKey.from_bytes(key.to_bytes())
    assert (restored.suite, restored.key_id, restored.public_key_bytes) == (
        key.suite,
        key.key_id,
        key.public_key_bytes,
    )
    sealed = hpke_suite(suite).encrypt(b"m", key.public_key(), info=b"")
    assert hpke_suite(suite).decrypt(sealed, restored.private_key, info=b"") == b"m"


def test_saved_key_file_is_private(tmp_path: Path) -> None:
    """A saved key is readable by its owner only and loads back."""
    key = EncryptionKey.generate(HYBRID_SUITE, key_id="2025-rotation")
    key.save(tmp_path / "key.json")
    assert stat.S_IMODE(os.stat(tmp_path / "key.json").st_mode) == 0o600
    assert EncryptionKey.load(tmp_path / "key.json").public_key_bytes == key.public_key_bytes


def test_saving_over_an_existing_key_file_is_refused(tmp_path: Path) -> None:
    """A key file is never silently replaced."""
    (tmp_path / "key.json").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        EncryptionKey.generate().save(tmp_path / "key.json")
    assert (tmp_path / "key.json").read_bytes() == b"old"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"format": "isb-hpke-key-v1"}',
        b'{"format": "other", "suite": "X25519_HKDF_SHA256_AES_256_GCM", "key_id": "k", "private_key": ""}',
        b'{"format": "isb-hpke-key-v1", "suite": "X25519_HKDF_SHA256_AES_256_GCM", "key_id": "k", "private_key": "00"}',
    ],
)
def test_corrupt_key_file_is_a_configuration_error(data: bytes) -> None:
    """Unusable key files surface as ConfigurationError."""
    with pytest.raises(ConfigurationError):
        EncryptionKey.from_bytes(data)


def test_key_repr_does_not_show_the_secret() -> None:
    """The repr names suite and key id, never private key material."""
    key = EncryptionKey.generate()
    secret = json.loads(key.to_bytes())["private_key"]
    assert secret not in repr(key)
    assert key.key_id in repr(key)
