"""The development PKI: one CA and every identity a local demo needs, made idempotently.

Dev only: all keys are generated in one place (DESIGN.md section 2 allows this for demos); in a
deployment, agencies generate their own keys and send a CSR (`broker.pki.csr`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.errors import ConfigurationError
from broker.identity import DEFAULT_TRUST_DOMAIN, Role, SpiffeId, make_spiffe_id
from broker.pki import _files
from broker.pki.authority import CertificateAuthority, generate_identity_key, issue_certificate
from broker.pki.crl import CRL_VALIDITY
from broker.pki.store import CaDirectory, publish_crl_locked

__all__ = ["DEV_AGENCIES", "DEV_LIFETIME_DAYS", "DevAgency", "DevPki", "ensure_dev_pki"]

log = structlog.get_logger(__name__)

# Longer than the 90-day production default so a developer's checkout keeps working for a year;
# an expired dev certificate is simply re-issued by the next `ensure_dev_pki`.
DEV_LIFETIME_DAYS = 365


@dataclass(frozen=True, slots=True)
class DevAgency:
    """A sample agency of the dev directory (agencies.json)."""

    agency: str
    display_name: str
    country: str
    contact: str


DEV_AGENCIES: tuple[DevAgency, ...] = (
    DevAgency("FR-CUSTOMS", "French Customs (DGDDI)", "FR", "ops@customs.fr.example"),
    DevAgency("DE-BKA", "Bundeskriminalamt", "DE", "lagezentrum@bka.de.example"),
    DevAgency(
        "NL-FIOD",
        "Dutch Fiscal Intelligence and Investigation Service (FIOD)",
        "NL",
        "intake@fiod.nl.example",
    ),
)


@dataclass(frozen=True, slots=True)
class DevPki:
    """Paths of the dev PKI files under `directory`."""

    directory: Path
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    agency_ids: tuple[str, ...] = tuple(agency.agency for agency in DEV_AGENCIES)
    broker_node: str = "node-1"
    auditor_name: str = "audit-1"
    admin_name: str = "admin-1"

    @property
    def ca_cert(self) -> Path:
        """The trust anchor (root CA certificate)."""
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA key (it signs leaves and the CRL directly in dev)."""
        return self.directory / "ca.key"

    @property
    def ca_directory(self) -> CaDirectory:
        """The dev CA as a `CaDirectory`, for issuing, revoking and listing."""
        return CaDirectory(self.directory, self.trust_domain)

    @property
    def broker_cert(self) -> Path:
        """The broker's server certificate."""
        return self.directory / "broker.crt"

    @property
    def broker_key(self) -> Path:
        """The broker's server key."""
        return self.directory / "broker.key"

    @property
    def audit_key(self) -> Path:
        """The Ed25519 key that signs audit checkpoints (PKCS#8 PEM)."""
        return self.directory / "audit.key"

    @property
    def audit_pub(self) -> Path:
        """The public half of `audit_key` (SubjectPublicKeyInfo PEM)."""
        return self.directory / "audit.pub"

    @property
    def crl(self) -> Path:
        """The CRL signed by the CA."""
        return self.directory / "crl.pem"

    @property
    def agencies_json(self) -> Path:
        """The sample agency registry entries."""
        return self.directory / "agencies.json"

    @property
    def auditor(self) -> tuple[Path, Path]:
        """(certificate, key) of the auditor."""
        return self.directory / "auditor.crt", self.directory / "auditor.key"

    @property
    def admin(self) -> tuple[Path, Path]:
        """(certificate, key) of the admin."""
        return self.directory / "admin.crt", self.directory / "admin.key"

    def agency(self, agency_id: str) -> tuple[Path, Path]:
        """(certificate, key) of a sample agency."""
        if agency_id not in self.agency_ids:
            raise KeyError(f"{agency_id} is not a dev agency (one of {', '.join(self.agency_ids)})")
        return self.directory / f"{agency_id}.crt", self.directory / f"{agency_id}.key"

    def spiffe_id(self, role: Role, name: str) -> SpiffeId:
        """A SPIFFE id in the dev trust domain."""
        return make_spiffe_id(self.trust_domain, role, name)


