"""CSR checks: what the CA refuses to sign, with which error."""

from __future__ import annotations

import contextlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import InvalidRequest, VerificationError
from broker.identity import Role, make_spiffe_id
from broker.pki.authority import generate_identity_key
from broker.pki.csr import create_csr, csr_pem, verify_csr

TRUST_DOMAIN = "isb.test"

AGENCY = make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "FR-CUSTOMS")


def _raw_csr(names: list[x509.GeneralName], key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _uri(uri: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(uri)


def test_agency_csr_verifies_to_its_identity_and_key() -> None:
    """A CSR made by create_csr verifies to its SPIFFE id and public key."""
    key = generate_identity_key()
    request = verify_csr(csr_pem(create_csr(key, AGENCY)), TRUST_DOMAIN)
    assert request.spiffe_id == AGENCY
    assert request.public_key.public_numbers() == key.public_key().public_numbers()


def test_csr_with_altered_signature_is_refused() -> None:
    """A CSR whose signature does not match its content raises VerificationError."""
    der = bytearray(create_csr(generate_identity_key(), AGENCY).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature's s value
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_csr(bytes(der), TRUST_DOMAIN)


def test_csr_signed_by_another_key_is_refused() -> None:
    """Swapping in another key's public key breaks proof of possession."""
    honest = create_csr(generate_identity_key(), AGENCY).public_bytes(serialization.Encoding.DER)
    other_key = generate_identity_key().public_key()
    victim = x509.load_der_x509_csr(honest).public_key()
    assert isinstance(victim, ec.EllipticCurvePublicKey)
    point = victim.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    replacement = other_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    forged = honest.replace(point, replacement)
    assert forged != honest
    with pytest.raises(VerificationError):
        verify_csr(forged, TRUST_DOMAIN)


def test_csr_outside_the_trust_domain_is_refused() -> None:
    """A CSR for spiffe://other.test/... is refused, naming the trust domain."""
    csr = create_csr(generate_identity_key(), make_spiffe_id("other.test", Role.AGENCY, "FR-CUSTOMS"))
    with pytest.raises(InvalidRequest, match=r"not in trust domain 'isb\.test'"):
        verify_csr(csr_pem(csr), TRUST_DOMAIN)


@pytest.mark.parametrize(
    "uri",
    [
        f"spiffe://{TRUST_DOMAIN}/agency/fr-customs",
        f"spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS/extra",
        f"spiffe://{TRUST_DOMAIN}/superuser/root",
    ],
)
def test_csr_with_malformed_id_is_refused(uri: str) -> None:
    """Lower-case agency ids, extra path segments and unknown roles are refused."""
    with pytest.raises(InvalidRequest, match="CSR refused"):
        verify_csr(_raw_csr([_uri(uri)], generate_identity_key()), TRUST_DOMAIN)


def test_csr_with_two_uris_is_refused() -> None:
    """A CSR naming two SPIFFE ids is refused."""
    names = [_uri(str(AGENCY)), _uri(f"spiffe://{TRUST_DOMAIN}/admin/admin-1")]
    with pytest.raises(InvalidRequest, match="exactly one URI SAN"):
        verify_csr(_raw_csr(names, generate_identity_key()), TRUST_DOMAIN)


def test_agency_csr_with_dns_name_is_refused() -> None:
    """Only broker CSRs may carry DNS names."""
    names = [_uri(str(AGENCY)), x509.DNSName("localhost")]
    with pytest.raises(InvalidRequest, match="only broker certificates"):
        verify_csr(_raw_csr(names, generate_identity_key()), TRUST_DOMAIN)


def test_broker_csr_keeps_dns_and_ip() -> None:
    """A broker CSR's DNS names and IP addresses survive verification."""
    broker = make_spiffe_id(TRUST_DOMAIN, Role.BROKER, "node-2")
    csr = create_csr(generate_identity_key(), broker, dns_names=["broker.example"], ip_addresses=["10.0.0.2"])
    request = verify_csr(csr_pem(csr), TRUST_DOMAIN)
    assert request.dns_names == ("broker.example",)
    assert [str(ip) for ip in request.ip_addresses] == ["10.0.0.2"]


def test_csr_with_ed25519_key_is_refused() -> None:
    """Keys other than ECDSA P-256/P-384 are refused."""
    with pytest.raises(InvalidRequest, match="ECDSA"):
        verify_csr(_raw_csr([_uri(str(AGENCY))], ed25519.Ed25519PrivateKey.generate()), TRUST_DOMAIN)


def test_garbage_is_refused_as_invalid_request() -> None:
    """Bytes that are not a CSR raise InvalidRequest, not ValueError."""
    with pytest.raises(InvalidRequest, match="not a certificate signing request"):
        verify_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", TRUST_DOMAIN)


def _agency_csr_der() -> bytes:
    return create_csr(generate_identity_key(), AGENCY).public_bytes(serialization.Encoding.DER)


def test_csr_on_a_curve_cryptography_does_not_know_is_invalid_request() -> None:
    """A CSR whose key names an unknown curve OID is refused as InvalidRequest, not UnsupportedAlgorithm."""
    secp256r1 = bytes.fromhex("06082a8648ce3d030107")
    data = _agency_csr_der().replace(secp256r1, bytes.fromhex("06082a8648ce3d030109"))
    with pytest.raises(InvalidRequest, match="ECDSA on secp256r1 or secp384r1"):
        verify_csr(data, TRUST_DOMAIN)


def test_csr_of_an_unknown_version_is_invalid_request() -> None:
    """A CSR claiming PKCS#10 version 6 is refused as InvalidRequest, not x509.InvalidVersion."""
    der = _agency_csr_der()
    at = der.index(bytes.fromhex("020100"))
    with pytest.raises(InvalidRequest, match="version 1"):
        verify_csr(der[:at] + bytes.fromhex("020105") + der[at + 3 :], TRUST_DOMAIN)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_altered_byte_of_a_csr_is_refused_with_our_errors(position: int, value: int) -> None:
    """Changing one byte of a CSR gives a verified request or InvalidRequest/VerificationError, never another error."""
    der = bytearray(_CSR_DER)
    der[position % len(der)] = value
    with contextlib.suppress(InvalidRequest, VerificationError):
        verify_csr(bytes(der), TRUST_DOMAIN)


_CSR_DER = _agency_csr_der()
