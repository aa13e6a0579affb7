"""A throwaway CA and agency identities for the protocol tests, from the tests' one certificate builder
(tests/certificate_builder.py, `cryptography.x509` only: the protocol tests must not depend on the
broker's PKI code). Imported by `conftest.py` and by the tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.api.v1 import envelope_pb2
from broker.protocol.keys import X25519_SUITE, EncryptionKey, KeySuite, make_key_bundle, verify_key_bundle
from tests.certificate_builder import ThrowawayCa, leaf, root_ca

TRUST_DOMAIN = "test.isb"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def make_ca(common_name: str = "ISB Test CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-256 root (tests/certificate_builder.py) valid from 30 days ago for ten years."""
    ca = root_ca(common_name, not_before=NOW - 30 * DAY, not_after=NOW + 3650 * DAY)
    return ca.private_key, ca.certificate


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
    subject_key: ec.EllipticCurvePrivateKey,
    uris: Sequence[str],
    *,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 365 * DAY,
    eku: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
) -> x509.Certificate:
    """An end-entity certificate with the given SPIFFE URI SANs, as the broker's PKI issues them."""
    certificate, _ = leaf(
        ThrowawayCa(ca_key, ca_certificate),
        [x509.UniformResourceIdentifier(uri) for uri in uris],
        key=subject_key,
        common_name=uris[0].rsplit("/", 1)[-1] if uris else "no-uri",
        extended_usage=eku,
        not_before=not_before,
        not_after=not_after,
    )
    return certificate


def spiffe(agency: str) -> str:
    """The SPIFFE id of an agency in the test trust domain."""
    return f"spiffe://{TRUST_DOMAIN}/agency/{agency}"


@dataclass
class Agency:
    """One test agency: identity key and certificate, current encryption key and its verified bundle."""

    name: str
    identity_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    encryption_key: EncryptionKey
    signed_bundle: envelope_pb2.SignedKeyBundle
    bundle: envelope_pb2.KeyBundle

    @property
    def keys(self) -> dict[str, EncryptionKey]:
        """The agency's private keys by key id, as `open_envelope` takes them."""
        return {self.encryption_key.key_id: self.encryption_key}


@dataclass
class Pki:
    """The test CA and a cache of agencies, built once per session (key generation is not free)."""

    ca_key: ec.EllipticCurvePrivateKey
    ca_certificate: x509.Certificate
    agencies: dict[tuple[str, int], Agency] = field(default_factory=dict)

    def agency(self, name: str, suite: KeySuite = X25519_SUITE) -> Agency:
        """The agency `name` with an encryption key of `suite` (one identity per name and suite)."""
        if (name, suite) not in self.agencies:
            identity_key = ec.generate_private_key(ec.SECP256R1())
            certificate = issue_certificate(self.ca_key, self.ca_certificate, identity_key, [spiffe(name)])
            encryption_key = EncryptionKey.generate(suite)
            signed = make_key_bundle(
                name,
                encryption_key,
                identity_key=identity_key,
                certificate=certificate,
                not_before=NOW - DAY,
                not_after=NOW + 30 * DAY,
            )
            bundle = self.verify(signed, name)
            self.agencies[name, suite] = Agency(name, identity_key, certificate, encryption_key, signed, bundle)
        return self.agencies[name, suite]

    def verify(
        self, signed: envelope_pb2.SignedKeyBundle, agency: str, now: dt.datetime = NOW
    ) -> envelope_pb2.KeyBundle:
        """Verify a bundle against this CA, as a sender does."""
        return verify_key_bundle(
            signed,
            trust_roots=[self.ca_certificate],
            expected_agency=agency,
            trust_domain=TRUST_DOMAIN,
            now=now,
        )
