"""The broker's trust roots: the CA bundle re-read when its file changes, and the CRL's issuer."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.pki.store import CaDirectory
from broker.pki.trust import TrustRoots


def _root(ca: CaDirectory) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.root_cert_path.read_bytes())


def test_bundle_is_reread_when_its_file_changes(ca: CaDirectory, tmp_path: Path) -> None:
    """A rotated bundle (a second CA appended) is served on the next call, without a restart."""
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(ca.root_cert_path.read_bytes())
    trust = TrustRoots(bundle, ca.path)
    assert trust() == [_root(ca)]
    other = CaDirectory.init(tmp_path / "other", "isb.test")
    bundle.write_bytes(ca.root_cert_path.read_bytes() + other.root_cert_path.read_bytes())
    stat = bundle.stat()
    os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a distinct stamp
    assert trust() == [_root(ca), _root(other)]


def test_crl_of_a_root_signed_ca_needs_no_chain(ca: CaDirectory) -> None:
    """When the root signs the CRL, a reader needs nothing besides its roots."""
    trust = TrustRoots(ca.root_cert_path, ca.path)
    assert trust.crl_issuer() == _root(ca)
    assert trust.crl_chain() == []


def test_crl_of_an_intermediate_ca_comes_with_the_intermediate(intermediate_ca: CaDirectory) -> None:
    """When an intermediate signs the CRL, its certificate (DER) is the chain handed out with it."""
    trust = TrustRoots(intermediate_ca.root_cert_path, intermediate_ca.path)
    issuer = x509.load_pem_x509_certificate(intermediate_ca.intermediate_cert_path.read_bytes())
    assert trust.crl_issuer() == issuer
    assert trust.crl_chain() == [issuer.public_bytes(serialization.Encoding.DER)]


def test_without_a_ca_directory_the_first_root_signs_the_crl(ca: CaDirectory, tmp_path: Path) -> None:
    """A broker that holds only the bundle (no CA directory) takes the CRL to be the root's."""
    trust = TrustRoots(ca.root_cert_path, tmp_path / "no-ca-here")
    assert trust.crl_issuer() == _root(ca)
