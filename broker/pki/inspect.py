"""Reading identities and names out of certificates: SPIFFE id, fingerprint, serial."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from broker.errors import AuthenticationError, InvalidRequest
from broker.identity import SpiffeId
from broker.protocol.certificates import CertificateProfileError, spiffe_id_of

__all__ = ["certificate_identity", "fingerprint_sha256", "parse_serial", "serial_hex"]


def certificate_identity(cert: x509.Certificate, trust_domain: str) -> SpiffeId:
    """The SPIFFE id of `cert` (`broker.protocol.certificates.spiffe_id_of`) as the caller's identity.

    Raise `AuthenticationError` unless it has exactly one URI SAN, a SPIFFE id of `trust_domain`.
    """
    try:
        return spiffe_id_of(cert, trust_domain)
    except CertificateProfileError as exc:
        raise AuthenticationError(str(exc)) from exc


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the certificate's DER encoding (as `openssl x509 -fingerprint -sha256`)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def serial_hex(serial: int | x509.Certificate) -> str:
    """A serial number as lower-case hex of even length (openssl prints the same digits, upper case)."""
    number = serial.serial_number if isinstance(serial, x509.Certificate) else serial
    text = f"{number:x}"
    return text if len(text) % 2 == 0 else "0" + text


def parse_serial(text: str) -> int:
    """Parse a serial typed by a person: hex, any case, optional `0x` prefix or `:` separators."""
    cleaned = text.strip().lower().replace(":", "")
    cleaned = cleaned.removeprefix("0x")
    try:
        number = int(cleaned, 16)
    except ValueError as exc:
        raise InvalidRequest(f"{text!r} is not a hexadecimal certificate serial number") from exc
    if number <= 0:
        raise InvalidRequest(f"{text!r} is not a valid certificate serial number (must be positive)")
    return number
