"""Shared helpers of the vector tests: load a vector file, decode hex, check the certificate profile."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.identity import Role
from broker.protocol.certificates import verify_leaf_profile

VECTOR_DIR = Path(__file__).resolve().parents[2] / "vectors"
MAX_LEAF_LIFETIME = dt.timedelta(days=825)


def load(name: str) -> dict[str, Any]:
    """The parsed vector file `tests/vectors/<name>.json`."""
    vector: dict[str, Any] = json.loads((VECTOR_DIR / f"{name}.json").read_text())
    return vector


def unhex(value: str) -> bytes:
    """Bytes from the vectors' lowercase hex."""
    return bytes.fromhex(value)


def certificate(pem: str) -> x509.Certificate:
    """A certificate from PEM."""
    return x509.load_pem_x509_certificate(pem.encode())


def assert_leaf_profile(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """The production profile of an agency leaf: SKI, AKI of the CA, one URI SAN, clientAuth, bounded lifetime."""
    verify_leaf_profile(cert, "vectors.isb", role=Role.AGENCY)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(san.get_values_for_type(x509.UniformResourceIdentifier)) == 1
    assert len(list(san)) == 1
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= MAX_LEAF_LIFETIME
