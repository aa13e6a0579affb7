"""Reading identities and names out of certificates: SPIFFE id, fingerprint, serial."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from broker.errors import AuthenticationError, InvalidRequest
from broker.identity import SpiffeId, parse_spiffe_id

__all__ = ["certificate_identity", "fingerprint_sha256", "parse_serial", "serial_hex"]


def certificate_identity(cert: x509.Certificate, trust_domain: str) -> SpiffeId:
    """The SPIFFE id of `cert`; raise `AuthenticationError` unless it has exactly one URI SAN of ours.

    The X509-SVID rules allow exactly one URI SAN: with two, which one names the caller would be
    ambiguous, so such a certificate identifies nobody.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise AuthenticationError("certificate has no subject alternative name (no SPIFFE id)") from exc
    except ValueError as exc:  # a malformed extension surfaces only when parsed
        raise AuthenticationError(f"certificate extensions do not parse: {exc}") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise AuthenticationError(f"certificate must carry exactly one URI SAN (its SPIFFE id), found {len(uris)}")
    return parse_spiffe_id(uris[0], trust_domain)


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
