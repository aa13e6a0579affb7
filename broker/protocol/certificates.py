"""The certificate profile of the trust domain: what every leaf certificate must be.

Checked in one place, `verify_leaf_profile`, by everyone who relies on a leaf: the CA before it
hands out a certificate (`broker.pki.authority.issue_certificate`), the broker on every call
(`broker.transport.auth`), and the SDK for its own certificate and for every peer certificate it
verifies (recipients' key bundles, senders of deliveries, receipts). The chain itself is verified
by TLS and by `cryptography.x509.verification`; this profile adds what those accept but we do not.

The rules are the SPIFFE X509-SVID profile (section 4 of the X509-SVID specification) plus ours;
docs/protocol.md, "Certificate profile", is the normative list. In order:

1. X.509 version 3.
2. Exactly one URI SAN, a SPIFFE id `spiffe://<trust domain>/<role>/<name>` of our trust domain;
   DNS names and IP addresses only for broker certificates; no other kind of name.
3. basicConstraints present with cA FALSE (a leaf can never sign certificates).
4. keyUsage present and critical, with digitalSignature, without keyCertSign and cRLSign.
5. extendedKeyUsage present and exactly the role's: clientAuth for agencies, auditors and admins,
   serverAuth for brokers (an agency certificate can never pose as the broker, nor a server
   certificate as a caller).
6. authorityKeyIdentifier present (path building and the CRL name the issuing key by it).
7. A lifetime (notAfter - notBefore) of at most `MAX_LIFETIME_DAYS` days, plus clock skew.
8. An ECDSA key: P-256 for agencies (their identity signatures are P-256 by protocol), P-256 or
   P-384 for the other roles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.errors import AuthenticationError
from broker.identity import Role, SpiffeId, parse_spiffe_id
from broker.protocol.errors import VerificationError

__all__ = [
    "MAX_LIFETIME_DAYS",
    "PROFILE_CLOCK_SKEW",
    "ROLE_EXTENDED_KEY_USAGE",
    "CertificateProfileError",
    "spiffe_id_of",
    "verify_leaf_profile",
]

# Upper bound for any leaf: short-lived identities limit what a stolen key is worth even when
# nobody thinks of revoking it; 825 days is the historical CA/Browser Forum ceiling.
MAX_LIFETIME_DAYS: Final = 825
# Issuance back-dates notBefore by five minutes; allow that much on top of the lifetime bound.
PROFILE_CLOCK_SKEW: Final = dt.timedelta(minutes=5)

# One usage per role so an agency certificate cannot pose as a broker (issue 5) and a broker's
# server certificate cannot call as a client.
ROLE_EXTENDED_KEY_USAGE: Final[Mapping[Role, frozenset[x509.ObjectIdentifier]]] = {
    Role.AGENCY: frozenset({ExtendedKeyUsageOID.CLIENT_AUTH}),
    Role.AUDITOR: frozenset({ExtendedKeyUsageOID.CLIENT_AUTH}),
    Role.ADMIN: frozenset({ExtendedKeyUsageOID.CLIENT_AUTH}),
    Role.BROKER: frozenset({ExtendedKeyUsageOID.SERVER_AUTH}),
    # A partner agency's witness (docs/protocol.md section 18): it serves add-checkpoint over mutual
    # TLS, and the broker submits to it with a witness-role submitter certificate.
    Role.WITNESS: frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
}
_USAGE_NAMES: Final = {ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth", ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth"}
_AGENCY_CURVES: Final = ("secp256r1",)
_OTHER_CURVES: Final = ("secp256r1", "secp384r1")


class CertificateProfileError(VerificationError):
    """A certificate is outside the deployment's certificate profile; the message names the rule."""


_E = TypeVar("_E", bound=x509.ExtensionType)


def _extension(cert: x509.Certificate, kind: type[_E], rule: str) -> x509.Extension[_E]:
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        raise CertificateProfileError(f"certificate has no {rule} extension") from None
    except ValueError as exc:  # extensions are parsed lazily; a malformed one surfaces here
        raise CertificateProfileError(f"certificate extensions do not parse: {exc}") from exc


