"""The certificates of the agencies that call this broker, kept so each is parsed and stored once.

A sender's certificate is parsed once for every envelope, receipt and consent it signs, stored once
in `peer_certificates` (a delivery and a receipt reference it by fingerprint), and handed to the
recipients of its deliveries without a query.
"""

from __future__ import annotations

from cryptography import x509

from broker.identity import Principal


class PeerCertificates:
    """Callers' certificates by SHA-256 fingerprint: parsed, as DER, and whether already stored."""

    def __init__(self) -> None:
        self._parsed: dict[bytes, x509.Certificate] = {}
        self._der: dict[bytes, bytes] = {}
        # Fingerprints known to be in `peer_certificates`; the writer's operations add to it on commit.
        self.stored: set[bytes] = set()

    def of(self, caller: Principal) -> x509.Certificate:
        """The caller's certificate, parsed (once per certificate)."""
        cert = self._parsed.get(caller.fingerprint)
        if cert is None:
            cert = x509.load_der_x509_certificate(caller.certificate_der)
            self._parsed[caller.fingerprint] = cert
            self._der[caller.fingerprint] = caller.certificate_der
        return cert

    def der(self, fingerprint: bytes) -> bytes | None:
        """The DER certificate of a caller seen by this broker, if it was."""
        return self._der.get(fingerprint)


__all__ = ["PeerCertificates"]
