"""The broker's trust roots: the deployment's CA bundle, and the CA that signs its CRL.

The bundle is re-read when its file changes, so a CA rotates without a restart, like the TLS
credentials (`broker.transport.credentials`).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.errors import ConfigurationError
from broker.pki.store import CaDirectory


class TrustRoots:
    """The CA certificates of `bundle` (re-read when the file changes) and the issuer of the CRL."""

    def __init__(self, bundle: Path, ca_dir: Path) -> None:
        self._bundle = bundle
        self._ca_dir = ca_dir
        self._stamp = (-1, -1)
        self._roots: list[x509.Certificate] = []

    def __call__(self) -> list[x509.Certificate]:
        """The CA bundle, re-read when its file changes (one stat per call)."""
        stat = self._bundle.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._roots = x509.load_pem_x509_certificates(self._bundle.read_bytes())
            self._stamp = stamp
        return self._roots

    def crl_issuer(self) -> x509.Certificate:
        """The CA that signs the CRL: the one that issues leaves, the intermediate if there is one."""
        try:
            issuing = CaDirectory.open(self._ca_dir).issuing_cert_path
        except ConfigurationError:
            return self()[0]
        return x509.load_pem_x509_certificate(issuing.read_bytes())

    def crl_chain(self) -> list[bytes]:
        """The DER certificates a CRL's reader needs besides the roots: its issuer, if not a root."""
        issuer = self.crl_issuer()
        return [] if issuer in self() else [issuer.public_bytes(serialization.Encoding.DER)]


__all__ = ["TrustRoots"]
