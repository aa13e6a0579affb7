"""Revocation checked by the relying party: a CA-signed CRL, verified for origin and freshness.

The broker hands out the CRL (BrokerService.GetRevocationList), but the CA signs it, so a broker
cannot forge one. What a broker *can* do is serve an old one: a stale replica, a broker started on
a copy of the database, or one that withholds a revocation so that senders keep encrypting to a
revoked key (issue 13). Two rules bound that, and both fail closed:

- a CRL past its nextUpdate is refused (`StaleRevocationList`): the CA re-signs it (`isb pki crl`,
  default validity 7 days), so an old CRL stops being usable within that period;
- a CRL whose CRL number is lower than one the client has already seen is refused: the client
  keeps the highest number it has verified (the SDK in its keystore), so once it has seen a
  revocation no broker can make it forget.

docs/protocol.md, "Revocation", is the normative description; `tests/vectors/crl-freshness.json`
has a vector for each rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from broker.protocol import validation
from broker.protocol.errors import VerificationError

__all__ = [
    "CRL_CLOCK_SKEW",
    "RevokedCertificate",
    "StaleRevocationList",
    "VerifiedCrl",
    "verify_revocation_list",
]

# A CRL signed a moment ago by a CA whose clock runs ahead is still accepted.
CRL_CLOCK_SKEW: Final = dt.timedelta(minutes=5)
_FIX = "the CA admin must re-sign the CRL with `isb pki crl` (schedule it daily), and the broker serve it"


class StaleRevocationList(VerificationError):
    """The CRL is past its nextUpdate or older than one already seen: revocation cannot be checked."""


class RevokedCertificate(VerificationError):
    """A certificate is on the verified CRL."""


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    """A CRL whose signature, issuer and freshness were verified at `verified_at`."""

    number: int
    issuer: x509.Name
    this_update: dt.datetime
    next_update: dt.datetime
    revoked: frozenset[int]
    verified_at: dt.datetime

    def is_current(self, now: dt.datetime) -> bool:
        """Whether the CRL is still before its nextUpdate at `now`."""
        return now < self.next_update

    def require_current(self, now: dt.datetime) -> None:
        """Raise `StaleRevocationList` if the CRL has passed its nextUpdate at `now`."""
        if not self.is_current(now):
            raise StaleRevocationList(
                f"the CRL (number {self.number}) expired at {self.next_update.isoformat()} (its nextUpdate):"
                f" revocation cannot be checked, so nothing is encrypted to or accepted from a certificate; {_FIX}"
            )

    def verify_not_revoked(self, certificate: x509.Certificate, *, who: str) -> None:
        """Raise `RevokedCertificate` if `certificate` (of `who`) is on this CRL."""
        # One CA per trust domain signs leaves and the CRL, so the serial alone names the certificate;
        # a certificate of another issuer is not covered by this CRL and has failed its chain already.
        if certificate.issuer == self.issuer and certificate.serial_number in self.revoked:
            serial = _serial_hex(certificate.serial_number)
            raise RevokedCertificate(f"certificate {serial} of {who} has been revoked (CRL number {self.number})")


def _serial_hex(number: int) -> str:
    text = f"{number:x}"
    return text if len(text) % 2 == 0 else "0" + text


def _issuer(
    crl: x509.CertificateRevocationList,
    trust_roots: Sequence[x509.Certificate],
    issuer_chain: Sequence[x509.Certificate],
    now: dt.datetime,
) -> x509.Certificate:
    for root in trust_roots:
        if root.subject == crl.issuer:
            return root
    # An intermediate signs the CRL: it must be a CA certificate issued by one of our roots and
    # valid now; the chain comes from the broker, so it is verified like everything else from there.
    for candidate in issuer_chain:
        if candidate.subject != crl.issuer:
            continue
        for root in trust_roots:
            try:
                candidate.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            try:
                constraints = candidate.extensions.get_extension_for_class(x509.BasicConstraints).value
            except (x509.ExtensionNotFound, ValueError):
                break
            if constraints.ca and candidate.not_valid_before_utc <= now < candidate.not_valid_after_utc:
                return candidate
    raise VerificationError(f"CRL issuer {crl.issuer.rfc4514_string()!r} is not a CA of our trust anchor")


def _verified(
    crl: x509.CertificateRevocationList,
    trust_roots: Sequence[x509.Certificate],
    issuer_chain: Sequence[x509.Certificate],
    now: dt.datetime,
) -> VerifiedCrl:
    # 2. Issuer: the trust anchor or an intermediate CA it issued.
    issuer = _issuer(crl, trust_roots, issuer_chain, now)
    # 3. Signature.
    public_key = issuer.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
        raise VerificationError(f"CRL signature does not verify with {issuer.subject.rfc4514_string()!r}")
    # 4. CRL number (RFC 5280 5.2.3): required, it orders CRLs.
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise VerificationError("CRL has no CRL number: its age cannot be compared") from None
    # 5. Freshness in time: issued, and not past nextUpdate.
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if next_update is None:
        raise VerificationError("CRL has no nextUpdate: its freshness cannot be judged")
    if this_update > now + CRL_CLOCK_SKEW:
        raise VerificationError(f"CRL (number {number}) claims to be issued in the future, at {this_update}")
    return VerifiedCrl(
        number, crl.issuer, this_update, next_update, frozenset(entry.serial_number for entry in crl), now
    )


def verify_revocation_list(
    data: bytes,
    *,
    trust_roots: Sequence[x509.Certificate],
    issuer_chain: Sequence[x509.Certificate] = (),
    now: dt.datetime,
    min_number: int = 0,
) -> VerifiedCrl:
    """Verify a CRL (DER or PEM) against the trust anchor and for freshness; raise `VerificationError`.

    Raises `StaleRevocationList` when the CRL is past its nextUpdate or its CRL number is below
    `min_number` (the highest the caller has seen), plain `VerificationError` for anything else.
    """
    validation.require_aware(now, "now")
    # 1. Parse.
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl(data)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise VerificationError(f"CRL does not parse: {exc}") from exc
    # cryptography parses a CRL's fields lazily: a malformed field surfaces only when read.
    try:
        verified = _verified(crl, trust_roots, issuer_chain, now)
    except ValueError as exc:
        raise VerificationError(f"CRL does not parse: {exc}") from exc
    verified.require_current(now)
    # 6. Freshness in order: never older than one already seen.
    if verified.number < min_number:
        raise StaleRevocationList(
            f"the broker serves CRL number {verified.number}, older than number {min_number} already seen: it hides"
            " revocations (a stale replica or a copy of the database?); refusing to rely on it."
            " Use an up-to-date broker; if the CA was rebuilt, clear the SDK's trust state"
        )
    return verified