def ensure_dev_pki(directory: Path, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> DevPki:
    """Create whatever of the dev PKI is missing under `directory`; leave every valid file untouched.

    A leaf is (re-)issued only when its certificate or key is missing, it has expired, or it was
    not issued by the current CA; so a second run changes nothing.
    """
    pki = DevPki(directory, trust_domain)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = _ensure_ca(pki)
    with ca.locked():
        authority = ca.load_authority()
        broker_dns, broker_ips = ("localhost",), ("127.0.0.1",)
        leaves: list[tuple[Role, str, Path, Path]] = [
            (Role.BROKER, pki.broker_node, pki.broker_cert, pki.broker_key),
            *((Role.AGENCY, agency, *pki.agency(agency)) for agency in pki.agency_ids),
            (Role.AUDITOR, pki.auditor_name, *pki.auditor),
            (Role.ADMIN, pki.admin_name, *pki.admin),
        ]
        for role, name, cert_path, key_path in leaves:
            if _leaf_is_current(cert_path, key_path, authority):
                continue
            key = generate_identity_key()
            is_broker = role is Role.BROKER
            cert = issue_certificate(
                authority,
                key.public_key(),
                pki.spiffe_id(role, name),
                lifetime_days=DEV_LIFETIME_DAYS,
                dns_names=broker_dns if is_broker else (),
                ip_addresses=broker_ips if is_broker else (),
            )
            _files.write_private_key(key_path, key, replace=True)
            _files.write_public_file(cert_path, _files.certificate_pem(cert, *authority.chain))
            ca.record_issued(cert)
            log.info("pki.dev_issued", spiffe_id=str(pki.spiffe_id(role, name)), path=str(cert_path))
        _ensure_audit_key(pki)
        if not pki.agencies_json.exists():
            entries = [dataclasses.asdict(agency) for agency in DEV_AGENCIES]
            _files.write_public_file(pki.agencies_json, (json.dumps(entries, indent=2) + "\n").encode())
        if _crl_needs_signing(pki):
            publish_crl_locked(ca)
    return pki


def _ensure_ca(pki: DevPki) -> CaDirectory:
    files = (pki.directory / "ca.json", pki.ca_cert, pki.ca_key)
    if not any(p.exists() for p in files):
        try:
            ca = CaDirectory.init(pki.directory, pki.trust_domain)
        except ConfigurationError:
            # Another process (a parallel test worker, `make run`) created it a moment ago: use theirs.
            if not all(p.exists() for p in files):
                raise
        else:
            log.info("pki.dev_ca_created", directory=str(pki.directory))
            return ca
    if not all(p.exists() for p in files):
        raise ConfigurationError(
            f"{pki.directory} holds an incomplete CA (need ca.json, ca.crt and ca.key): delete it to start over"
        )
    ca = CaDirectory.open(pki.directory)
    if ca.trust_domain != pki.trust_domain:
        raise ConfigurationError(
            f"{pki.directory} is a CA for trust domain {ca.trust_domain!r}, not {pki.trust_domain!r}"
        )
    return ca


def _leaf_is_current(cert_path: Path, key_path: Path, authority: CertificateAuthority) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = _files.load_certificate(cert_path)
        cert.verify_directly_issued_by(authority.certificate)
        key = _files.load_private_key(key_path)
    except (ConfigurationError, ValueError, TypeError, InvalidSignature):
        return False
    # A key that does not match its certificate would only fail later, in a TLS handshake.
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return False
    # A day of margin so a test run started just before expiry does not fail half-way.
    return cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)


def _crl_needs_signing(pki: DevPki) -> bool:
    # SDKs refuse a CRL past its nextUpdate: a checkout left for a week must not fail closed on the
    # next `make run`, so the dev CRL is re-signed once half its validity has passed.
    if not pki.crl.exists():
        return True
    try:
        crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    except ValueError:
        return True
    next_update = crl.next_update_utc
    return next_update is None or next_update - datetime.now(UTC) < CRL_VALIDITY / 2


def _ensure_audit_key(pki: DevPki) -> None:
    if pki.audit_key.exists():
        if pki.audit_pub.exists():
            return
        key = _files.load_private_key(pki.audit_key)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigurationError(f"{pki.audit_key} is not an Ed25519 private key")
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        _files.write_private_key(pki.audit_key, key)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _files.write_public_file(pki.audit_pub, public)
