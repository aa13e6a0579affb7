"""Revocation: index, CRL accepted by openssl, and the broker's RevocationList."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from broker.errors import ConfigurationError, FailedPrecondition, InvalidRequest, NotFound, VerificationError
from broker.identity import Role, make_spiffe_id
from broker.pki import _files
from broker.pki.authority import create_root_ca, generate_identity_key
from broker.pki.crl import parse_reason, sign_crl
from broker.pki.csr import create_csr, csr_pem
from broker.pki.issuance import chain_pem, issue_from_csr
from broker.pki.revocation import RevocationList, crl_der, publish_crl, revoke, verify_crl
from broker.pki.store import CaDirectory, CertificateStatus
from tests.openssl_support import OpenSsl

TRUST_DOMAIN = "isb.test"

AGENCY = make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "FR-CUSTOMS")


def _issue(ca: CaDirectory) -> x509.Certificate:
    cert, _ = issue_from_csr(ca, csr_pem(create_csr(generate_identity_key(), AGENCY)))
    return cert


def _crl(ca: CaDirectory) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(ca.crl_path.read_bytes())


def test_revoke_marks_the_record_and_lists_the_serial(ca: CaDirectory) -> None:
    """After revoke, the index says revoked with the reason and the CRL lists the serial."""
    cert = _issue(ca)
    record = revoke(ca, f"{cert.serial_number:x}", "keyCompromise")
    assert record.status() is CertificateStatus.REVOKED
    assert record.revocation_reason == "keyCompromise"
    entry = _crl(ca).get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise


def test_crl_with_revocations_passes_openssl_crl_verify(ca: CaDirectory, openssl: OpenSsl) -> None:
    """openssl crl -verify accepts the re-signed CRL against ca.crt."""
    revoke(ca, _issue(ca).serial_number, "superseded")
    result = openssl("crl", "-in", ca.crl_path, "-CAfile", ca.root_cert_path, "-verify", "-noout")
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr


def test_intermediate_crl_passes_openssl_crl_verify_with_chain(intermediate_ca: CaDirectory, openssl: OpenSsl) -> None:
    """With an intermediate, the CRL verifies against ca-chain.pem."""
    revoke(intermediate_ca, _issue(intermediate_ca).serial_number)
    result = openssl("crl", "-in", intermediate_ca.crl_path, "-CAfile", intermediate_ca.chain_path, "-verify", "-noout")
    assert result.returncode == 0, result.stderr


def test_openssl_crl_check_refuses_the_revoked_certificate(ca: CaDirectory, tmp_path: Path, openssl: OpenSsl) -> None:
    """openssl verify -crl_check accepts a certificate, then refuses it once revoked."""
    cert = _issue(ca)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(chain_pem(ca, cert))
    check = ("verify", "-crl_check", "-CAfile", ca.root_cert_path, "-CRLfile", ca.crl_path, leaf)
    assert openssl(*check).returncode == 0
    revoke(ca, cert.serial_number, "keyCompromise")
    result = openssl(*check)
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


def test_crl_numbers_increase_with_each_signing(ca: CaDirectory) -> None:
    """Every re-signing gets a larger CRL number (RFC 5280 5.2.3)."""
    numbers = []
    for _ in range(3):
        numbers.append(publish_crl(ca).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    assert numbers == sorted(set(numbers))


def test_crl_der_is_the_published_crl_in_der(ca: CaDirectory) -> None:
    """crl_der returns DER that parses to the same CRL as crl.pem."""
    revoke(ca, _issue(ca).serial_number)
    assert x509.load_der_x509_crl(crl_der(ca)) == _crl(ca)


def test_revoking_twice_is_refused(ca: CaDirectory) -> None:
    """A second revocation of the same serial raises FailedPrecondition."""
    serial = _issue(ca).serial_number
    revoke(ca, serial)
    with pytest.raises(FailedPrecondition, match="already revoked"):
        revoke(ca, serial)


def test_revoking_an_unknown_serial_is_not_found(ca: CaDirectory) -> None:
    """Revoking a serial this CA never issued raises NotFound."""
    with pytest.raises(NotFound):
        revoke(ca, "0badc0de")


def test_reason_names_follow_rfc_5280_in_any_case() -> None:
    """Reason names are RFC 5280's, matched case-insensitively."""
    assert parse_reason("KEYCOMPROMISE") == "keyCompromise"
    assert parse_reason("cessationOfOperation") == "cessationOfOperation"


