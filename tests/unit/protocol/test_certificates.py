"""The leaf certificate profile: one test for each way out of it, and the certificates that pass."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.errors import InvalidRequest
from broker.identity import Role, make_spiffe_id
from broker.pki.authority import create_root_ca, generate_identity_key, issue_certificate
from broker.protocol.certificates import MAX_LIFETIME_DAYS, CertificateProfileError, verify_leaf_profile
from tests.certificate_builder import key_usage, leaf, uri

TRUST_DOMAIN = "isb.test"
CA = create_root_ca(TRUST_DOMAIN)
AGENCY_URI = uri(f"spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS")
BROKER_URI = uri(f"spiffe://{TRUST_DOMAIN}/broker/node-1")
CLIENT, SERVER = ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH


def test_issued_agency_and_broker_certificates_are_within_the_profile() -> None:
    """What the CA issues passes: an agency leaf, and a broker leaf with DNS and IP names."""
    key = generate_identity_key().public_key()
    agency = issue_certificate(CA, key, make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "FR-CUSTOMS"))
    broker = issue_certificate(
        CA,
        key,
        make_spiffe_id(TRUST_DOMAIN, Role.BROKER, "node-1"),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    assert verify_leaf_profile(agency, TRUST_DOMAIN, role=Role.AGENCY).name == "FR-CUSTOMS"
    assert verify_leaf_profile(broker, TRUST_DOMAIN).role is Role.BROKER


def test_builder_defaults_are_within_the_profile() -> None:
    """The test builder's defaults pass, so each case below breaks exactly one rule."""
    cert, _ = leaf(CA, [AGENCY_URI])
    verify_leaf_profile(cert, TRUST_DOMAIN)


OUTSIDE: dict[str, tuple[dict[str, Any], str]] = {
    "no SAN": ({"names": []}, "no subjectAltName"),
    "two URI SANs": ({"names": [AGENCY_URI, uri(f"spiffe://{TRUST_DOMAIN}/agency/DE-BKA")]}, "exactly one URI SAN"),
    "other trust domain": ({"names": [uri("spiffe://other.test/agency/FR-CUSTOMS")]}, "not in trust domain"),
    "malformed SPIFFE path": ({"names": [uri(f"spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS/x")]}, "not of the form"),
    "DNS name on an agency": ({"names": [AGENCY_URI, x509.DNSName("localhost")]}, "only broker certificates"),
    "IP address on an agency": (
        {"names": [AGENCY_URI, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]},
        "only broker certificates",
    ),
    "e-mail name": ({"names": [AGENCY_URI, x509.RFC822Name("ops@customs.example")]}, "names more than"),
    "no basicConstraints": ({"basic_constraints": None}, "no basicConstraints"),
    "CA:TRUE": ({"basic_constraints": x509.BasicConstraints(ca=True, path_length=None)}, "cA TRUE"),
    "no keyUsage": ({"usage": None}, "no keyUsage"),
    "non-critical keyUsage": ({"usage_critical": False}, "non-critical keyUsage"),
    "no digitalSignature": ({"usage": key_usage(digital_signature=False)}, "lacks the digitalSignature"),
    "keyCertSign": ({"usage": key_usage(cert_sign=True)}, "keyCertSign"),
    "no extendedKeyUsage": ({"extended_usage": None}, "no extendedKeyUsage"),
    "serverAuth on an agency": ({"extended_usage": [SERVER]}, "exactly the extended key usage clientAuth"),
    "clientAuth and serverAuth": ({"extended_usage": [CLIENT, SERVER]}, "exactly the extended key usage"),
    "no authorityKeyIdentifier": ({"authority_key_id": False}, "no authorityKeyIdentifier"),
    "lifetime over the maximum": ({"lifetime": dt.timedelta(days=MAX_LIFETIME_DAYS + 1)}, "over the 825-day"),
    "P-384 agency key": ({"key": ec.generate_private_key(ec.SECP384R1())}, "ECDSA on secp256r1"),
}


@pytest.mark.parametrize(("overrides", "message"), OUTSIDE.values(), ids=OUTSIDE.keys())
def test_certificate_outside_the_profile_is_refused(overrides: dict[str, Any], message: str) -> None:
    """Each rule of the profile refuses a certificate that breaks it, with a message naming the rule."""
    options = dict(overrides)
    names = options.pop("names", [AGENCY_URI])
    cert, _ = leaf(CA, names, **options)
    with pytest.raises(CertificateProfileError, match=message):
        verify_leaf_profile(cert, TRUST_DOMAIN)


def test_broker_certificate_with_client_auth_is_refused() -> None:
    """A broker's certificate carries serverAuth only: it cannot call the broker as a client."""
    cert, _ = leaf(CA, [BROKER_URI], extended_usage=[CLIENT])
    with pytest.raises(CertificateProfileError, match="serverAuth of a broker"):
        verify_leaf_profile(cert, TRUST_DOMAIN)


def test_certificate_of_another_role_is_refused_when_a_role_is_expected() -> None:
    """With `role`, an auditor's certificate does not pass as an agency's."""
    cert, _ = leaf(CA, [uri(f"spiffe://{TRUST_DOMAIN}/auditor/audit-1")])
    with pytest.raises(CertificateProfileError, match="for a auditor"):
        verify_leaf_profile(cert, TRUST_DOMAIN, role=Role.AGENCY)


def test_issuance_refuses_a_lifetime_over_the_profile_maximum() -> None:
    """The CA's mechanism checks what it signed against the same profile."""
    with pytest.raises(InvalidRequest, match="outside the profile"):
        issue_certificate(
            CA,
            generate_identity_key().public_key(),
            make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "FR-CUSTOMS"),
            lifetime_days=MAX_LIFETIME_DAYS + 2,
        )
