"""Certificate signing requests: the agency side creates one, the CA side checks it.

Private keys are generated where they are used (DESIGN.md section 2): an agency keeps its key and
sends only the CSR, which proves possession of the key by its signature.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import AuthenticationError, InvalidRequest, VerificationError
from broker.identity import Role, SpiffeId, parse_spiffe_id
from broker.pki.authority import leaf_subject, subject_alt_names

__all__ = ["ACCEPTED_CURVES", "CertificateRequest", "create_csr", "csr_pem", "san_ip_addresses", "verify_csr"]

# Curves gRPC's TLS stacks accept for client and server certificates on every platform we ship.
ACCEPTED_CURVES: tuple[str, ...] = ("secp256r1", "secp384r1")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """What the CA is asked to certify, checked: from a verified CSR or from a certificate to renew."""

    spiffe_id: SpiffeId
    public_key: ec.EllipticCurvePublicKey
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[IpAddress, ...] = ()
    csr: x509.CertificateSigningRequest | None = None

    @property
    def subject(self) -> str:
        """The subject the requester wrote (RFC 4514), shown before issuing; it is not copied."""
        return self.csr.subject.rfc4514_string() if self.csr is not None else ""

    def describe(self) -> str:
        """A few lines for the admin to read before confirming issuance."""
        lines = [
            f"  SPIFFE id : {self.spiffe_id}",
            f"  role      : {self.spiffe_id.role.value}",
            f"  subject   : {self.subject or '(empty)'}",
            f"  key       : ECDSA {self.public_key.curve.name}",
        ]
        if self.dns_names:
            lines.append(f"  DNS names : {', '.join(self.dns_names)}")
        if self.ip_addresses:
            lines.append(f"  IPs       : {', '.join(str(ip) for ip in self.ip_addresses)}")
        return "\n".join(lines)


def create_csr(
    key: ec.EllipticCurvePrivateKey,
    spiffe_id: SpiffeId,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | IpAddress] = (),
) -> x509.CertificateSigningRequest:
    """A CSR for `spiffe_id` signed with `key` (agency side)."""
    names = subject_alt_names(spiffe_id, dns_names, ip_addresses)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(leaf_subject(spiffe_id))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def verify_csr(data: bytes, trust_domain: str) -> CertificateRequest:
    """Parse and check a CSR (PEM or DER) for `trust_domain`, or raise with what is wrong.

    Raises `VerificationError` when the signature does not verify, `InvalidRequest` for anything
    else the CA will not sign.
    """
    # 1. Parse: a broken encoding is the caller's error, reported as ours, never a raw ValueError.
    try:
        csr = x509.load_pem_x509_csr(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_csr(data)
    except x509.InvalidVersion as exc:  # not a ValueError: PKCS#10 knows version 1 (encoded 0) only
        raise InvalidRequest(f"not a PKCS#10 version 1 certificate signing request: {exc}") from exc
    except ValueError as exc:
        raise InvalidRequest(f"not a certificate signing request: {exc}") from exc
    # 2. Proof of possession: the CSR must be signed by the key it asks us to certify.
    _verify_csr_signature(csr)
    # 3. Key type: only the curves every client and the broker accept.
    public_key = _accepted_key(csr)
    # 4. Identity and other names.
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise InvalidRequest("CSR has no subject alternative name: it must carry the SPIFFE id") from exc
    except ValueError as exc:
        raise InvalidRequest(f"CSR extensions do not parse: {exc}") from exc
    spiffe_id, dns_names, ip_addresses = _names(san, trust_domain)
    return CertificateRequest(spiffe_id, public_key, dns_names, ip_addresses, csr)


def _verify_csr_signature(csr: x509.CertificateSigningRequest) -> None:
    try:
        signature_ok = csr.is_signature_valid
    except UnsupportedAlgorithm as exc:  # a curve or signature algorithm cryptography does not know
        raise InvalidRequest(f"CSR key must be ECDSA on {' or '.join(ACCEPTED_CURVES)}: {exc}") from exc
    except (ValueError, TypeError) as exc:  # unsupported signature algorithm
        raise VerificationError(f"CSR signature cannot be checked: {exc}") from exc
    if not signature_ok:
        raise VerificationError(
            "CSR signature does not verify with the public key it carries (altered or forged request)"
        )


def _accepted_key(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidRequest(f"CSR public key does not parse: {exc}") from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in ACCEPTED_CURVES:
        raise InvalidRequest(f"CSR key must be ECDSA on {' or '.join(ACCEPTED_CURVES)}")
    return public_key


def _names(
    san: x509.SubjectAlternativeName, trust_domain: str
) -> tuple[SpiffeId, tuple[str, ...], tuple[IpAddress, ...]]:
    # Exactly one URI SAN, a well-formed SPIFFE id of our trust domain (X509-SVID rules).
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidRequest(f"CSR must carry exactly one URI SAN (its SPIFFE id), found {len(uris)}")
    try:
        spiffe_id = parse_spiffe_id(uris[0], trust_domain)
    except AuthenticationError as exc:
        raise InvalidRequest(f"CSR refused: {exc}") from exc
    # DNS and IP only for broker nodes (a server name in an agency certificate would let it pose
    # as the broker to a client that skips the EKU check); no other kind of name at all.
    dns_names = tuple(san.get_values_for_type(x509.DNSName))
    ip_addresses = san_ip_addresses(san)
    if len(san) != len(uris) + len(dns_names) + len(ip_addresses):
        raise InvalidRequest("CSR may name only a SPIFFE URI, DNS names and IP addresses")
    if (dns_names or ip_addresses) and spiffe_id.role not in {Role.BROKER, Role.WITNESS}:
        raise InvalidRequest(
            f"only broker certificates (and witness ones) may carry DNS names or IP addresses, not {spiffe_id}"
        )
    return spiffe_id, dns_names, ip_addresses


def san_ip_addresses(san: x509.SubjectAlternativeName) -> tuple[IpAddress, ...]:
    """The IP addresses of a SAN extension; networks (meaningful only in name constraints) are refused."""
    addresses: list[IpAddress] = []
    for value in san.get_values_for_type(x509.IPAddress):
        if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise InvalidRequest(f"{value} is a network, not an IP address")
        addresses.append(value)
    return tuple(addresses)


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """The PEM encoding of `csr`."""
    return csr.public_bytes(serialization.Encoding.PEM)
