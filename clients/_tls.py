"""Client-side TLS checks. A failed handshake reaches a gRPC client only as UNAVAILABLE, so the
SDK checks its own material before connecting and, after a failure, repeats the handshake with
Python's `ssl` module to name the cause (DESIGN.md section 2)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from broker.identity import Role, SpiffeId
from broker.protocol.certificates import verify_leaf_profile
from broker.protocol.errors import VerificationError
from clients.errors import CertificateProblem, ConnectionFailed


@dataclass(frozen=True)
class Identity:
    """Our certificate (with its chain), private key and the CA trust bundle, checked."""

    spiffe_id: SpiffeId
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    private_key: ec.EllipticCurvePrivateKey
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    trust_roots: tuple[x509.Certificate, ...]


def load_identity(cert: Path, key: Path, ca: Path, trust_domain: str, role: Role) -> Identity:
    """Load and check our own material: chain to the CA, validity, role, key pair match."""
    try:
        cert_pem, key_pem, ca_pem = cert.read_bytes(), key.read_bytes(), ca.read_bytes()
    except OSError as exc:
        raise CertificateProblem(f"cannot read TLS material: {exc}") from exc
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
        roots = x509.load_pem_x509_certificates(ca_pem)
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise CertificateProblem(f"TLS material does not parse ({cert}, {key}, {ca}): {exc}") from exc
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise CertificateProblem(f"{key} is not an ECDSA key")
    leaf = certs[0]
    if leaf.public_key() != private_key.public_key():
        raise CertificateProblem(f"{key} is not the private key of {cert}")
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise CertificateProblem(
            f"our certificate {cert} expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            "ask the admin to renew it"
        )
    if leaf.not_valid_before_utc > now:
        raise CertificateProblem(f"our certificate {cert} is not valid before {leaf.not_valid_before_utc} UTC")
    # The same profile the broker enforces per call: find out here, with a message, rather than
    # from a refusal (or, for a CA:TRUE leaf, a broker that would wrongly accept it).
    try:
        spiffe = verify_leaf_profile(leaf, trust_domain)
    except VerificationError as exc:
        raise CertificateProblem(f"our certificate {cert} is outside the certificate profile: {exc}") from exc
    if spiffe.role is not role:
        raise CertificateProblem(
            f"our certificate {cert} is for a {spiffe.role.value} ({spiffe}), "
            f"this client needs a {role.value} certificate"
        )
    verifier = verification.PolicyBuilder().store(verification.Store(roots)).time(now).build_client_verifier()
    try:
        verifier.verify(leaf, certs[1:])
    except verification.VerificationError as exc:
        raise CertificateProblem(f"our certificate {cert} does not chain to the CA in {ca}: {exc}") from exc
    return Identity(spiffe, leaf, tuple(certs[1:]), private_key, cert_pem, key_pem, ca_pem, tuple(roots))


def diagnose_handshake(target: str, identity: Identity, server_name: str | None = None) -> ConnectionFailed:
    """Repeat the TLS handshake with `ssl` to turn a bare UNAVAILABLE into a named cause."""
    host, _, port = target.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=identity.ca_pem.decode())
    context.check_hostname = True
    context.set_alpn_protocols(["h2"])
    # The ssl module loads client certificates from files only.
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_file.write_bytes(identity.cert_pem)
        key_file.touch(0o600)
        key_file.write_bytes(identity.key_pem)
        context.load_cert_chain(cert_file, key_file)
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname=server_name or host) as tls,
        ):
            # In TLS 1.3 the server judges our certificate after the client's handshake is done;
            # gRPC then closes the connection without an alert, so an empty read is the refusal.
            tls.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            answer = tls.read(9)
    except ConnectionRefusedError:
        return ConnectionFailed(f"nothing listens on {target} (connection refused): is the broker running?")
    except ssl.SSLCertVerificationError as exc:
        return ConnectionFailed(
            f"the broker's certificate at {target} is not trusted: {exc.verify_message}; "
            "check that the CA bundle is this deployment's"
        )
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        hint = {
            "TLSV1_ALERT_UNKNOWN_CA": "the broker does not trust our certificate's CA (certificate from another CA?)",
            "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the broker says our certificate has expired",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the broker requires a client certificate",
            "SSLV3_ALERT_BAD_CERTIFICATE": "the broker refused our certificate",
            "SSLV3_ALERT_CERTIFICATE_REVOKED": "our certificate has been revoked",
        }.get(reason, "")
        return ConnectionFailed(f"TLS handshake with {target} failed: {reason}" + (f": {hint}" if hint else ""))
    except OSError as exc:
        return ConnectionFailed(f"cannot reach the broker at {target}: {exc}")
    if not answer:
        return ConnectionFailed(
            f"the broker at {target} closed the connection after seeing our certificate: it does not accept it "
            "(issued by another CA, expired, or not a client certificate); the broker's log names the reason"
        )
    return ConnectionFailed(f"the broker at {target} is unavailable, though a TLS handshake succeeds; retry later")
