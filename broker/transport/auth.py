"""Who is calling: the verified peer certificate of each call, never a field of the request.

gRPC has already verified the chain during the TLS handshake. Per call we add what grpcio's Python
API cannot: the revocation check (DESIGN.md section 2), the expiry of long-lived connections, the
certificate profile (`broker.protocol.certificates`: TLS accepts a CA:TRUE leaf or one without an
extended key usage; we do not), and the SPIFFE identity and role from the single URI SAN.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.errors import AuthenticationError, PermissionDenied
from broker.identity import Principal, Role
from broker.pki.inspect import serial_hex
from broker.protocol.certificates import CertificateProfileError, verify_leaf_profile
from broker.transport.rpc import Context, first_peer_value

_CACHE_LIMIT = 4096


class RevocationChecker(Protocol):
    """Answers whether a certificate serial has been revoked (see `broker.pki`)."""

    def is_revoked(self, serial: int) -> bool: ...


class Authenticator:
    """Turns a call's TLS peer into a `Principal`, checking revocation and expiry every time."""

    def __init__(self, trust_domain: str, revocations: RevocationChecker) -> None:
        self._trust_domain = trust_domain
        self._revocations = revocations
        self._cache: dict[bytes, Principal | AuthenticationError] = {}
        self._serials: dict[bytes, int] = {}

    def authenticate(self, context: Context) -> Principal:
        """The verified caller of this call; raise `AuthenticationError` if it may not call at all."""
        pem = first_peer_value(context, "x509_pem_cert")
        if not pem:
            raise AuthenticationError("no client certificate on this connection")
        principal = self._principal(pem)
        structlog.contextvars.bind_contextvars(caller=str(principal.spiffe_id))
        if self._revocations.is_revoked(principal.serial):
            raise AuthenticationError(
                f"certificate {serial_hex(principal.serial)} of {principal.spiffe_id} has been revoked"
            )
        if principal.not_after <= dt.datetime.now(dt.UTC):
            raise AuthenticationError(
                f"certificate of {principal.spiffe_id} expired at {principal.not_after.isoformat()}"
            )
        return principal

    def is_revoked_der(self, certificate_der: bytes) -> bool:
        """Whether the certificate (DER) has been revoked."""
        serial = self._serials.get(certificate_der)
        if serial is None:
            serial = x509.load_der_x509_certificate(certificate_der).serial_number
            if len(self._serials) >= _CACHE_LIMIT:
                self._serials.clear()
            self._serials[certificate_der] = serial
        return self._revocations.is_revoked(serial)

    def require(self, context: Context, *roles: Role) -> Principal:
        """Authenticate and check the caller's role."""
        principal = self.authenticate(context)
        if principal.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise PermissionDenied(f"{principal.spiffe_id} is a {principal.role.value}; only {allowed} may call this")
        return principal

    def _principal(self, pem: bytes) -> Principal:
        cached = self._cache.get(pem)
        if isinstance(cached, AuthenticationError):
            # A fresh error per call: each refusal is audited on its own.
            raise AuthenticationError(str(cached))
        if cached is not None:
            return cached
        try:
            cert = x509.load_pem_x509_certificate(pem)
            der = cert.public_bytes(Encoding.DER)
            principal: Principal | AuthenticationError = Principal(
                spiffe_id=verify_leaf_profile(cert, self._trust_domain),
                serial=cert.serial_number,
                fingerprint=hashlib.sha256(der).digest(),
                certificate_der=der,
                not_after=cert.not_valid_after_utc,
            )
        except CertificateProfileError as exc:
            principal = AuthenticationError(f"client certificate refused: {exc}")
        except ValueError as exc:
            principal = AuthenticationError(f"client certificate does not parse: {exc}")
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[pem] = principal
        if isinstance(principal, AuthenticationError):
            raise principal
        return principal
