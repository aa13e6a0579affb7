"""Signing a CRL (RFC 5280 section 5): the revocation reasons we accept, validity, `sign_crl`.

Kept apart from `store` (the CA directory) and `revocation` (revoking, the broker's per-call list)
so that both can use it: `store` publishes the first, empty, CRL when it creates a CA.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from broker.errors import InvalidRequest
from broker.pki.authority import CertificateAuthority

__all__ = ["CRL_VALIDITY", "MAX_CRL_VALIDITY", "REVOCATION_REASONS", "RevokedRecord", "parse_reason", "sign_crl"]

# How long a CRL claims to be current (its nextUpdate). SDKs refuse a CRL past its nextUpdate
# (fail closed), so this bounds how long a broker can hide a revocation by serving an old CRL.
# `isb pki crl` re-signs it; admins schedule that well within this period (README, Operations).
CRL_VALIDITY = timedelta(days=7)
MAX_CRL_VALIDITY = timedelta(days=90)

# RFC 5280 section 5.3.1 names, as typed on the command line.
REVOCATION_REASONS: Mapping[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
# Revocation here is final: a hold that can be lifted, or removing an entry, would let a
# certificate come back after the broker has refused it, which nobody auditing expects.
_NOT_ACCEPTED = {"certificateHold", "removeFromCRL"}


def parse_reason(text: str) -> str:
    """Check an RFC 5280 reason name (case-insensitive) and return its canonical spelling."""
    for name in REVOCATION_REASONS:
        if name.lower() == text.strip().lower():
            if name in _NOT_ACCEPTED:
                raise InvalidRequest(f"reason {name} is not accepted: revocation here is permanent")
            return name
    accepted = ", ".join(name for name in REVOCATION_REASONS if name not in _NOT_ACCEPTED)
    raise InvalidRequest(f"{text!r} is not an RFC 5280 revocation reason (one of: {accepted})")


class RevokedRecord(Protocol):
    """What a CRL entry needs of an issued certificate's record (`broker.pki.store.CertificateRecord`)."""

    @property
    def serial_number(self) -> int:
        """The serial as an integer."""
        ...

    @property
    def revoked_at(self) -> datetime | None:
        """When it was revoked, or None if it is not."""
        ...

    @property
    def revocation_reason(self) -> str | None:
        """The RFC 5280 reason name."""
        ...


def sign_crl(
    authority: CertificateAuthority,
    revoked: Iterable[RevokedRecord],
    crl_number: int,
    *,
    validity: timedelta = CRL_VALIDITY,
    now: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL over the revoked records, signed by `authority` (RFC 5280 section 5), issued at `now`."""
    now = now or datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.private_key.public_key()),
            critical=False,
        )
    )
    for record in revoked:
        if record.revoked_at is None:
            continue
        entry = x509.RevokedCertificateBuilder().serial_number(record.serial_number)
        entry = entry.revocation_date(record.revoked_at)
        reason = record.revocation_reason or "unspecified"
        # RFC 5280 5.3.1: the reasonCode "unspecified" SHOULD be absent rather than present.
        if reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(REVOCATION_REASONS[reason]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(authority.private_key, hashes.SHA256())
