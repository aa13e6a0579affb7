"""Issuing and renewing certificates of a `CaDirectory`: policy on top of `authority.issue_certificate`.

What an admin service calls: `issue_from_csr`, `renew`, then `chain_pem` for the bytes to hand out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from broker.audit.events import CERTIFICATE_ISSUED
from broker.errors import FailedPrecondition, InvalidRequest
from broker.identity import Role
from broker.pki import _files
from broker.pki.authority import (
    DEFAULT_LIFETIME_DAYS,
    MAX_LIFETIME_DAYS,
    CertificateAuthority,
    issue_certificate,
)
from broker.pki.csr import CertificateRequest, san_ip_addresses, verify_csr
from broker.pki.inspect import certificate_identity, parse_serial
from broker.pki.store import CaDirectory, CertificateRecord, CertificateStatus

__all__ = ["chain_pem", "check_lifetime", "issue_from_csr", "issue_request", "renew"]

log = structlog.get_logger(__name__)


def check_lifetime(authority: CertificateAuthority, role: Role, lifetime_days: int | None) -> int:
    """The lifetime to use in days: the role's default, bounded by policy and the CA's own expiry."""
    days = DEFAULT_LIFETIME_DAYS[role] if lifetime_days is None else lifetime_days
    if not 1 <= days <= MAX_LIFETIME_DAYS:
        raise InvalidRequest(f"lifetime must be between 1 and {MAX_LIFETIME_DAYS} days, not {days}")
    # A leaf that outlives its CA would stop verifying before its own expiry date.
    if datetime.now(UTC) + timedelta(days=days) > authority.certificate.not_valid_after_utc:
        raise InvalidRequest(
            f"a {days}-day certificate would outlive the issuing CA"
            f" (expires {authority.certificate.not_valid_after_utc.date().isoformat()})"
        )
    return days


def issue_request(
    ca: CaDirectory,
    request: CertificateRequest,
    *,
    lifetime_days: int | None = None,
    expected_role: Role | None = None,
    renewed_from: str | None = None,
) -> tuple[x509.Certificate, CertificateRecord]:
    """Issue and record a certificate for an already verified request."""
    if expected_role is not None and request.spiffe_id.role is not expected_role:
        raise InvalidRequest(
            f"request is for a {request.spiffe_id.role.value} ({request.spiffe_id}), not a {expected_role.value}"
        )
    with ca.locked():
        authority = ca.load_authority()
        days = check_lifetime(authority, request.spiffe_id.role, lifetime_days)
        cert = issue_certificate(
            authority,
            request.public_key,
            request.spiffe_id,
            lifetime_days=days,
            dns_names=request.dns_names,
            ip_addresses=request.ip_addresses,
        )
        record = ca.record_issued(cert, renewed_from=renewed_from)
    log.info(
        CERTIFICATE_ISSUED, serial=record.serial, spiffe_id=record.spiffe_id, not_after=record.not_after.isoformat()
    )
    return cert, record


def issue_from_csr(
    ca: CaDirectory,
    csr_pem: bytes,
    lifetime_days: int | None = None,
    *,
    expected_role: Role | None = None,
) -> tuple[x509.Certificate, CertificateRecord]:
    """Verify a CSR (signature, key, SPIFFE id of our trust domain) and issue its certificate."""
    request = verify_csr(csr_pem, ca.trust_domain)
    return issue_request(ca, request, lifetime_days=lifetime_days, expected_role=expected_role)


def renew(
    ca: CaDirectory,
    serial: str | int,
    *,
    csr_pem: bytes | None = None,
    lifetime_days: int | None = None,
) -> tuple[x509.Certificate, CertificateRecord]:
    """Issue a successor of a current certificate: same SPIFFE id, new serial, same or new key.

    With `csr_pem` the successor certifies the CSR's key (key rotation) and the CSR must be for the
    same identity; without it, the predecessor's public key is certified again. The predecessor
    stays valid until it expires, so clients can switch over without downtime.
    """
    number = parse_serial(serial) if isinstance(serial, str) else serial
    record = ca.read_index().find(number)
    status = record.status()
    if status is not CertificateStatus.VALID:
        raise FailedPrecondition(
            f"certificate {record.serial} ({record.spiffe_id}) is {status.value}: issue a new one from a CSR"
        )
    old = ca.issued_certificate(number)
    old_id = certificate_identity(old, ca.trust_domain)
    san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if csr_pem is None:
        public_key = old.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidRequest(f"certificate {record.serial} does not hold an ECDSA key")
        request = CertificateRequest(
            spiffe_id=old_id,
            public_key=public_key,
            dns_names=tuple(san.get_values_for_type(x509.DNSName)),
            ip_addresses=san_ip_addresses(san),
        )
    else:
        request = verify_csr(csr_pem, ca.trust_domain)
        if request.spiffe_id != old_id:
            raise InvalidRequest(f"CSR is for {request.spiffe_id}, but certificate {record.serial} is {old_id}")
    return issue_request(ca, request, lifetime_days=lifetime_days, renewed_from=record.serial)


def chain_pem(ca: CaDirectory, cert: x509.Certificate) -> bytes:
    """The certificate followed by the intermediates a peer needs (not the root), as PEM."""
    chain = (_files.load_certificate(ca.intermediate_cert_path),) if ca.has_intermediate else ()
    return _files.certificate_pem(cert, *chain)