@pytest.mark.parametrize("reason", ["certificateHold", "removeFromCRL", "lost-it"])
def test_reversible_or_unknown_reasons_are_refused(reason: str) -> None:
    """Holds, removals and made-up reasons raise InvalidRequest."""
    with pytest.raises(InvalidRequest):
        parse_reason(reason)


def test_crl_of_another_ca_does_not_verify(ca: CaDirectory) -> None:
    """verify_crl refuses a CRL signed by another CA with the same name."""
    authority = ca.load_authority()
    impostor = create_root_ca(TRUST_DOMAIN, private_key=generate_identity_key())
    forged = sign_crl(impostor, [], 99).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_crl(forged, authority.certificate)


def test_revocation_list_sees_a_revocation_on_the_next_check(ca: CaDirectory) -> None:
    """With no rate limit, is_revoked turns true right after revoke()."""
    serial = _issue(ca).serial_number
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path), check_interval=0)
    assert not revocations.is_revoked(serial)
    revoke(ca, serial, "keyCompromise")
    assert revocations.is_revoked(serial)


def test_revocation_list_with_default_interval_notices_within_a_second(ca: CaDirectory) -> None:
    """With the default 50 ms rate limit, a revocation is seen well within one second."""
    serial = _issue(ca).serial_number
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path))
    revoke(ca, serial)
    deadline = time.monotonic() + 1.0
    while not revocations.is_revoked(serial) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert revocations.is_revoked(serial)


def test_revocation_list_does_not_stat_between_checks(ca: CaDirectory) -> None:
    """Within check_interval the cached list answers, even if the file changed."""
    serial = _issue(ca).serial_number
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path), check_interval=3600)
    revoke(ca, serial)
    assert not revocations.is_revoked(serial)
    revocations.refresh(force=True)
    assert revocations.is_revoked(serial)


def test_forged_crl_keeps_the_old_list_and_logs_an_error(ca: CaDirectory) -> None:
    """A replacement CRL that fails verification is ignored and logged as pki.crl_rejected."""
    serial = _issue(ca).serial_number
    revoke(ca, serial)
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path), check_interval=0)
    impostor = create_root_ca(TRUST_DOMAIN)
    ca.crl_path.write_bytes(sign_crl(impostor, [], 99).public_bytes(serialization.Encoding.PEM))
    with capture_logs() as logs:
        assert revocations.is_revoked(serial)
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["pki.crl_rejected"]


def test_generation_increases_only_on_reload(ca: CaDirectory) -> None:
    """generation is stable while the CRL is unchanged and increases after a revocation."""
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path), check_interval=0)
    first = revocations.generation
    assert revocations.generation == first
    revoke(ca, _issue(ca).serial_number)
    assert revocations.generation == first + 1


def test_missing_crl_at_start_is_a_configuration_error(tmp_path: Path, ca: CaDirectory) -> None:
    """Constructing a RevocationList over a missing file raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match="does not exist"):
        RevocationList(tmp_path / "absent.pem", _files.load_certificate(ca.issuing_cert_path))


def test_crl_deleted_later_keeps_the_old_list(ca: CaDirectory) -> None:
    """If the CRL file disappears, the last verified list stays in force (fail closed)."""
    serial = _issue(ca).serial_number
    revoke(ca, serial)
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path), check_interval=0)
    os.unlink(ca.crl_path)
    with capture_logs() as logs:
        assert revocations.is_revoked(serial)
        assert revocations.is_revoked(serial)
    assert [entry["event"] for entry in logs] == ["pki.crl_missing"]


def test_crl_restored_after_deletion_is_loaded_again(ca: CaDirectory) -> None:
    """A CRL that comes back after being deleted is verified and used."""
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path), check_interval=0)
    os.unlink(ca.crl_path)
    serial = _issue(ca).serial_number
    with capture_logs():
        assert not revocations.is_revoked(serial)
        revoke(ca, serial)  # re-creates crl.pem
        assert revocations.is_revoked(serial)
