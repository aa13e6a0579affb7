"""Certificate authorities of the trust domain and the certificates they issue (DESIGN.md section 2).

Everything here works in memory; `broker.pki.store` keeps a CA on disk with its index and CRL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from broker.errors import InvalidRequest
from broker.identity import Role, SpiffeId
from broker.protocol.certificates import (
    MAX_LIFETIME_DAYS,
    ROLE_EXTENDED_KEY_USAGE,
    CertificateProfileError,
    verify_leaf_profile,
)

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_LIFETIME_DAYS",
    "MAX_LIFETIME_DAYS",
    "CertificateAuthority",
    "create_intermediate_ca",
    "create_root_ca",
    "generate_identity_key",
    "issue_certificate",
]

# Certificates are back-dated a little so a peer whose clock runs slightly behind accepts them.
CLOCK_SKEW = timedelta(minutes=5)
ROOT_LIFETIME = timedelta(days=3650)
INTERMEDIATE_LIFETIME = timedelta(days=1825)
DEFAULT_LIFETIME_DAYS: Mapping[Role, int] = {
    Role.AGENCY: 90,
    Role.AUDITOR: 90,
    Role.ADMIN: 90,
    Role.BROKER: 90,
    Role.WITNESS: 90,
}


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA that can sign: its certificate, its private key and the chain up to the trust root."""

    trust_domain: str
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    # Certificates a leaf must present after itself: this CA's certificate and any others below
    # the root, issuing CA first; empty when the root signs leaves directly.
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def is_root(self) -> bool:
        """Whether this CA is the trust root itself (then leaves carry no chain)."""
        return not self.chain


def generate_identity_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key, the type of every identity and CA key of the deployment."""
    return ec.generate_private_key(ec.SECP256R1())


def _ca_name(trust_domain: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    *,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_public_key: ec.EllipticCurvePublicKey,
    lifetime: timedelta,
    path_length: int | None,
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False)
    )


def create_root_ca(
    trust_domain: str,
    *,
    common_name: str | None = None,
    lifetime: timedelta = ROOT_LIFETIME,
    private_key: ec.EllipticCurvePrivateKey | None = None,
) -> CertificateAuthority:
    """A new self-signed root CA for `trust_domain` (also how tests make an unrelated CA)."""
    key = private_key or generate_identity_key()
    name = _ca_name(trust_domain, common_name or f"{trust_domain} root CA")
    cert = _ca_builder(
        name,
        issuer=name,
        public_key=key.public_key(),
        issuer_public_key=key.public_key(),
        lifetime=lifetime,
        path_length=None,
    ).sign(key, hashes.SHA256())
    return CertificateAuthority(trust_domain=trust_domain, certificate=cert, private_key=key, root=cert)


def create_intermediate_ca(
    root: CertificateAuthority,
    *,
    common_name: str | None = None,
    lifetime: timedelta = INTERMEDIATE_LIFETIME,
) -> CertificateAuthority:
    """An intermediate CA signed by `root`, so the root key can stay offline."""
    key = generate_identity_key()
    name = _ca_name(root.trust_domain, common_name or f"{root.trust_domain} issuing CA")
    cert = _ca_builder(
        name,
        issuer=root.certificate.subject,
        public_key=key.public_key(),
        issuer_public_key=root.private_key.public_key(),
        lifetime=lifetime,
        path_length=0,
    ).sign(root.private_key, hashes.SHA256())
    return CertificateAuthority(
        trust_domain=root.trust_domain,
        certificate=cert,
        private_key=key,
        root=root.root,
        chain=(cert, *root.chain),
    )


def leaf_subject(spiffe_id: SpiffeId) -> x509.Name:
    """The subject name of a leaf: informative only; the identity is the URI SAN."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, spiffe_id.trust_domain),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, spiffe_id.role.value),
            x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id.name),
        ]
    )


def subject_alt_names(
    spiffe_id: SpiffeId,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> list[x509.GeneralName]:
    """The SANs of a leaf or a CSR: the SPIFFE URI first, then DNS names and IP addresses."""
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
    names += [x509.DNSName(name) for name in dns_names]
    try:
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    except ValueError as exc:
        raise InvalidRequest(f"not an IP address: {exc}") from exc
    return names


def issue_certificate(
    issuer: CertificateAuthority,
    public_key: CertificatePublicKeyTypes,
    spiffe_id: SpiffeId,
    role: Role | None = None,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    lifetime_days: int | None = None,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    serial_number: int | None = None,
) -> x509.Certificate:
    """Sign a leaf certificate for `spiffe_id` with the key usages of `role` (default: the id's role).

    This is the mechanism, without policy: it accepts any validity window within the profile's
    maximum lifetime (tests make expired certificates with it), and checks the result against the
    leaf profile. Issuance for real callers goes through `broker.pki.issuance`, which
    bounds the lifetime and checks the request.
    """
    profile = role or spiffe_id.role
    if spiffe_id.trust_domain != issuer.trust_domain:
        raise InvalidRequest(f"identity {spiffe_id} is outside the CA's trust domain {issuer.trust_domain!r}")
    start = not_before or datetime.now(UTC) - CLOCK_SKEW
    if not_after is None:
        days = lifetime_days if lifetime_days is not None else DEFAULT_LIFETIME_DAYS[profile]
        not_after = start + CLOCK_SKEW + timedelta(days=days)
    if not_after <= start:
        raise InvalidRequest("certificate would expire before it becomes valid")
    names = subject_alt_names(spiffe_id, dns_names, ip_addresses)
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf_subject(spiffe_id))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial_number or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # digitalSignature only: TLS 1.3 with ECDSA signs the handshake and never encrypts to
            # the key; the SPIFFE X509-SVID profile forbids keyCertSign and cRLSign on leaves.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(sorted(ROLE_EXTENDED_KEY_USAGE[profile], key=lambda oid: oid.dotted_string)),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),
            critical=False,
        )
    )
    cert = builder.sign(issuer.private_key, hashes.SHA256())
    # The one profile every relying party checks (broker.protocol.certificates): never hand out a
    # certificate that the broker or an SDK would then refuse.
    try:
        verify_leaf_profile(cert, issuer.trust_domain)
    except CertificateProfileError as exc:
        raise InvalidRequest(f"refusing to issue a certificate outside the profile: {exc}") from exc
    return cert
