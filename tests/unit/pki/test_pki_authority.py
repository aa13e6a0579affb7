"""In-memory CAs and `issue_certificate`, checked with openssl."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from broker.errors import InvalidRequest
from broker.identity import Role, make_spiffe_id
from broker.pki import _files
from broker.pki.authority import (
    CertificateAuthority,
    create_intermediate_ca,
    create_root_ca,
    generate_identity_key,
    issue_certificate,
)
from tests.openssl_support import OpenSsl

TRUST_DOMAIN = "isb.test"

ROOT = create_root_ca(TRUST_DOMAIN)
AGENCY = make_spiffe_id(TRUST_DOMAIN, Role.AGENCY, "FR-CUSTOMS")


def _write(directory: Path, name: str, *certs: x509.Certificate) -> Path:
    path = directory / name
    path.write_bytes(_files.certificate_pem(*certs))
    return path


def _issue(
    authority: CertificateAuthority, *, not_before: datetime | None = None, not_after: datetime | None = None
) -> x509.Certificate:
    key = generate_identity_key().public_key()
    return issue_certificate(authority, key, AGENCY, not_before=not_before, not_after=not_after)


def test_leaf_of_unrelated_ca_fails_openssl_verify(tmp_path: Path, openssl: OpenSsl) -> None:
    """A certificate from another CA, even of the same trust domain name, does not verify."""
    other = create_root_ca(TRUST_DOMAIN, common_name="rogue CA")
    leaf = _write(tmp_path, "leaf.pem", _issue(other))
    result = openssl("verify", "-CAfile", _write(tmp_path, "ca.pem", ROOT.certificate), leaf)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_expired_certificate_fails_openssl_verify(tmp_path: Path, openssl: OpenSsl) -> None:
    """A certificate with not_after in the past is reported expired by openssl."""
    past = datetime.now(UTC) - timedelta(days=10)
    leaf = _write(tmp_path, "leaf.pem", _issue(ROOT, not_before=past, not_after=past + timedelta(days=1)))
    result = openssl("verify", "-CAfile", _write(tmp_path, "ca.pem", ROOT.certificate), leaf)
    assert result.returncode != 0
    assert "certificate has expired" in result.stdout + result.stderr


def test_intermediate_chain_passes_openssl_verify(tmp_path: Path, openssl: OpenSsl) -> None:
    """A leaf of an intermediate verifies against the root alone given the chain it presents."""
    intermediate = create_intermediate_ca(ROOT)
    chain = _write(tmp_path, "chain.pem", _issue(intermediate), *intermediate.chain)
    root = _write(tmp_path, "ca.pem", ROOT.certificate)
    result = openssl("verify", "-CAfile", root, "-untrusted", chain, chain)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("role", "accepted"), [(Role.AGENCY, "sslclient"), (Role.BROKER, "sslserver")])
def test_role_decides_the_tls_purpose(tmp_path: Path, openssl: OpenSsl, role: Role, accepted: str) -> None:
    """Agency certificates pass only as TLS clients, broker certificates only as TLS servers."""
    spiffe_id = make_spiffe_id(TRUST_DOMAIN, role, "FR-CUSTOMS" if role is Role.AGENCY else "node-1")
    cert = issue_certificate(ROOT, generate_identity_key().public_key(), spiffe_id)
    leaf, root = _write(tmp_path, "leaf.pem", cert), _write(tmp_path, "ca.pem", ROOT.certificate)
    refused = {"sslclient": "sslserver", "sslserver": "sslclient"}[accepted]
    assert openssl("verify", "-purpose", accepted, "-CAfile", root, leaf).returncode == 0
    assert openssl("verify", "-purpose", refused, "-CAfile", root, leaf).returncode != 0


def test_identity_outside_the_trust_domain_is_not_issued() -> None:
    """issue_certificate refuses a SPIFFE id of another trust domain."""
    foreign = make_spiffe_id("other.test", Role.AGENCY, "FR-CUSTOMS")
    with pytest.raises(InvalidRequest, match="outside the CA's trust domain"):
        issue_certificate(ROOT, generate_identity_key().public_key(), foreign)


def test_validity_window_must_not_be_empty() -> None:
    """A not_after before not_before is refused."""
    now = datetime.now(UTC)
    with pytest.raises(InvalidRequest, match="expire before"):
        _issue(ROOT, not_before=now, not_after=now - timedelta(seconds=1))


def test_leaf_is_not_a_ca() -> None:
    """Leaves carry BasicConstraints CA=false and only digitalSignature."""
    cert = _issue(ROOT)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert not usage.crl_sign