def _subject_alt_name(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateProfileError(
            "certificate has no subject alternative name (no subjectAltName extension, so no SPIFFE id)"
        ) from None
    except ValueError as exc:  # extensions are parsed lazily; a malformed one surfaces here
        raise CertificateProfileError(f"certificate extensions do not parse: {exc}") from exc


def spiffe_id_of(cert: x509.Certificate, trust_domain: str | None) -> SpiffeId:
    """The SPIFFE id of `cert`'s single URI SAN, of `trust_domain` (None: any); raise `CertificateProfileError`.

    The X509-SVID rules allow exactly one URI SAN: with two, which one names the holder would be
    ambiguous, so such a certificate identifies nobody. The one place that reads a certificate's
    identity: the PKI, the transport's authentication and the SDK's verification all call it.
    """
    uris = _subject_alt_name(cert).get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateProfileError(f"certificate must carry exactly one URI SAN, has {len(uris)} (its SPIFFE id)")
    try:
        return parse_spiffe_id(uris[0], trust_domain)
    except AuthenticationError as exc:
        raise CertificateProfileError(str(exc)) from exc


def _identity(cert: x509.Certificate, trust_domain: str) -> SpiffeId:
    spiffe_id = spiffe_id_of(cert, trust_domain)
    san = _subject_alt_name(cert)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    others = len(san) - len(uris)
    server_names = len(san.get_values_for_type(x509.DNSName)) + len(san.get_values_for_type(x509.IPAddress))
    if others != server_names:
        raise CertificateProfileError(f"certificate of {spiffe_id} names more than a SPIFFE id, DNS names and IPs")
    if server_names and spiffe_id.role not in {Role.BROKER, Role.WITNESS}:
        raise CertificateProfileError(
            f"only broker certificates (and witness ones) may carry DNS names or IP addresses, not {spiffe_id}"
        )
    return spiffe_id


def verify_leaf_profile(cert: x509.Certificate, trust_domain: str, *, role: Role | None = None) -> SpiffeId:
    """Check `cert` against the leaf profile and return its SPIFFE id; raise `CertificateProfileError`.

    With `role`, the certificate must also be of that role. Validity at a given time, the chain and
    revocation are checked elsewhere (TLS, `cryptography.x509.verification`, the CRL).
    """
    # 1. Version.
    if cert.version is not x509.Version.v3:
        raise CertificateProfileError("certificate is not X.509 version 3")
    # 2. Identity: one SPIFFE id of our trust domain; server names for brokers only.
    spiffe_id = _identity(cert, trust_domain)
    if role is not None and spiffe_id.role is not role:
        raise CertificateProfileError(f"certificate is for a {spiffe_id.role.value} ({spiffe_id}), not a {role.value}")
    who = str(spiffe_id)
    # 3. Never a CA.
    constraints = _extension(cert, x509.BasicConstraints, "basicConstraints").value
    if constraints.ca:
        raise CertificateProfileError(f"certificate of {who} is a CA certificate (cA TRUE), not a leaf")
    # 4. Key usage: signs (TLS 1.3 handshakes, envelopes), never certifies.
    usage_extension = _extension(cert, x509.KeyUsage, "keyUsage")
    usage = usage_extension.value
    if not usage_extension.critical:
        raise CertificateProfileError(f"certificate of {who} has a non-critical keyUsage extension")
    if not usage.digital_signature:
        raise CertificateProfileError(f"certificate of {who} lacks the digitalSignature key usage")
    if usage.key_cert_sign or usage.crl_sign:
        raise CertificateProfileError(f"certificate of {who} may sign certificates or CRLs (keyCertSign/cRLSign)")
    # 5. Extended key usage: exactly the role's.
    extended = _extension(cert, x509.ExtendedKeyUsage, "extendedKeyUsage").value
    expected = ROLE_EXTENDED_KEY_USAGE[spiffe_id.role]
    if frozenset(extended) != expected or len(list(extended)) != len(expected):
        names = ", ".join(sorted(_USAGE_NAMES[oid] for oid in expected))
        raise CertificateProfileError(
            f"certificate of {who} must have exactly the extended key usage {names} of a {spiffe_id.role.value}"
        )
    # 6. Authority key identifier.
    aki = _extension(cert, x509.AuthorityKeyIdentifier, "authorityKeyIdentifier").value
    if not aki.key_identifier:
        raise CertificateProfileError(f"certificate of {who} has an authorityKeyIdentifier without a key identifier")
    # 7. Bounded lifetime.
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime > dt.timedelta(days=MAX_LIFETIME_DAYS) + PROFILE_CLOCK_SKEW:
        raise CertificateProfileError(
            f"certificate of {who} is valid for {lifetime.days} days, over the {MAX_LIFETIME_DAYS}-day maximum"
        )
    # 8. Key type.
    try:
        key = cert.public_key()
    except ValueError as exc:
        raise CertificateProfileError(f"certificate public key of {who} does not parse: {exc}") from exc
    curves = _AGENCY_CURVES if spiffe_id.role is Role.AGENCY else _OTHER_CURVES
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in curves:
        raise CertificateProfileError(f"certificate key of {who} must be ECDSA on {' or '.join(curves)}")
    return spiffe_id
