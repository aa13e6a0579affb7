"""The one certificate builder of the tests: throwaway roots and leaves, inside and outside the profile.

`root_ca(...)` is a self-signed P-256 root; `leaf(...)` builds what `broker.pki.authority.issue_certificate`
builds, with every extension overridable: pass `None` to leave one out, or another value to break one
rule of the profile. Built with `cryptography.x509` only, so the protocol tests that use it do not
depend on the broker's PKI code; an issuer is anything with a `certificate` and a `private_key`
(a `broker.pki.authority.CertificateAuthority` is one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DEFAULT: Any = object()


class Issuer(Protocol):
    """What signs a leaf: a CA certificate and its key."""

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey: ...


@dataclass(frozen=True)
class ThrowawayCa:
    """A throwaway root: its key and self-signed certificate."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def root_ca(common_name: str = "ISB Test CA", *, not_before: dt.datetime, not_after: dt.datetime) -> ThrowawayCa:
    """A self-signed P-256 root with the extensions the Web PKI profile requires of a CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=False, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ThrowawayCa(key, certificate)


def key_usage(*, digital_signature: bool = True, cert_sign: bool = False) -> x509.KeyUsage:
    """A keyUsage value: digitalSignature by default, keyCertSign/cRLSign with `cert_sign`."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def leaf(
    issuer: Issuer,
    names: Sequence[x509.GeneralName],
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    common_name: str = "test leaf",
    basic_constraints: x509.BasicConstraints | None = _DEFAULT,
    usage: x509.KeyUsage | None = _DEFAULT,
    usage_critical: bool = True,
    extended_usage: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    authority_key_id: bool = True,
    lifetime: dt.timedelta = dt.timedelta(days=30),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf signed by `issuer` with the SANs `names`; the defaults are within the profile.

    Valid from `not_before` (default: five minutes ago) to `not_after` (default: `lifetime` later).
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + lifetime)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    constraints = (
        x509.BasicConstraints(ca=False, path_length=None) if basic_constraints is _DEFAULT else basic_constraints
    )
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    chosen_usage = key_usage() if usage is _DEFAULT else usage
    if chosen_usage is not None:
        builder = builder.add_extension(chosen_usage, critical=usage_critical)
    if extended_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_usage)), critical=False)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if authority_key_id:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()), critical=False
        )
    return builder.sign(issuer.private_key, hashes.SHA256()), key


def uri(value: str) -> x509.UniformResourceIdentifier:
    """A URI SAN."""
    return x509.UniformResourceIdentifier(value)
