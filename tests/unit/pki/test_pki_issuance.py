"""Issuing from CSRs and renewing, against a CA directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.errors import FailedPrecondition, InvalidRequest
from broker.identity import Role, make_spiffe_id
from broker.pki.authority import MAX_LIFETIME_DAYS, generate_identity_key
from broker.pki.csr import create_csr, csr_pem
from broker.pki.inspect import fingerprint_sha256, serial_hex
from broker.pki.issuance import chain_pem, issue_from_csr, renew
from broker.pki.revocation import revoke
from broker.pki.store import CaDirectory, list_certificates
from tests.openssl_support import OpenSsl

TRUST_DOMAIN = "isb.test"

AGENCY = make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "FR-CUSTOMS")


def _agency_csr() -> bytes:
    return csr_pem(create_csr(generate_identity_key(), AGENCY))


def test_issued_certificate_is_recorded_in_the_index(ca: CaDirectory) -> None:
    """issue_from_csr returns a record matching the certificate, and list_certificates shows it."""
    cert, record = issue_from_csr(ca, _agency_csr())
    assert (record.serial, record.fingerprint_sha256) == (serial_hex(cert), fingerprint_sha256(cert))
    assert (record.role, record.name, record.spiffe_id) == (Role.AGENCY, "FR-CUSTOMS", str(AGENCY))
    assert list_certificates(ca) == [record]
    assert ca.issued_certificate(record.serial) == cert


def test_agency_default_lifetime_is_90_days(ca: CaDirectory) -> None:
    """Without a lifetime, an agency certificate is valid for 90 days."""
    cert, _ = issue_from_csr(ca, _agency_csr())
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=89, hours=23) < lifetime <= timedelta(days=90)


@pytest.mark.parametrize("days", [0, MAX_LIFETIME_DAYS + 1])
def test_lifetime_outside_bounds_is_refused(ca: CaDirectory, days: int) -> None:
    """Lifetimes below one day or above the maximum are refused."""
    with pytest.raises(InvalidRequest, match="lifetime"):
        issue_from_csr(ca, _agency_csr(), days)


def test_expected_role_mismatch_is_refused(ca: CaDirectory) -> None:
    """An admin expecting a broker CSR does not sign an agency CSR."""
    with pytest.raises(InvalidRequest, match="not a broker"):
        issue_from_csr(ca, _agency_csr(), expected_role=Role.BROKER)


def test_broker_csr_gets_server_auth_and_its_names(ca: CaDirectory) -> None:
    """A broker certificate carries serverAuth and the CSR's DNS name."""
    broker = make_spiffe_id(TRUST_DOMAIN, Role.BROKER, "node-2")
    csr = csr_pem(create_csr(generate_identity_key(), broker, dns_names=["broker.example"]))
    cert, _ = issue_from_csr(ca, csr)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"]


def test_chain_from_intermediate_passes_openssl_verify(
    intermediate_ca: CaDirectory, tmp_path: Path, openssl: OpenSsl
) -> None:
    """chain_pem of an intermediate-issued certificate verifies against ca.crt alone."""
    cert, _ = issue_from_csr(intermediate_ca, _agency_csr())
    chain = tmp_path / "agency.crt"
    chain.write_bytes(chain_pem(intermediate_ca, cert))
    assert len(x509.load_pem_x509_certificates(chain.read_bytes())) == 2
    result = openssl("verify", "-CAfile", intermediate_ca.root_cert_path, "-untrusted", chain, chain)
    assert result.returncode == 0, result.stdout + result.stderr


def test_renew_keeps_identity_and_key_under_a_new_serial(ca: CaDirectory) -> None:
    """A renewal without CSR certifies the same key and SPIFFE id with a new serial."""
    old, old_record = issue_from_csr(ca, _agency_csr())
    new, new_record = renew(ca, old_record.serial)
    assert new.serial_number != old.serial_number
    assert new.public_key() == old.public_key()
    assert new_record.spiffe_id == old_record.spiffe_id
    assert new_record.renewed_from == old_record.serial


def test_renew_with_csr_rotates_the_key(ca: CaDirectory) -> None:
    """A renewal with a CSR certifies the CSR's new key."""
    old, old_record = issue_from_csr(ca, _agency_csr())
    new, _ = renew(ca, old_record.serial, csr_pem=_agency_csr())
    assert new.public_key() != old.public_key()


def test_renew_with_csr_for_another_identity_is_refused(ca: CaDirectory) -> None:
    """A renewal CSR must name the same SPIFFE id as the certificate it renews."""
    _, record = issue_from_csr(ca, _agency_csr())
    other = csr_pem(create_csr(generate_identity_key(), make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "DE-BKA")))
    with pytest.raises(InvalidRequest, match="DE-BKA"):
        renew(ca, record.serial, csr_pem=other)


def test_revoked_certificate_cannot_be_renewed(ca: CaDirectory) -> None:
    """Renewing a revoked certificate raises FailedPrecondition."""
    _, record = issue_from_csr(ca, _agency_csr())
    revoke(ca, record.serial, "keyCompromise")
    with pytest.raises(FailedPrecondition, match="revoked"):
        renew(ca, record.serial)
