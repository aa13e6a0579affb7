"""Identity, fingerprint and serial of a certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import AuthenticationError, InvalidRequest
from broker.identity import Role, make_spiffe_id
from broker.pki.authority import (
    CertificateAuthority,
    create_root_ca,
    generate_identity_key,
    issue_certificate,
)
from broker.pki.inspect import certificate_identity, fingerprint_sha256, parse_serial, serial_hex
from tests.certificate_builder import leaf
from tests.openssl_support import OpenSsl

TRUST_DOMAIN = "isb.test"

ROOT = create_root_ca(TRUST_DOMAIN)


def _with_names(authority: CertificateAuthority, names: list[x509.GeneralName] | None) -> x509.Certificate:
    return leaf(authority, names or [])[0]


def test_identity_is_read_from_the_uri_san() -> None:
    """A certificate issued for an agency yields that agency's SPIFFE id."""
    spiffe_id = make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "FR-CUSTOMS")
    cert = issue_certificate(ROOT, generate_identity_key().public_key(), spiffe_id)
    assert certificate_identity(cert, TRUST_DOMAIN) == spiffe_id


def test_two_uri_sans_identify_nobody() -> None:
    """A certificate with two URI SANs is refused with AuthenticationError."""
    cert = _with_names(
        ROOT,
        [
            x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS"),
            x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}/agency/DE-BKA"),
        ],
    )
    with pytest.raises(AuthenticationError, match="exactly one URI SAN"):
        certificate_identity(cert, TRUST_DOMAIN)


def test_certificate_without_san_is_refused() -> None:
    """A certificate with no SAN extension is refused with AuthenticationError."""
    with pytest.raises(AuthenticationError, match="no subject alternative name"):
        certificate_identity(_with_names(ROOT, None), TRUST_DOMAIN)


def test_uri_of_another_trust_domain_is_refused() -> None:
    """A SPIFFE id of another trust domain is refused."""
    cert = _with_names(ROOT, [x509.UniformResourceIdentifier("spiffe://evil.example/agency/FR-CUSTOMS")])
    with pytest.raises(AuthenticationError, match="not in trust domain"):
        certificate_identity(cert, TRUST_DOMAIN)


def test_fingerprint_matches_openssl(tmp_path: Path, openssl: OpenSsl) -> None:
    """fingerprint_sha256 equals `openssl x509 -fingerprint -sha256` without colons."""
    path = tmp_path / "c.pem"
    path.write_bytes(ROOT.certificate.public_bytes(serialization.Encoding.PEM))
    result = openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha256")
    assert result.stdout.strip().split("=", 1)[1].replace(":", "").lower() == fingerprint_sha256(ROOT.certificate)


def test_serial_hex_matches_openssl_digits(tmp_path: Path, openssl: OpenSsl) -> None:
    """serial_hex shows the digits `openssl x509 -serial` prints, in lower case."""
    path = tmp_path / "c.pem"
    path.write_bytes(ROOT.certificate.public_bytes(serialization.Encoding.PEM))
    result = openssl("x509", "-in", path, "-noout", "-serial")
    assert result.stdout.strip().split("=", 1)[1].lower() == serial_hex(ROOT.certificate)


@given(st.integers(min_value=1, max_value=2**159))
def test_serial_hex_round_trips_through_parse_serial(serial: int) -> None:
    """parse_serial(serial_hex(n)) == n for every valid serial."""
    assert parse_serial(serial_hex(serial)) == serial


def test_parse_serial_accepts_colons_case_and_prefix() -> None:
    """Serials copied from openssl output (colons, upper case, 0x) parse."""
    assert parse_serial("0A:FF") == parse_serial("0x0aff") == 0x0AFF


@pytest.mark.parametrize("text", ["", "xyz", "0", "-1f"])
def test_parse_serial_refuses_non_serials(text: str) -> None:
    """Non-hex, zero or negative serials raise InvalidRequest, never ValueError."""
    with pytest.raises(InvalidRequest):
        parse_serial(text)
